#!/usr/bin/env python3
"""Run a command; print one JSON line with its wall seconds, CPU seconds
(user + system, the command and its children) and peak RSS in MB.

    measure.py LABEL ROWS -- command args...
"""
import json
import resource
import subprocess
import sys
import time

label, rows = sys.argv[1], int(sys.argv[2])
command = sys.argv[sys.argv.index("--") + 1:]
started = time.monotonic()
completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.monotonic() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
result = {
    "label": label,
    "rows": rows,
    "ok": completed.returncode == 0,
    "wall_s": round(wall, 3),
    "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
    "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    "rows_per_s": round(rows / wall) if wall > 0 else 0,
}
if completed.returncode != 0:
    result["error"] = completed.stderr.decode(errors="replace").strip().splitlines()[-3:]
print(json.dumps(result), flush=True)
