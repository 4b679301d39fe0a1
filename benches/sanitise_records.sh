#!/usr/bin/env bash
# Benchmark: `mishare sanitise --records` against DuckDB doing the same job.
#
# What it measures
#   Wall-clock time and peak RSS (GNU /usr/bin/time -f '%e %M') of one
#   end-to-end sanitise of a participant-records CSV:
#     mishare sanitise --records FILE --measure referrals --rows payment_group \
#         --cols period --period month --periods 2011-06..2016-03 --format csv
#   i.e. referrals by payment group x month over the generator's whole date
#   range (2011-06-01..2016-03-31), laid out in full (all nine groups, every
#   month of the range), every cell rounded to the nearest 20 (halves up),
#   totals as sums of rounded cells, written as the LA's CSV.
#
# Peer tool
#   DuckDB's Python package (benches/duckdb_records.py): one SQL query with
#   default settings (all cores) does the scan, grouping, rounding, pivot and
#   totals; the timed command is `python3 benches/duckdb_records.py FILE`
#   (the real interpreter, resolved past any pyenv-style shim), so
#   interpreter start-up and `import duckdb` count, as they would for a user.
#   The two outputs must be byte-identical (cmp), else the script exits 1.
#
# How to run (from anywhere)
#   benches/sanitise_records.sh [ROWS] [RUNS] [WORKDIR]
#     ROWS     records to generate (default 5000000)
#     RUNS     timed rounds (default 5); each round runs both tools, the order
#              alternating between rounds; one untimed warm-up run of each tool
#              comes first so both read the input from the page cache
#     WORKDIR  where the outputs (and generated records) go; default a fresh
#              mktemp -d, removed at exit unless KEEP=1
#   Environment:
#     RECORDS=path  reuse this records CSV (generated there if it does not
#                   exist yet), so repeated runs don't regenerate ~324 MB
#     KEEP=1        keep the default work dir
#   Records come from ../shared/bench/gen_records.py (beside the repo);
#   generated data is never written inside the repo.
#
# Targets reported: mishare median wall time <= 0.4 x DuckDB's; mishare peak RSS < 64 MiB.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
SHARED=$(cd "$REPO/../shared" && pwd)
GEN="$SHARED/bench/gen_records.py"

ROWS=${1:-5000000}
RUNS=${2:-5}
WORK=${3:-}
[[ $ROWS =~ ^[0-9]+$ && $RUNS =~ ^[1-9][0-9]*$ ]] || {
    echo "usage: $0 [ROWS] [RUNS] [WORKDIR]" >&2; exit 2; }

