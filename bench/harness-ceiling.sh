#!/usr/bin/env bash
# The harness's own ceiling: messages sent + received per CPU-second of the
# harness process, in raw mode against the minimal relay (examples/relay.rs),
# at rising rates. The relay runs in its own process on the other core, so
# the harness's CPU is its own. A rate the harness cannot hold shows as
# SUSPECT (its scheduler fell behind, or it used nearly a whole core).
#
# Usage: bench/harness-ceiling.sh [--tiny] [rates per client...]   (default 100 400 1600 6400)
# BENCH_TINY=1 (= --tiny): one rate, 1 s. Raw outputs: bench/out/ceiling/<stamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

set_rates "100 400 1600 6400" "100" "$@"
duration=8
[ "$BENCH_TINY" = 0 ] || duration=1

build_all
new_out ceiling
start_server relay "$OUT/relay"
{
    echo "Harness ceiling: 10 raw clients in one room of the minimal relay, 64-byte texts, ${duration}s steady per rate."
    conditions
    echo
    echo "| rate/client | sent/s | received/s | harness CPU % | messages per CPU-second | lag p99 ms | suspect |"
    echo "|---:|---:|---:|---:|---:|---:|---|"
    for rate in "${rates[@]}"; do
        sed -e "s/^rate = .*/rate = $rate.0/" -e "s/^duration = .*/duration = \"${duration}s\"/" \
            bench/scenarios/ceiling.toml > "$OUT/ceiling-$rate.toml"
        run_harness $((duration + 60)) "$OUT/ceiling-$rate.toml" --target "$SERVER_URL" --out "$OUT/run-$rate" \
            > "$OUT/run-$rate.log" 2>&1 || BENCH_FAILED=$((BENCH_FAILED + 1))
        [ -f "$OUT/run-$rate/summary.json" ] || continue
        python3 - "$OUT/run-$rate/summary.json" "$rate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["run"]
msgs = s["messages"]["sent"] + s["messages"]["received"]
cpu_seconds = r["generator_cpu_percent"] / 100 * r["duration_secs"]
lag = s["latency"].get("lag", {}).get("p99_ms", 0)
rate = lambda v: "-" if v is None else f"{v:,.0f}"  # null: no whole steady second ran
print(f"| {sys.argv[2]} | {rate(s['throughput']['sent_per_sec'])} | {rate(s['throughput']['delivered_per_sec'])} "
      f"| {r['generator_cpu_percent']:.0f} | {msgs / max(cpu_seconds, 1e-9):,.0f} | {lag:.2f} "
      f"| {'**yes**: ' + '; '.join(r['suspect']) if r['suspect'] else 'no'} |")
PY
    done
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
