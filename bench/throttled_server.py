"""A loopback static file server that sends each response at RATE bytes/s
(per connection), like a remote Portal on a slow link.

    python3 bench/throttled_server.py PORT DIRECTORY RATE
"""
import http.server
import os
import sys
import time

PORT, DIRECTORY, RATE = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
CHUNK = 64 * 1024


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path = os.path.join(DIRECTORY, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        started = time.monotonic()
        sent = 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                self.wfile.write(chunk)
                sent += len(chunk)
                ahead = sent / RATE - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
