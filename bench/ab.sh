#!/usr/bin/env bash
# Before/after of two revisions of carga on the same data, alternating.
#
#   bench/ab.sh OLD_REV [NEW_REV] [ROWS] [ROUNDS]   (defaults HEAD, 2000000, 5)
#
# Builds both revisions in release (each in its own worktree under
# bench/work/ab/, sharing nothing), generates one sample month with the new
# binary, serves it from a loopback HTTP server, and runs
# `carga run novo-bolsa-familia --force` against one database per binary
# (migrated and with municipios loaded by that binary), in ABBA order so
# that neither side always runs on a warmer machine. Prints the median wall
# time, CPU time and peak RSS of each side and the ratios new/old, and
# keeps the raw JSON lines under bench/results/.
#
# Needs PostgreSQL on 127.0.0.1:5432 (trust) or BENCH_ADMIN_URL; python3.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD_REV=${1:?usage: bench/ab.sh OLD_REV [NEW_REV] [ROWS] [ROUNDS]}
NEW_REV=${2:-HEAD}
ROWS=${3:-2000000}
ROUNDS=${4:-5}
PERIOD=2024-10
WORK=bench/work/ab
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
KEY=bench-key-not-secret-0123456789abcdef
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/$STAMP-ab-$ROWS.jsonl
mkdir -p "$WORK" bench/results
# Each binary uses the specs compiled into it: the work tree's jobs/ may
# hold specs an older binary cannot read.
export CARGA__LOAD__JOBS_DIR=$WORK/no-jobs-dir

build() { # side rev: builds rev in its own worktree, into one shared target
  # directory (dependencies compile once), and keeps the binary apart.
  local dir=$WORK/$1 rev
  rev=$(git rev-parse "$2^{commit}")
  if [ "$(git -C "$dir" rev-parse HEAD 2>/dev/null)" != "$rev" ]; then
    git worktree remove --force "$dir" >/dev/null 2>&1 || true
    git worktree add --detach -q "$dir" "$rev"
  fi
  (cd "$dir" && CARGO_TARGET_DIR=$(realpath ../target) cargo build --release --locked -q)
  cp "$WORK/target/release/carga" "$WORK/carga-$1"
  echo "$WORK/carga-$1"
}
echo "== build $OLD_REV and $NEW_REV" >&2
OLD=$(build old "$OLD_REV")
NEW=$(build new "$NEW_REV")
trap 'git worktree remove --force $WORK/old >/dev/null 2>&1 || true; git worktree remove --force $WORK/new >/dev/null 2>&1 || true; kill ${SERVER:-0} 2>/dev/null || true' EXIT

ZIP=$WORK/${ROWS}_NovoBolsaFamilia.zip
[ -s "$ZIP" ] || "$NEW" sample --rows "$ROWS" --period $PERIOD --zip "$ZIP" >&2

for side in old new; do
  db=carga_ab_$side
  bin=$OLD; [ $side = new ] && bin=$NEW
  psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
  DATABASE_URL=${ADMIN_URL%/*}/$db "$bin" migrate >/dev/null
  DATABASE_URL=${ADMIN_URL%/*}/$db "$bin" run municipios >/dev/null
done

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/$(basename "$ZIP")"

run() { # side
  local db=carga_ab_$1 bin=$OLD
  [ "$1" = new ] && bin=$NEW
  psql "${ADMIN_URL%/*}/$db" -q -c CHECKPOINT
  python3 bench/measure.py "$1" "$ROWS" -- env DATABASE_URL="${ADMIN_URL%/*}/$db" CARGA_NIS_KEY=$KEY \
    RUST_LOG=warn "$bin" run novo-bolsa-familia --period $PERIOD --url "$URL" --force | tee -a "$OUT"
}
for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round" >&2
  if [ $((round % 2)) = 1 ]; then run old; run new; else run new; run old; fi
done

python3 - "$OUT" "$OLD_REV" "$NEW_REV" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["ok"] for r in rows), [r for r in rows if not r["ok"]]
med = lambda side, key: statistics.median(r[key] for r in rows if r["label"] == side)
print(f"old = {sys.argv[2]}, new = {sys.argv[3]}, {len(rows)//2} rounds each, ABBA, medians")
print(f"{'':<6} {'wall s':>8} {'cpu s':>8} {'rss MB':>8}")
for side in ("old", "new"):
    print(f"{side:<6} {med(side,'wall_s'):>8.3f} {med(side,'cpu_s'):>8.3f} {med(side,'peak_rss_mb'):>8.1f}")
print(f"new/old wall {med('new','wall_s')/med('old','wall_s'):.3f}, "
      f"cpu {med('new','cpu_s')/med('old','cpu_s'):.3f}, "
      f"rss {med('new','peak_rss_mb')/med('old','peak_rss_mb'):.3f}")
PY
echo "raw: $OUT" >&2
