#!/usr/bin/env bash
# History on vs off: the fan-out load of bench/fanout.sh (100 clients in one
# room, 32-byte texts, rising rates) against chorus with each history setting,
# side by side in the same run, interleaved, a fresh server for every
# measurement:
#   chorus                SQLite in the data directory, synchronous FULL (the default)
#   chorus-sqlite-normal  SQLite, --history-sync normal
#   chorus-memory         --history memory
#   chorus-history-off    --history off
# Prints fan-out throughput (the highest delivered/s with ratio 1.0 and p99 <
# 50 ms), ack latency (an ack leaves only once the message is stored), the
# server's CPU per delivered message, and each setting's cost against
# --history off. Target (issue 4): history on costs at most 10 % throughput.
#
# Usage: bench/history.sh [--tiny] [rates per client...]   (default 50 100 200)
# Environment: BENCH_RUNS (3), BENCH_SERVERS (the four above), BENCH_CLIENTS
#   (100), BENCH_DURATION (steady seconds, 10), BENCH_TINY=1 (= --tiny: 5
#   clients, 1 s, 1 run).
# Raw outputs: bench/out/history/<stamp>/<setting>/rate-<r>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

set_rates "50 100 200" "10" "$@"
set_servers "chorus chorus-sqlite-normal chorus-memory chorus-history-off"
load_settings 10

build_all
new_out history
fanout_runs "$OUT"

fanout_table history \
    "History on vs off: $clients clients in one room, 32-byte texts, Poisson arrivals, ${duration}s steady" \
    "per run, medians of $runs run(s)."
