#!/usr/bin/env bash
# carga's throughput benchmark. One run, one PostgreSQL, the same rows for
# every contender; prints a table and carga's ratio to each, and keeps the
# raw JSON lines under bench/results/.
#
#   bench/run.sh [ROWS] [REPEATS]   (defaults 1000000 and 3)
#
# psql and carga, the two fast contenders, run REPEATS times each,
# alternating, and the median is reported (the machines are noisy); the
# slow ones run once.
#
# Needs: PostgreSQL on 127.0.0.1:5432 (trust auth) or BENCH_DATABASE_URL;
# python3. Installs pgloader from the distribution's packages and psycopg 3
# into a private venv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${1:-1000000}
REPEATS=${2:-3}
PERIOD=2024-10
WORK=bench/work
mkdir -p "$WORK" bench/results
DB=carga_bench
ADMIN_URL=${BENCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DB_URL=${BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/$DB}
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=bench/results/$STAMP-$ROWS.jsonl

echo "== build" >&2
cargo build --release --locked -q
CARGA=target/release/carga

echo "== tools" >&2
if ! command -v pgloader >/dev/null 2>&1; then
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader >/dev/null 2>&1 ||
   { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgloader >/dev/null 2>&1; }) ||
    echo "pgloader could not be installed; skipping it" >&2
fi
if [ ! -x "$WORK/venv/bin/python" ]; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q "psycopg[binary]"
fi

echo "== data: $ROWS rows" >&2
ZIP=$WORK/${ROWS}_NovoBolsaFamilia.zip
CSV=$WORK/${ROWS}_clean.csv
RAW=$WORK/${ROWS}_NovoBolsaFamilia.csv
if [ ! -s "$ZIP" ] || [ ! -s "$CSV" ]; then
  $CARGA sample --rows "$ROWS" --period $PERIOD --zip "$ZIP" --clean-csv "$CSV" >&2
fi
if command -v pgloader >/dev/null 2>&1 && [ ! -s "$RAW" ]; then
  python3 -c "import zipfile,sys; z=zipfile.ZipFile(sys.argv[1]); open(sys.argv[2],'wb').write(z.read(z.namelist()[0]))" "$ZIP" "$RAW"
fi

echo "== database $DB" >&2
psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
DATABASE_URL=$DB_URL $CARGA migrate >/dev/null 2>&1
DATABASE_URL=$DB_URL $CARGA run municipios >/dev/null 2>&1
psql "$DB_URL" -q -c "CREATE TABLE bench_clean (program_id int, reference_date date, competence_date date,
                        municipality_id int, nis bigint, value numeric(15,2))"

echo "== loopback HTTP server" >&2
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$PORT" --bind 127.0.0.1 --directory "$WORK" >/dev/null 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
URL="http://127.0.0.1:$PORT/$(basename "$ZIP")"

measure() { python3 bench/measure.py "$@" | tee -a "$OUT"; }
vacuum() { psql "$DB_URL" -q -c "CHECKPOINT" >/dev/null; }

for round in $(seq 1 "$REPEATS"); do
  echo "== 1. psql \\copy of the clean CSV (baseline), round $round" >&2
  psql "$DB_URL" -q -c "TRUNCATE bench_clean"
  vacuum
  measure "psql \\copy (clean CSV)" "$ROWS" -- psql "$DB_URL" -q -v ON_ERROR_STOP=1 \
    -c "\\copy bench_clean FROM '$CSV' WITH (FORMAT csv)"

  echo "== 2. carga run (HTTP → unzip → parse → COPY → aggregates → publish), round $round" >&2
  vacuum
  measure "carga run (end to end)" "$ROWS" -- env DATABASE_URL="$DB_URL" CARGA_NIS_KEY=bench-key-not-secret-0123456789abcdef \
    $CARGA run novo-bolsa-familia --period $PERIOD --url "$URL" --force
  psql "$DB_URL" -Atc "SELECT 'carga stages: ' || stage_seconds::text FROM carga.loads
                        WHERE status = 'published' AND dataset = 'novo-bolsa-familia'" >&2
done

echo "== 3. Python csv + psycopg 3 cursor.copy()" >&2
vacuum
measure "python csv + psycopg copy" "$ROWS" -- "$WORK/venv/bin/python" bench/python_copy.py "$DB_URL" "$ZIP" $PERIOD

if command -v pgloader >/dev/null 2>&1; then
  echo "== 4. pgloader (same transformations, from the unzipped CSV)" >&2
  sed -e "s#@CSV@#$(realpath "$RAW")#" -e "s#@PGURL@#${DB_URL/postgres:\/\//postgresql://}#" \
    bench/pgloader.load.tmpl > "$WORK/bench.load"
  vacuum
  measure "pgloader" "$ROWS" -- pgloader --quiet "$WORK/bench.load"
fi

echo >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
labels = list(dict.fromkeys(r["label"] for r in rows))
def median_run(label):
    runs = sorted((r for r in rows if r["label"] == label), key=lambda r: r["wall_s"])
    return runs[len(runs) // 2], len(runs)
carga, _ = median_run(next(l for l in labels if l.startswith("carga")))
print(f"{'contender':<28} {'rows':>9} {'runs':>4} {'wall s':>8} {'cpu s':>7} {'rss MB':>7} {'rows/s':>10}  carga ×")
for label in labels:
    r, n = median_run(label)
    ratio = carga["rows_per_s"] / r["rows_per_s"] if r["rows_per_s"] else float("nan")
    status = "" if r["ok"] else "  FAILED: " + " | ".join(r.get("error", []))
    print(f"{label:<28} {r['rows']:>9} {n:>4} {r['wall_s']:>8.2f} {r['cpu_s']:>7.2f} {r['peak_rss_mb']:>7.1f} {r['rows_per_s']:>10}  {ratio:5.2f}{status}")
PY
echo "raw: $OUT" >&2
