#!/usr/bin/env bash
# Is the generator the bottleneck? The chorus harness against a tiny
# independent generator (examples/tinygen.rs: plain tokio-tungstenite clients
# sending on a timer and counting receipts, no stamps, no histograms) under the
# same load: the fan-out of bench/fanout.sh (100 clients in one room, 32-byte
# texts) against the minimal relay (examples/relay.rs), relay pinned to one
# core, generator to the other. Reports each generator's CPU per message
# (sent + received) and, at the top rate, which is past the harness's
# ceiling on one core, the harness's own SUSPECT verdict and its reasons.
#
# Usage: bench/generator.sh [--tiny] [rates per client...]   (default 10 20 50 100)
# Environment: BENCH_RUNS (3), BENCH_CLIENTS (100), BENCH_DURATION (steady
#   seconds, 10), BENCH_TINY=1 (= --tiny: 5 clients, 1 s, 1 run).
# Raw outputs: bench/out/generator/<stamp>/rate-<r>/run-<n>/ (harness results
# and log, tinygen.json) and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

set_rates "10 20 50 100" "10 50" "$@"
load_settings 10

build_all
new_out generator
limit=$(python3 -c "print(int($ramp + $duration + $drain + 60))")

for run in $(seq "$runs"); do
    for rate in "${rates[@]}"; do
        dir=$OUT/rate-$rate/run-$run
        echo "rate $rate msg/s per client, run $run: chorus run, then tinygen" >&2
        start_server relay "$dir/harness-relay"
        fanout_scenario relay "$rate" "$dir/scenario.toml"
        run_harness "$limit" "$dir/scenario.toml" --target "$SERVER_URL" --out "$dir/result" > "$dir/harness.log" 2>&1
        stop_pid "$SERVER_PID"
        start_server relay "$dir/tinygen-relay"
        (pinned harness timeout --kill-after=5 "$limit" "$TINYGEN" "$SERVER_URL" "$clients" "$rate" "$duration" 32) \
            > "$dir/tinygen.json" 2> "$dir/tinygen.log"
        stop_pid "$SERVER_PID"
    done
done

{
    echo "Generators side by side: $clients clients in one room of the minimal relay, 32-byte texts, ${duration}s"
    echo "of sending per run, medians of $runs run(s); CPU per message = CPU seconds / (sent + received)."
    conditions
    echo
    python3 bench/tables.py generator "$OUT"
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
