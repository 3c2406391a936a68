#!/usr/bin/env bash
# Idle connections: IDLE_CONNS (19,000) connections to one chorus server
# process (the per-process open-files limit here is 20,000), opened by
# IDLE_SHARDS harness processes (`chorus run --shard`) from several source
# addresses, then a broadcast. Measures the server's RSS per connection
# (VmRSS before and after, /proc/PID/status), the time to connect them all
# (from the agreed start until the server's /healthz counts them all), and the
# time until the last one has the broadcast (delivery max of the shards merged
# with `chorus report --merge`).
#
# All of them are in one room, the lobby, and one of them sends one message:
# the broadcast reaches every other connection. Past the server's presence
# limit (1,000 members, `--presence-limit`) arrivals are not announced to the
# room, so opening 19,000 connections in one room costs 19,000 `welcome`s, not
# 180 million `joined` notices.
#
# Usage: bench/idle.sh [--tiny]
# Environment: IDLE_CONNS (19000), IDLE_SHARDS (4: harness processes, shard i
#   connecting from 127.0.0.i), IDLE_RAMP (seconds over which connections
#   open, 10), BENCH_TINY=1 (= --tiny: 40 connections, 2 shards).
# Raw outputs: bench/out/idle/<stamp>/ (server command and log, shard-<i>/
# results and logs, merged/, scenario.toml, idle.json, table.md).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

conns=${IDLE_CONNS:-19000}
shards=${IDLE_SHARDS:-4}
ramp=${IDLE_RAMP:-10}
quiet=10
drain=10
if [ "$BENCH_TINY" = 1 ]; then
    conns=${IDLE_CONNS:-40}
    shards=${IDLE_SHARDS:-2}
    ramp=${IDLE_RAMP:-1}
    quiet=2
    drain=2
fi
if [ $((conns % shards)) -ne 0 ]; then
    echo "IDLE_CONNS ($conns) must be a multiple of IDLE_SHARDS ($shards)" >&2
    exit 2
fi

build_all
new_out idle
out=$OUT
sed -e "s/^duration = \"5s\" # ramp/duration = \"${ramp}s\" # ramp/" \
    -e "s/^duration = \"10s\" # quiet/duration = \"${quiet}s\" # quiet/" \
    -e "s/^duration = \"10s\" # drain/duration = \"${drain}s\" # drain/" \
    -e "s/^clients = 18999 #/clients = $((conns - 1)) #/" bench/scenarios/idle.toml > "$out/scenario.toml"
printf '{"sources": [%s], "rooms": 1, "senders": 1, "expected_deliveries": %d}\n' \
    "$(seq -s, -f '"127.0.0.%g"' "$shards")" "$((conns - 1))" > "$out/plan.json"

CHORUS_FLAGS="--max-connections $((conns + 100))" start_server chorus "$out"
port=${SERVER_URL#ws://127.0.0.1:}
port=${port%/}
sleep 1
rss_before=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")

start=$(($(date +%s) + 3))
shard_pids=()
for i in $(seq "$shards"); do
    mkdir -p "$out/shard-$i"
    start_bg "$out/shard-$i/harness.log" pinned harness timeout --kill-after=5 $((ramp + quiet + drain + 120)) \
        "$CHORUS" run "$out/scenario.toml" --target "$SERVER_URL" --shard "$i/$shards" \
        --source-addresses "$shards" \
        --start-at "$start" --out "$out/shard-$i/result"
    shard_pids+=("$BG_PID")
done

# Watch /healthz until every connection is counted, then let the server
# settle and read its RSS (still in the idle phase: nothing has been sent).
python3 - "$port" "$SERVER_PID" "$conns" "$start" "$((ramp + quiet))" > "$out/probe.json" <<'PY'
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
cpu_idle=$(proc_cpu "$SERVER_PID")

for pid in "${shard_pids[@]}"; do
    wait "$pid" || [ $? = 3 ] || BENCH_FAILED=$((BENCH_FAILED + 1))
    forget_pid "$pid"
done
cpu_burst=$(python3 -c "print(round($(proc_cpu "$SERVER_PID") - $cpu_idle, 2))")
stop_pid "$SERVER_PID"
"$CHORUS" report --merge "$out"/shard-*/result --out "$out/merged" > "$out/merged.log" 2>&1 || [ $? = 3 ] ||
    BENCH_FAILED=$((BENCH_FAILED + 1))

python3 - "$out" "$rss_before" "$shards" "$cpu_burst" <<'PY'
import json, sys
out, rss_before, shards, cpu_burst = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
facts = json.load(open(f"{out}/plan.json"))
facts.update(json.load(open(f"{out}/probe.json")), rss_before_kib=rss_before, shards=shards, server_cpu_after_idle=cpu_burst)
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
