#!/usr/bin/env bash
# Idle connections: IDLE_CONNS (19,000) connections to one chorus server
# process (the per-process open-files limit here is 20,000), opened by
# IDLE_SHARDS harness processes (`chorus run --shard`) from several source
# addresses, then one broadcast to all of them. Measures the server's RSS per
# connection (VmRSS before and after, /proc/PID/status), the time to connect
# them all (from the agreed start to the moment the server's /healthz counts
# them all), and the time until the last one has the one message (delivery
# max of the shards merged with `chorus report --merge`).
#
# Usage: bench/idle.sh [--tiny]
# Environment: IDLE_CONNS (19000), IDLE_SHARDS (4), IDLE_RAMP (seconds over
#   which connections open, 5), BENCH_TINY=1 (= --tiny: 40 connections, 2 shards).
# Raw outputs: bench/out/idle/<stamp>/ (server command and log, shard-<i>/
# results and logs, merged/, idle.json, table.md).
#
# Source addresses: the harness picks 127.0.0.(1 + k / 25,000) for client k
# only when the scenario has more than 25,000 clients, and has no option to
# choose. So the scenario names PHANTOM times more clients than connect and
# the script runs IDLE_SHARDS of its PHANTOM x IDLE_SHARDS shards: the bots
# that run are spread evenly over ceil(IDLE_CONNS / 5,000) addresses, and the
# bots of the shards that never run never connect.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

conns=${IDLE_CONNS:-19000}
shards=${IDLE_SHARDS:-4}
ramp=${IDLE_RAMP:-5}
idle=10
drain=10
phantom=5
if [ "$BENCH_TINY" = 1 ]; then
    conns=${IDLE_CONNS:-40}
    shards=${IDLE_SHARDS:-2}
    ramp=${IDLE_RAMP:-1}
    idle=2
    drain=2
fi
if [ $((conns % shards)) -ne 0 ]; then
    echo "IDLE_CONNS ($conns) must be a multiple of IDLE_SHARDS ($shards)" >&2
    exit 2
fi

build_all
new_out idle
out=$OUT

total=$((conns * phantom))
sed -e "/^type = \"ramp\"/{n;s/.*/duration = \"${ramp}s\"/}" -e "/^name = \"quiet\"/{n;s/.*/duration = \"${idle}s\"/}" \
    -e "/^type = \"drain\"/{n;s/.*/duration = \"${drain}s\"/}" -e "s/^clients = 18999/clients = $((total - 1))/" \
    bench/scenarios/idle.toml > "$out/scenario.toml"
sources=$(python3 -c "print(' '.join(f'127.0.0.{a}' for a in sorted({1 + i // 25000 for i in range($total) if i % ($phantom * $shards) < $shards})))")
[ "$total" -gt 25000 ] || sources=127.0.0.1

CHORUS_FLAGS="--max-connections $((conns + 100))" start_server chorus "$out"
port=${SERVER_URL#ws://127.0.0.1:}
port=${port%/}
sleep 1
rss_before=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")

start=$(($(date +%s) + 3))
shard_pids=()
for i in $(seq "$shards"); do
    mkdir -p "$out/shard-$i"
    start_bg "$out/shard-$i/harness.log" pinned harness timeout --kill-after=5 $((ramp + idle + drain + 120)) \
        "$CHORUS" run "$out/scenario.toml" --target "$SERVER_URL" --shard "$i/$((phantom * shards))" \
        --start-at "$start" --out "$out/shard-$i/result"
    shard_pids+=("$BG_PID")
done

# Watch /healthz until every connection is counted, then let the server
# settle and read its RSS (still in the idle phase: nothing has been sent).
python3 - "$port" "$SERVER_PID" "$conns" "$start" "$((ramp + idle))" > "$out/probe.json" <<'PY'
import json, sys, time, urllib.request
port, pid, want, start, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
seen, done_at = 0, None
while time.time() < start + limit:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            seen = json.load(r)["connections"]
    except OSError:
        pass
    if seen >= want:
        done_at = time.time()
        break
    time.sleep(0.05)
time.sleep(1)
rss = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
print(json.dumps({"connect_secs": None if done_at is None else done_at - start, "connections": seen, "rss_after_kib": rss}))
PY

for pid in "${shard_pids[@]}"; do
    wait "$pid" || [ $? = 3 ] || BENCH_FAILED=$((BENCH_FAILED + 1))
    forget_pid "$pid"
done
stop_pid "$SERVER_PID"
"$CHORUS" report --merge "$out"/shard-*/result --out "$out/merged" > "$out/merged.log" 2>&1 || [ $? = 3 ] ||
    BENCH_FAILED=$((BENCH_FAILED + 1))

python3 - "$out" "$rss_before" "$shards" "$sources" <<'PY'
import json, sys
out, rss_before, shards, sources = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
facts = json.load(open(f"{out}/probe.json"))
facts.update(rss_before_kib=rss_before, shards=shards, sources=sources)
json.dump(facts, open(f"{out}/idle.json", "w"), indent=1)
PY
{
    echo "Idle connections: $conns to one chorus server, $shards harness shards, connections opened over ${ramp}s;"
    conditions
    echo "chorus started as: RUST_LOG=warn $(cat "$out/server.cmd")"
    echo
    python3 bench/tables.py idle "$out"
} | tee "$out/table.md"
echo "raw outputs: $out" >&2
bench_status
