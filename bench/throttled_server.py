"""A loopback static file server that sends each response at RATE bytes/s
(per connection), like a remote Portal on a slow link; or, with --total,
at RATE bytes/s shared by every connection (a rate-shaping proxy). It
serves `Range: bytes=A-B` / `bytes=A-` with a strong ETag, `If-Range` and
`Accept-Ranges: bytes`, so a client may fetch ranges in parallel;
--latency-ms delays every answer (a distant server).

    python3 bench/throttled_server.py PORT DIRECTORY RATE [--total] [--latency-ms N]
"""
import http.server
import os
import sys
import threading
import time

PORT, DIRECTORY, RATE = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
TOTAL = "--total" in sys.argv
LATENCY = 0.0
if "--latency-ms" in sys.argv:
    LATENCY = int(sys.argv[sys.argv.index("--latency-ms") + 1]) / 1000
CHUNK = 64 * 1024

# --total: the time the shared link is busy until.
_lock = threading.Lock()
_busy_until = [0.0]


def pace(sent, started, length):
    """Sleeps so that this connection (or, with --total, all of them) stays
    at RATE."""
    if TOTAL:
        with _lock:
            now = time.monotonic()
            start = max(now, _busy_until[0])
            _busy_until[0] = start + length / RATE
            until = _busy_until[0]
        ahead = until - time.monotonic()
    else:
        ahead = sent / RATE - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        path = os.path.join(DIRECTORY, os.path.basename(self.path))
        if not os.path.isfile(path):
            self.send_error(404)
            return
        stat = os.stat(path)
        size = stat.st_size
        etag = f'"{size:x}-{int(stat.st_mtime_ns):x}"'
        start, end = 0, size - 1
        partial = False
        asked = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if asked.startswith("bytes=") and (if_range is None or if_range == etag):
            a, _, b = asked[6:].partition("-")
            if a.isdigit():
                start = int(a)
                end = min(int(b), size - 1) if b.isdigit() else size - 1
                partial = start <= end
        if LATENCY:
            time.sleep(LATENCY)
        self.send_response(206 if partial else 200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Content-Type", "application/zip")
        self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        started = time.monotonic()
        sent = 0
        try:
            with open(path, "rb") as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
                    sent += len(chunk)
                    pace(sent, started, len(chunk))
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


Server(("127.0.0.1", PORT), Handler).serve_forever()
