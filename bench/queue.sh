#!/usr/bin/env bash
# The job runner's overhead and the choice of queue.concurrency, measured.
#
#   bench/queue.sh [MONTHS] [ROWS] [ROUNDS]   (defaults 12, 300000, 2)
#   BENCH_CARGA=path BENCH_LABEL=old bench/queue.sh …   (another binary, labelled)
#
# 1. Overhead: MONTHS generated months of ROWS rows each, loaded
#    (a) inline, as back-to-back `carga run`, and (b) through the queue, as
#    MONTHS `carga enqueue` then one `carga worker --concurrency 1` until
#    all succeeded. Alternating, ROUNDS rounds each; prints the totals and
#    the ratio queue/inline (target ≤ 1.05).
# 2. Concurrency: the same months through one worker at concurrency 1 and 2,
#    and through two workers at concurrency 1, from the fast loopback server
#    and from a rate-limited one (RATE bytes/s per connection, like the
#    Portal's few MB/s).
# 3. Enqueue-to-start latency on an idle worker (LISTEN/NOTIFY): the median
#    of 50 enqueues, each started_at − enqueued_at on the database's clock.
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust) or BENCH_ADMIN_URL; python3.
set -euo pipefail
cd "$(dirname "$0")/.."
MONTHS=${1:-12}
ROWS=${2:-300000}
ROUNDS=${3:-2}
RATE=${RATE:-4000000}
WORK=bench/work/queue
mkdir -p "$WORK" bench/results
DB=carga_bench_queue
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export DATABASE_URL=${ADMIN_URL%/*}/$DB
export CARGA_NIS_KEY=bench-key-not-secret-0123456789abcdef
export RUST_LOG=warn
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/$STAMP-queue-$MONTHS-x-$ROWS${BENCH_LABEL:+-$BENCH_LABEL}.txt

# BENCH_CARGA: a binary built elsewhere (bench/ab.sh's, to compare revisions).
if [ -n "${BENCH_CARGA:-}" ]; then
  CARGA=$(realpath "$BENCH_CARGA")
else
  cargo build --release --locked -q
  CARGA=$PWD/target/release/carga
fi

periods=()
for i in $(seq 0 $((MONTHS - 1))); do
  periods+=("$(python3 -c "i=$i+2; print(f'{2023 + i // 12}-{i % 12 + 1:02d}')")")
done
for p in "${periods[@]}"; do
  f="$WORK/${p/-/}_NovoBolsaFamilia.zip"
  [ -s "$f" ] || $CARGA sample --rows "$ROWS" --period "$p" --seed "${p/-/}" --zip "$f" >&2
done

psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
$CARGA migrate >/dev/null
$CARGA run municipios >/dev/null

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
SERVER=$!
SLOW_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 bench/throttled_server.py "$SLOW_PORT" "$WORK" "$RATE" >/dev/null 2>&1 &
SLOW=$!
WORKERS=()
cleanup() {
  kill "$SERVER" "$SLOW" 2>/dev/null || true
  for w in "${WORKERS[@]}"; do kill "$w" 2>/dev/null || true; done
}
trap cleanup EXIT
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

url() { echo "http://127.0.0.1:$1/${2/-/}_NovoBolsaFamilia.zip"; }
now() { python3 -c 'import time; print(time.monotonic())'; }
sql() { psql "$DATABASE_URL" -Atqc "$1"; }

inline() { # port
  local t0; t0=$(now)
  for p in "${periods[@]}"; do
    $CARGA run novo-bolsa-familia --period "$p" --url "$(url "$1" "$p")" --force >/dev/null
  done
  python3 -c "print(f'{$(now) - $t0:.2f}')"
}

queued() { # port processes concurrency
  sql "DELETE FROM carga.jobs" >/dev/null
  local t0; t0=$(now)
  for p in "${periods[@]}"; do
    $CARGA enqueue novo-bolsa-familia --period "$p" --url "$(url "$1" "$p")" --force >/dev/null 2>&1
  done
  WORKERS=()
  for n in $(seq 1 "$2"); do
    CARGA__QUEUE__WORKER_NAME=bench$n $CARGA worker --concurrency "$3" 2>/dev/null &
    WORKERS+=($!)
  done
  until [ "$(sql "SELECT count(*) FROM carga.jobs WHERE state IN ('succeeded','failed')")" = "$MONTHS" ]; do
    sleep 0.05
  done
  local t1; t1=$(now)
  for w in "${WORKERS[@]}"; do kill -TERM "$w"; wait "$w" || true; done
  WORKERS=()
  local failed; failed=$(sql "SELECT count(*) FROM carga.jobs WHERE state = 'failed'")
  [ "$failed" = 0 ] || { echo "queue: $failed jobs failed" >&2; sql "SELECT error FROM carga.jobs WHERE state='failed' LIMIT 3" >&2; }
  python3 -c "print(f'{$t1 - $t0:.2f}')"
}

{
echo "# bench/queue.sh $MONTHS months x $ROWS rows, $ROUNDS rounds; $(nproc) cores; $(date -u)"
echo "## 1. overhead (fast loopback source), alternating"
inline_total=(); queue_total=()
for r in $(seq 1 "$ROUNDS"); do
  a=$(inline "$PORT"); echo "round $r inline        $a s"; inline_total+=("$a")
  b=$(queued "$PORT" 1 1); echo "round $r queue (1x1)   $b s"; queue_total+=("$b")
done
python3 - "${inline_total[*]}" "${queue_total[*]}" <<'PY'
import statistics, sys
a = [float(x) for x in sys.argv[1].split()]; b = [float(x) for x in sys.argv[2].split()]
print(f"median inline {statistics.median(a):.2f} s, queue {statistics.median(b):.2f} s, queue/inline {statistics.median(b)/statistics.median(a):.3f}")
PY

echo "## 2. concurrency (processes x loads per process)"
for source in fast slow; do
  port=$PORT; [ $source = slow ] && port=$SLOW_PORT
  for shape in "1 1" "1 2" "2 1"; do
    set -- $shape
    t=$(queued "$port" "$1" "$2")
    echo "$source source: $1 worker(s) x concurrency $2: $t s for $MONTHS months"
  done
done

echo "## 3. enqueue-to-start latency (idle worker, LISTEN/NOTIFY)"
sql "DELETE FROM carga.jobs" >/dev/null
CARGA__QUEUE__POLL_INTERVAL_MS=60000 $CARGA worker 2>/dev/null &
WORKERS=($!)
sleep 1
tiny="$WORK/tiny.zip"
[ -s "$tiny" ] || $CARGA sample --rows 10 --period 2023-03 --zip "$tiny" >/dev/null
for i in $(seq 0 49); do
  p=$(python3 -c "i=$i; print(f'{2030 + i // 12}-{i % 12 + 1:02d}')")
  # Months after the current one need --force (a spec covers up to now).
  id=$($CARGA enqueue novo-bolsa-familia --period "$p" --force --url "http://127.0.0.1:$PORT/tiny.zip" 2>/dev/null)
  [ -n "$id" ] || { echo "enqueue of $p failed" >&2; exit 1; }
  until [ "$(sql "SELECT state NOT IN ('available','running') FROM carga.jobs WHERE id = $id")" = t ]; do sleep 0.02; done
done
sql "SELECT 'median ' || round((percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - enqueued_at)) * 1000)::numeric, 1)
        || ' ms, max ' || round((max(extract(epoch FROM started_at - enqueued_at)) * 1000)::numeric, 1) || ' ms over ' || count(*) || ' jobs (poll fallback set to 60 s)'
     FROM carga.jobs"
# This block runs in tee's subshell: the EXIT trap cannot see its worker,
# whose stdout would hold the pipe open.
for w in "${WORKERS[@]}"; do kill -TERM "$w"; wait "$w" || true; done
} | tee "$OUT"
echo "raw: $OUT" >&2
