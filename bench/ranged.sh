#!/usr/bin/env bash
# Parallel ranged downloads: wall time and peak RSS of `carga run` with 1,
# 2, 4 and 8 connections (http.download_connections), alternating, against
# loopback servers that shape the rate like the network does.
#
#   bench/ranged.sh [ROWS] [ROUNDS] [RATE]   (defaults 2000000, 3, 4000000)
#
# 1. per connection: each connection capped at RATE bytes/s (a distant CDN)
#    with 20 ms of latency per request; 1, 2, 4 and 8 connections;
# 2. total: RATE bytes/s shared by every connection (a shaping proxy); 1
#    and 4 connections (parallel must be no slower);
# 3. fast loopback: no cap (CPU-bound); 1 and 4 connections.
# Every run publishes the same generated month (--force); the script checks
# that every run stored the file's own SHA-256 and the same national
# totals. Prints medians and the ratios to one connection; raw JSON lines
# go to bench/results/. Needs PostgreSQL on 127.0.0.1:5432 (trust) or
# BENCH_ADMIN_URL, python3, a release build (made here).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-2000000}
ROUNDS=${2:-3}
RATE=${3:-4000000}
PERIOD=2024-10
WORK=bench/work/ranged
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB=carga_ranged
DB_URL=${ADMIN_URL%/*}/$DB
KEY=bench-key-not-secret-0123456789abcdef
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/$STAMP-ranged-$ROWS.jsonl
mkdir -p "$WORK" bench/results
export CARGA__LOAD__JOBS_DIR=$WORK/no-jobs-dir

cargo build --release --locked -q
BIN=target/release/carga
ZIP=$WORK/${ROWS}_NovoBolsaFamilia.zip
[ -s "$ZIP" ] || "$BIN" sample --rows "$ROWS" --period $PERIOD --zip "$ZIP" >&2
SHA=$(sha256sum "$ZIP" | cut -d' ' -f1)
echo "== $(du -h "$ZIP" | cut -f1) month, sha256 $SHA" >&2

psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DATABASE_URL=$DB_URL "$BIN" migrate >/dev/null
DATABASE_URL=$DB_URL "$BIN" run municipios >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SERVERS=()
trap 'kill ${SERVERS[*]:-} 2>/dev/null || true' EXIT
serve() { # name args...: starts a server, prints its URL
  local port
  port=$(free_port)
  python3 bench/throttled_server.py "$port" "$WORK" "$@" >/dev/null 2>&1 &
  SERVERS+=($!)
  for _ in $(seq 1 50); do curl -sf -r 0-0 -o /dev/null "http://127.0.0.1:$port/$(basename "$ZIP")" && break; sleep 0.1; done
  echo "http://127.0.0.1:$port/$(basename "$ZIP")"
}
PER_CONNECTION=$(serve "$RATE" --latency-ms 20)
TOTAL=$(serve "$RATE" --total --latency-ms 20)
FAST=$(serve 100000000000)

run() { # case url connections
  psql "$DB_URL" -q -c CHECKPOINT
  python3 bench/measure.py "$1/$3" "$ROWS" -- env DATABASE_URL="$DB_URL" CARGA_NIS_KEY=$KEY RUST_LOG=warn \
    CARGA__HTTP__DOWNLOAD_CONNECTIONS="$3" \
    "$BIN" run novo-bolsa-familia --period $PERIOD --url "$2" --force | tee -a "$OUT"
  # The load stored the file's own bytes and the same totals as every other.
  psql "$DB_URL" -Atc "SELECT encode(l.sha256, 'hex') || ' ' || n.total_beneficiaries || ' ' || n.total_value_brl
      FROM carga.loads l, public.program_national_monthly n
      WHERE l.status = 'published' AND l.period = DATE '$PERIOD-01' AND n.reference_date = DATE '$PERIOD-01'" \
    >>"$WORK/published.txt"
}
: >"$WORK/published.txt"
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round" >&2
  # Rotate the order each round so no setting always runs first.
  set -- 1 2 4 8
  for _ in $(seq 2 "$round"); do set -- "${@:2}" "$1"; done
  for c in "$@"; do run per-connection "$PER_CONNECTION" "$c"; done
  if [ $((round % 2)) = 1 ]; then order="1 4"; else order="4 1"; fi
  for c in $order; do run total "$TOTAL" "$c"; done
  for c in $order; do run fast "$FAST" "$c"; done
done

distinct=$(sort -u "$WORK/published.txt" | wc -l)
first=$(head -n1 "$WORK/published.txt" | cut -d' ' -f1)
[ "$distinct" = 1 ] && [ "$first" = "$SHA" ] ||
  { echo "published loads differ:" >&2; sort "$WORK/published.txt" | uniq -c >&2; exit 1; }
echo "every run published the file's own SHA-256 and the same national totals" >&2

python3 - "$OUT" "$RATE" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
rate = int(sys.argv[2])
cases = {}
for r in rows:
    case, connections = r["label"].split("/")
    cases.setdefault(case, {}).setdefault(int(connections), []).append(r)
med = lambda runs, key: statistics.median(r[key] for r in runs)
titles = {"per-connection": f"each connection capped at {rate/1e6:g} MB/s, 20 ms latency",
          "total": f"{rate/1e6:g} MB/s shared by all connections, 20 ms latency",
          "fast": "fast loopback (no cap: CPU-bound)"}
for case in ("per-connection", "total", "fast"):
    runs = cases.get(case, {})
    if not runs:
        continue
    base = med(runs[1], "wall_s")
    print(f"{titles[case]} ({len(runs[1])} runs each, medians)")
    print(f"  {'conns':>5} {'wall s':>8} {'speed-up':>9} {'cpu s':>7} {'rss MB':>7}")
    for c in sorted(runs):
        w = med(runs[c], "wall_s")
        print(f"  {c:>5} {w:>8.2f} {base / w:>8.2f}x {med(runs[c], 'cpu_s'):>7.2f} {med(runs[c], 'peak_rss_mb'):>7.1f}")
PY
echo "raw: $OUT" >&2
