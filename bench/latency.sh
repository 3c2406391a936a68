#!/usr/bin/env bash
# Latency under load: delivery p50 / p99 / p99.9 with the fan-out load of
# bench/fanout.sh (100 clients in one room, 32-byte texts) at one rate per
# client, by default half of the highest rate that held in bench/fanout.sh's
# last measured run (see bench/README.md), side by side for the same servers.
# Longer runs than fanout.sh, so the p99.9 rests on many samples.
#
# Usage: bench/latency.sh [--tiny] [rate per client]   (default 100: half of the 200 chorus held)
# Environment: BENCH_RUNS (3), BENCH_SERVERS (all five), BENCH_CLIENTS (100),
#   BENCH_DURATION (steady seconds, 20), BENCH_TINY=1 (= --tiny: 5 clients, 1 s, 1 run).
# Raw outputs: bench/out/latency/<stamp>/<server>/rate-<r>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

rates=("${1:-100}")
set_servers "chorus chorus-plain relay node-ws python-websockets"
load_settings 20

build_all
need_peers "${servers[@]}"
new_out latency
fanout_runs "$OUT"

fanout_table latency \
    "Latency: $clients clients in one room at ${rates[0]} msg/s each, 32-byte texts, Poisson arrivals," \
    "${duration}s steady per run, medians of $runs run(s)."
