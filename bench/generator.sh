#!/usr/bin/env bash
# Is the generator the bottleneck? The chorus harness against a tiny
# independent generator (examples/tinygen.rs: plain tokio-tungstenite clients
# sending on a timer and counting receipts, no stamps, no histograms) under the
# same load: the fan-out of bench/fanout.sh (100 clients in one room, 64-byte
# texts) against the minimal relay (examples/relay.rs), relay pinned to one
# core, generator to the other. Reports each generator's CPU per message
# (sent + received) and, at the top rate, which is past the harness's
# ceiling on one core, the harness's own SUSPECT verdict and its reasons.
#
# Usage: bench/generator.sh [--tiny] [rates per client...]   (default 10 20 50)
# Environment: BENCH_RUNS (3), BENCH_CLIENTS (100), BENCH_DURATION (steady
#   seconds, 10), BENCH_TINY=1 (= --tiny: 5 clients, 1 s, 1 run).
# Raw outputs: bench/out/generator/<stamp>/rate-<r>/run-<n>/ (harness results
# and log, tinygen.json) and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

rates=("${@:-10 20 50}")
read -r -a rates <<< "${rates[*]}"
runs=${BENCH_RUNS:-3}
clients=${BENCH_CLIENTS:-100}
duration=${BENCH_DURATION:-10}
ramp=2
drain=2
if [ "$BENCH_TINY" = 1 ]; then
    [ $# -gt 0 ] || rates=(10 50)
    runs=${BENCH_RUNS:-1}
    clients=${BENCH_CLIENTS:-5}
    duration=${BENCH_DURATION:-1}
    ramp=0.5
    drain=0.5
fi

build_all
out=bench/out/generator/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
machine_line > "$out/machine.txt"
limit=$(python3 -c "print(int($ramp + $duration + $drain + 60))")

for run in $(seq "$runs"); do
    for rate in "${rates[@]}"; do
        dir=$out/rate-$rate/run-$run
        echo "rate $rate msg/s per client, run $run: chorus run, then tinygen" >&2
        start_server relay "$dir/harness-relay"
        fanout_scenario relay "$rate" "$dir/scenario.toml"
        run_harness "$limit" "$dir/scenario.toml" --target "$SERVER_URL" --out "$dir/result" > "$dir/harness.log" 2>&1
        stop_pid "$SERVER_PID"
        start_server relay "$dir/tinygen-relay"
        (pinned harness timeout --kill-after=5 "$limit" "$TINYGEN" "$SERVER_URL" "$clients" "$rate" "$duration" 64) \
            > "$dir/tinygen.json" 2> "$dir/tinygen.log"
        stop_pid "$SERVER_PID"
    done
done

{
    echo "Generators side by side: $clients clients in one room of the minimal relay, 64-byte texts, ${duration}s"
    echo "of sending per run, medians of $runs run(s); CPU per message = CPU seconds / (sent + received)."
    echo "Relay pinned to CPU $BENCH_SERVER_CPU, generator to CPU $BENCH_HARNESS_CPU (taskset). $(cat "$out/machine.txt")."
    echo
    python3 bench/tables.py generator "$out"
} | tee "$out/table.md"
echo "raw outputs: $out" >&2
