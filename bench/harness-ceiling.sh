#!/usr/bin/env bash
# The harness's own ceiling: messages sent + received per CPU-second of the
# harness process, in raw mode against the minimal relay (examples/relay.rs),
# at rising rates. The relay runs in its own process, so the harness's CPU is
# its own. Usage: bench/harness-ceiling.sh [rates...]   (default: 100 400 1600 6400)
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("${@:-100 400 1600 6400}")
read -r -a rates <<< "${rates[*]}"
cargo build --release -q --example relay
cargo build --release -q
out=bench/out/ceiling
mkdir -p "$out"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/examples/relay "127.0.0.1:$port" 2>/dev/null &
relay=$!
trap 'kill $relay 2>/dev/null' EXIT
sleep 0.3
printf "%-8s %10s %12s %9s %16s %10s %s\n" "rate" "sent/s" "received/s" "cpu%" "msgs/cpu-second" "lag p99" "suspect"
for rate in "${rates[@]}"; do
    sed "s/^rate = .*/rate = $rate.0/" bench/scenarios/ceiling.toml > "$out/ceiling-$rate.toml"
    ./target/release/chorus run "$out/ceiling-$rate.toml" --target "ws://127.0.0.1:$port/" \
        --out "$out/run-$rate" > /dev/null 2>&1 || true
    python3 - "$out/run-$rate/summary.json" "$rate" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r = s["run"]
msgs = s["messages"]["sent"] + s["messages"]["received"]
cpu_seconds = r["generator_cpu_percent"] / 100 * r["duration_secs"]
lag = s["latency"].get("lag", {}).get("p99_ms", 0)
print(f"{sys.argv[2]:<8} {s['throughput']['sent_per_sec']:>10.0f} {s['throughput']['delivered_per_sec']:>12.0f} "
      f"{r['generator_cpu_percent']:>9.0f} {msgs / max(cpu_seconds, 1e-9):>16.0f} {lag:>8.2f}ms {'yes' if r['suspect'] else 'no'}")
PY
done
