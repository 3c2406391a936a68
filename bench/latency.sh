#!/usr/bin/env bash
# Latency under load: delivery p50 / p99 / p99.9 with the fan-out load of
# bench/fanout.sh (100 clients in one room, 32-byte texts) at one rate per
# client, by default half of the highest rate that held in bench/fanout.sh's
# last measured run (see bench/README.md), side by side for the same servers.
# Longer runs than fanout.sh, so the p99.9 rests on many samples.
#
# Usage: bench/latency.sh [--tiny] [rate per client]   (default 10: half of 20)
# Environment: BENCH_RUNS (3), BENCH_SERVERS (all five), BENCH_CLIENTS (100),
#   BENCH_DURATION (steady seconds, 20), BENCH_TINY=1 (= --tiny: 5 clients, 1 s, 1 run).
# Raw outputs: bench/out/latency/<stamp>/<server>/rate-<r>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

rates=("${1:-10}")
runs=${BENCH_RUNS:-3}
servers=${BENCH_SERVERS:-chorus chorus-plain relay node-ws python-websockets}
read -r -a servers <<< "$servers"
clients=${BENCH_CLIENTS:-100}
duration=${BENCH_DURATION:-20}
ramp=2
drain=2
if [ "$BENCH_TINY" = 1 ]; then
    runs=${BENCH_RUNS:-1}
    clients=${BENCH_CLIENTS:-5}
    duration=${BENCH_DURATION:-1}
    ramp=0.5
    drain=0.5
fi

build_all
need_peers "${servers[@]}"
out=bench/out/latency/$(date +%Y%m%d-%H%M%S)
mkdir -p "$out"
machine_line > "$out/machine.txt"

fanout_runs "$out"

{
    echo "Latency: $clients clients in one room at ${rates[0]} msg/s each, texts of 32 bytes (chorus) / 64 bytes"
    echo "(raw, chorus-plain), Poisson arrivals, ${duration}s steady per run, medians of $runs run(s)."
    echo "Server pinned to CPU $BENCH_SERVER_CPU, harness to CPU $BENCH_HARNESS_CPU (taskset). $(cat "$out/machine.txt")."
    echo "chorus started as: RUST_LOG=warn $(server_command chorus PORT "$out/chorus/rate-R/run-N")"
    echo
    python3 bench/tables.py latency "$out"
} | tee "$out/table.md"
echo "raw outputs: $out" >&2
