#!/usr/bin/env bash
# Where chorus spends its CPU under the fan-out load: `perf record` (CPU clock
# sampling, DWARF call graphs from the release build's line tables) on the
# server while the harness drives bench/fanout.sh's load (100 clients in one
# room, 32-byte texts) at one rate. Writes the hottest functions (self time)
# and a flame graph (inferno, `cargo install inferno`).
#
# Usage: bench/profile.sh [rate per client]   (default 100)
# Environment: BENCH_CLIENTS (100), BENCH_DURATION (steady seconds, 10),
#   PROFILE_SERVER (chorus; or chorus-plain, chorus-memory, ...: any chorus
#   variant of bench/lib.sh), PROFILE_FREQ (sampling Hz, 499).
# Raw outputs: bench/out/profile/<stamp>/ (perf.data, top.txt, flamegraph.svg).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

rate=${1:-100}
server=${PROFILE_SERVER:-chorus}
freq=${PROFILE_FREQ:-499}
load_settings 10
command -v perf >/dev/null || { echo "perf is not installed (apt install linux-perf)" >&2; exit 2; }

build_all
new_out profile
start_server "$server" "$OUT/server"
fanout_scenario "$server" "$rate" "$OUT/scenario.toml"
# Sample the whole run; the steady phase dominates it.
start_bg "$OUT/perf.log" perf record -F "$freq" --call-graph dwarf,16384 -o "$OUT/perf.data" -p "$SERVER_PID"
perf_pid=$BG_PID
sleep 1
run_harness $((duration + 60)) "$OUT/scenario.toml" --target "$SERVER_URL" --out "$OUT/result" \
    > "$OUT/harness.log" 2>&1 || BENCH_FAILED=$((BENCH_FAILED + 1))
kill -INT "$perf_pid" 2>/dev/null || true
wait "$perf_pid" || true
forget_pid "$perf_pid"
stop_pid "$SERVER_PID"
if [ ! -s "$OUT/perf.data" ]; then
    echo "perf record wrote nothing (not permitted here? see $OUT/perf.log)" >&2
    exit 1
fi

# Self time by thread and object (kernel, chorus, libc), then by function.
report() {
    perf report -i "$OUT/perf.data" --no-children --stdio -g none "$@" 2>/dev/null |
        grep -v '^#' | grep -v '^$' | sed -E 's/ +(- +)*-? *$//' || true
}
report --percent-limit 1 --sort comm,dso > "$OUT/threads.txt"
report --percent-limit 0.7 --sort symbol > "$OUT/top.txt"
if command -v inferno-collapse-perf >/dev/null; then
    perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
        --title "chorus server, fan-out $clients clients x $rate msg/s" > "$OUT/flamegraph.svg"
fi
{
    echo "Profile of $server under the fan-out load: $clients clients in one room at $rate msg/s each, ${duration}s steady."
    conditions
    python3 - "$OUT/result/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
d = s["latency"].get("delivery", {})
rate = s['throughput']['delivered_per_sec']  # null: no whole steady second ran
print(f"Delivered {'-' if rate is None else f'{rate:,.0f}'}/s, ratio {s['delivery']['ratio']:.6f}, "
      f"delivery p99 {d.get('p99_ms', 0):.2f} ms, harness SUSPECT: {'yes' if s['run']['suspect'] else 'no'}.")
PY
    echo
    echo "Server samples by thread and object:"
    echo
    echo '```'
    cat "$OUT/threads.txt"
    echo '```'
    echo
    echo "Hottest functions (self time, share of the server's samples):"
    echo
    echo '```'
    head -40 "$OUT/top.txt"
    echo '```'
    [ ! -f "$OUT/flamegraph.svg" ] || echo "Flame graph: $OUT/flamegraph.svg"
} | tee "$OUT/table.md"
bench_status