inside_repo() {  # is $1 (a path that may not exist yet) inside the repo?
    local d
    d=$(cd "$(dirname "$1")" 2>/dev/null && pwd) || return 1
    d="$d/$(basename "$1")"
    [[ $d == "$REPO" || $d == "$REPO"/* ]]
}

if [[ -z $WORK ]]; then
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/mishare-bench.XXXXXX")
    if [[ ${KEEP:-0} != 1 ]]; then trap 'rm -rf "$WORK"' EXIT; fi
else
    mkdir -p "$WORK"
fi
WORK=$(cd "$WORK" && pwd)
if inside_repo "$WORK"; then echo "work dir $WORK is inside the repo; refusing" >&2; exit 2; fi

# --- input ------------------------------------------------------------------
if [[ -n ${RECORDS:-} ]]; then
    FILE=$RECORDS
    if inside_repo "$FILE"; then echo "RECORDS=$FILE is inside the repo; refusing" >&2; exit 2; fi
else
    FILE="$WORK/records.csv"
fi
if [[ -s $FILE ]]; then
    echo "reusing records: $FILE"
else
    echo "generating $ROWS records into $FILE ..."
    python3 "$GEN" "$ROWS" "$FILE"
fi
NROWS=$(( $(wc -l < "$FILE") - 1 ))
if [[ $NROWS != "$ROWS" ]]; then
    echo "note: $FILE holds $NROWS records (ROWS argument was $ROWS); reporting $NROWS" >&2
fi

# --- tools ------------------------------------------------------------------
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet duckdb
(cd "$REPO" && cargo build --release --quiet)
MISHARE="$REPO/target/release/mishare"
DUCK="$HERE/duckdb_records.py"
# The real interpreter, not a version-manager shim (whose start-up is not DuckDB's).
PY=$(python3 -c 'import sys; print(sys.executable)')

# Run the tools directly (no wrapper shell) so RSS is the tool's own.
timed() {
    local tool=$1 out="$WORK/out_$1.csv" cmd
    if [[ $tool == mishare ]]; then
        cmd=("$MISHARE" sanitise --records "$FILE" --measure referrals --rows payment_group
             --cols period --period month --periods 2011-06..2016-03 --format csv)
    else
        cmd=("$PY" "$DUCK" "$FILE")
    fi
    if ! /usr/bin/time -f '%e %M' -o "$WORK/$tool.t" "${cmd[@]}" > "$out" 2> "$WORK/$tool.err"; then
        echo "$tool failed:" >&2; cat "$WORK/$tool.err" "$WORK/$tool.t" >&2; exit 1
    fi
    [[ ${2:-} == warmup ]] || tail -n 1 "$WORK/$tool.t" >> "$WORK/$tool.times"
}

rm -f "$WORK/mishare.times" "$WORK/duckdb.times"
echo "warm-up (untimed) ..."
timed mishare warmup
timed duckdb warmup
for ((i = 1; i <= RUNS; i++)); do
    if (( i % 2 )); then timed mishare; timed duckdb; else timed duckdb; timed mishare; fi
    echo "round $i/$RUNS: mishare $(tail -n1 "$WORK/mishare.times")  duckdb $(tail -n1 "$WORK/duckdb.times")  (s KiB)"
done

# --- same job? --------------------------------------------------------------
if ! cmp -s "$WORK/out_mishare.csv" "$WORK/out_duckdb.csv"; then
    echo "OUTPUTS DIFFER (mishare vs duckdb); the benchmark is void:" >&2
    diff "$WORK/out_mishare.csv" "$WORK/out_duckdb.csv" | head -n 20 | cut -c1-200 >&2
    exit 1
fi

# --- report -----------------------------------------------------------------
CPU=$(grep -m1 '^model name' /proc/cpuinfo | sed 's/^[^:]*: *//')
SIZE_MB=$(awk -v b="$(stat -c %s "$FILE")" 'BEGIN { printf "%.1f", b / 1e6 }')
DUCKVER=$("$PY" -c 'import duckdb; print(duckdb.__version__)')
python3 - "$WORK/mishare.times" "$WORK/duckdb.times" <<EOF
import statistics as st, sys
def load(p):
    rows = [l.split() for l in open(p) if l.strip()]
    return [float(a) for a, _ in rows], [int(b) / 1024 for _, b in rows]
(mw, mr), (dw, dr) = load(sys.argv[1]), load(sys.argv[2])
print()
print("machine: nproc=$(nproc), CPU: $CPU")
print("input:   $NROWS rows, $SIZE_MB MB ($FILE)")
print("runs:    $RUNS interleaved rounds (after 1 warm-up each); outputs byte-identical: yes")
print("peer:    DuckDB $DUCKVER (Python package, default threads)")
print()
print(f"{'tool':<10}{'median s':>10}{'min s':>8}{'max s':>8}{'median RSS MiB':>16}")
for name, w, r in (("mishare", mw, mr), ("duckdb", dw, dr)):
    print(f"{name:<10}{st.median(w):>10.2f}{min(w):>8.2f}{max(w):>8.2f}{st.median(r):>16.1f}")
ratio = st.median(mw) / st.median(dw) if st.median(dw) > 0 else float("nan")
print()
print(f"ratio mishare/duckdb (median wall): {ratio:.3f}")
ok_t = st.median(mw) <= 0.4 * st.median(dw)
ok_m = st.median(mr) < 64
print(f"target wall time <= 0.4 x DuckDB's: {'MET' if ok_t else 'NOT MET'}")
print(f"target peak RSS < 64 MiB:     {'MET' if ok_m else 'NOT MET'} ({st.median(mr):.1f} MiB)")
EOF
