#!/usr/bin/env bash
# Fan-out throughput, side by side in one run: 100 clients in one room, each
# sending 32-byte texts at rising rates, against chorus (protocol chorus),
# chorus fed plain-text frames (chorus-plain), the minimal tokio-tungstenite
# relay (examples/relay.rs), and minimal relays on Node `ws` and Python
# `websockets` (raw). Each server runs in its own process pinned to one core,
# the harness on the other; a fresh server process for every measurement.
# Prints, per server and rate, the medians of BENCH_RUNS runs, then the
# highest delivered/s with ratio 1.0 and p99 < 50 ms, and the ratios.
#
# Usage: bench/fanout.sh [--tiny] [rates per client...]   (default 10 50 100 200)
# Before / after a change: BENCH_SERVERS="chorus chorus-baseline" and
# CHORUS_BASELINE=path/to/the/other/chorus (built from the commit before).
# Environment: BENCH_RUNS (3), BENCH_SERVERS (all five), BENCH_CLIENTS (100),
#   BENCH_DURATION (steady seconds, 10), BENCH_TINY=1 (= --tiny: 5 clients, 1 s, 1 run).
# Raw outputs: bench/out/fanout/<stamp>/<server>/rate-<r>/run-<n>/ (server
# command and log, harness log, the harness's results folder) and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

set_rates "10 50 100 200" "10 50" "$@"
set_servers "chorus chorus-plain relay node-ws python-websockets"
load_settings 10

build_all
need_peers "${servers[@]}"
new_out fanout
fanout_runs "$OUT"

fanout_table fanout \
    "Fan-out: $clients clients in one room, 32-byte texts, Poisson arrivals, ${duration}s steady per run," \
    "medians of $runs run(s)."
