#!/usr/bin/env bash
# Scale-out: SCALE_NODES (3) chorus nodes sharing rooms through one Redis, on
# this machine, side by side with a single node on the same load: the cost of
# the Redis hop, and how far several processes go past one process's
# open-files limit (20,000 here).
#
# 1. Broadcast. SCALE_CONNS (45,000) connections in one room, spread evenly
#    over the nodes, opened by SCALE_SHARDS (6) harness processes (`chorus run
#    --shard i/n`, shard i from source address 127.0.0.i and to node
#    ((i-1) mod nodes) + 1), then one message to all of them: the time to
#    connect them all (the nodes' /healthz summed), the time until the last
#    one has the message (delivery max of the shards merged with `chorus
#    report --merge`), each node's RSS, and the CPU the nodes and Redis spent
#    from the end of the quiet phase to the end of the run. The single node
#    holds one node's share (SCALE_CONNS / nodes) with SCALE_SHARDS / nodes
#    shards: the same load per process.
# 2. Fan-out. One room: SCALE_TALKERS (10) clients on node 1, each sending
#    32-byte texts at RATE msg/s, and SCALE_LISTENERS (90) clients that only
#    listen, half on node 2 and half on node 3 (`spread = "group"` over the
#    repeated --target). The listeners' delivery latency is cross-node
#    delivery (sender on node 1, recipient on node 2 or 3) in the cluster, and
#    the same path without Redis on the single node (every group on it).
#    Server CPU per delivery sums the nodes; Redis CPU is per message sent.
#    Runs alternate single / cluster, SCALE_RUNS (3) of each; medians.
#
# Everything chorus and Redis run on the server core, the harness on the
# harness core (bench/lib.sh, `pinned`); Redis runs without persistence
# (`--save "" --appendonly no`), its default on a fresh Debian install keeps
# RDB snapshots, which would add fork()s to the figures.
#
# Usage: bench/scale-out.sh [--tiny] [RATE...]   (fan-out rates per talker, default 20 100)
# Environment: SCALE_CONNS (45000), SCALE_NODES (3), SCALE_SHARDS (6),
#   SCALE_RAMP (seconds over which the broadcast's connections open, 30),
#   SCALE_TALKERS (10), SCALE_LISTENERS (90), SCALE_RUNS (3), BENCH_DURATION
#   (fan-out steady seconds, 10). --tiny: 60 connections, 3 shards, 2 talkers
#   and 4 listeners for 1 s at 5 msg/s, one run.
# Raw outputs: bench/out/scale-out/<stamp>/{broadcast,fanout}/<setup>/... and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

nodes=${SCALE_NODES:-3}
conns=${SCALE_CONNS:-45000}
shards=${SCALE_SHARDS:-6}
ramp=${SCALE_RAMP:-30}
quiet=10
drain=10
talkers=${SCALE_TALKERS:-10}
listeners=${SCALE_LISTENERS:-90}
runs=${SCALE_RUNS:-3}
duration=${BENCH_DURATION:-10}
set_rates "20 100" "5" "$@"
if [ "$BENCH_TINY" = 1 ]; then
    conns=${SCALE_CONNS:-60}
    shards=${SCALE_SHARDS:-3}
    ramp=${SCALE_RAMP:-1}
    quiet=2
    drain=2
    talkers=${SCALE_TALKERS:-2}
    listeners=${SCALE_LISTENERS:-4}
    runs=${SCALE_RUNS:-1}
    duration=${BENCH_DURATION:-1}
fi
if [ $((shards % nodes)) -ne 0 ] || [ $((conns % shards)) -ne 0 ]; then
    echo "SCALE_SHARDS ($shards) must be a multiple of SCALE_NODES ($nodes), SCALE_CONNS ($conns) of SCALE_SHARDS" >&2
    exit 2
fi
if ! command -v redis-server > /dev/null; then
    echo "bench/scale-out.sh needs redis-server (Debian: apt-get install redis-server)" >&2
    exit 2
fi

build_all
new_out scale-out

# `start_redis DIR`: redis-server on a free port, pinned with the servers;
# REDIS_PID and REDIS_URL.
start_redis() {
    local dir=$1 port
    port=$(free_port)
    mkdir -p "$dir"
    start_bg "$dir/redis.log" pinned server redis-server --port "$port" --bind 127.0.0.1 --save "" \
        --appendonly no --dir "$dir"
    REDIS_PID=$BG_PID
    REDIS_URL=redis://127.0.0.1:$port
    wait_port "$port" "$REDIS_PID"
}

# `start_nodes DIR COUNT MAX_CONNECTIONS [REDIS_URL]`: COUNT chorus nodes
# (sharing REDIS_URL when given); their pids in NODE_PIDS, URLs in NODE_URLS,
# ports in NODE_PORTS; logs and command lines in DIR/node-<i>.*.
start_nodes() {
    local dir=$1 count=$2 max=$3 redis=${4:-} i port cmd
    NODE_PIDS=()
    NODE_URLS=()
    NODE_PORTS=()
    for i in $(seq "$count"); do
        port=$(free_port)
        cmd="$CHORUS server --addr 127.0.0.1:$port --rate-limit off --max-connections-per-ip 0 --max-connections $max --data $dir/node-$i"
        [ -z "$redis" ] || cmd="$cmd --redis $redis"
        echo "$cmd" > "$dir/node-$i.cmd"
        # shellcheck disable=SC2086 # the command is split on purpose
        RUST_LOG=${RUST_LOG:-warn} start_bg "$dir/node-$i.log" pinned server $cmd
        NODE_PIDS+=("$BG_PID")
        NODE_URLS+=("ws://127.0.0.1:$port/")
        NODE_PORTS+=("$port")
    done
    for i in "${!NODE_PIDS[@]}"; do
        wait_port "${NODE_PORTS[$i]}" "${NODE_PIDS[$i]}"
    done
}

# CPU seconds the nodes (NODE_PIDS) have used so far, together.
nodes_cpu() {
    local total=0 pid
    for pid in "${NODE_PIDS[@]}"; do
        total=$(python3 -c "print($total + $(proc_cpu "$pid"))")
    done
    echo "$total"
}

stop_all() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do
        stop_pid "$pid"
    done
    [ -z "${REDIS_PID:-}" ] || stop_pid "$REDIS_PID"
    REDIS_PID=
}

# `broadcast SETUP NODES CONNS SHARDS [redis]`: part 1 for one setup.
broadcast() {
    local setup=$1 count=$2 total=$3 nshards=$4 redis=${5:-} dir start i shard_pids=() cpu_idle redis_idle
    dir=$OUT/broadcast/$setup
    mkdir -p "$dir"
    echo "broadcast: $setup, $total connections over $count node(s), $nshards shards" >&2
    REDIS_PID=
    if [ -n "$redis" ]; then
        start_redis "$dir"
        start_nodes "$dir" "$count" $((total / count + 100)) "$REDIS_URL"
    else
        start_nodes "$dir" "$count" $((total / count + 100))
    fi
    sed -e "s/^duration = \"5s\" # ramp/duration = \"${ramp}s\" # ramp/" \
        -e "s/^duration = \"10s\" # quiet/duration = \"${quiet}s\" # quiet/" \
        -e "s/^duration = \"10s\" # drain/duration = \"${drain}s\" # drain/" \
        -e "s/^connect_timeout = .*/connect_timeout = \"60s\"/" \
        -e "s/^clients = 18999 #/clients = $((total - 1)) #/" bench/scenarios/idle.toml > "$dir/scenario.toml"
    sleep 1
    start=$(($(date +%s) + 3))
    for i in $(seq "$nshards"); do
        mkdir -p "$dir/shard-$i"
        start_bg "$dir/shard-$i/harness.log" pinned harness timeout --kill-after=5 $((ramp + quiet + drain + 180)) \
            "$CHORUS" run "$dir/scenario.toml" --target "${NODE_URLS[$(((i - 1) % count))]}" \
            --shard "$i/$nshards" --source-addresses "$nshards" --start-at "$start" --out "$dir/shard-$i/result"
        shard_pids+=("$BG_PID")
    done
    # Every connection counted on the nodes' /healthz, then RSS (still idle).
    python3 - "$start" "$((ramp + quiet))" "$total" "${NODE_PORTS[*]}" "${NODE_PIDS[*]}" > "$dir/probe.json" <<'PY'
import json, sys, time, urllib.request
start, limit, want = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
ports, pids = sys.argv[4].split(), sys.argv[5].split()
seen, done_at = 0, None
while time.time() < start + limit:
    counts = []
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                counts.append(json.load(r)["connections"])
        except (OSError, ValueError, KeyError):
            counts.append(0)
    seen = sum(counts)
    if seen >= want:
        done_at = time.time()
        break
    time.sleep(0.05)
time.sleep(1)
rss = [next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS")) for pid in pids]
print(json.dumps({"connect_secs": None if done_at is None else done_at - start, "connections": seen, "rss_kib": rss}))
PY
    cpu_idle=$(nodes_cpu)
    redis_idle=0
    [ -z "$REDIS_PID" ] || redis_idle=$(proc_cpu "$REDIS_PID")
    for pid in "${shard_pids[@]}"; do
        wait "$pid" || [ $? = 3 ] || BENCH_FAILED=$((BENCH_FAILED + 1))
        forget_pid "$pid"
    done
    python3 - "$dir" "$(nodes_cpu)" "$cpu_idle" "$( [ -z "$REDIS_PID" ] && echo 0 || proc_cpu "$REDIS_PID")" \
        "$redis_idle" "$count" "$nshards" "$total" <<'PY'
import json, sys
d = sys.argv[1]
facts = json.load(open(f"{d}/probe.json"))
facts.update(nodes_cpu=float(sys.argv[2]) - float(sys.argv[3]), redis_cpu=float(sys.argv[4]) - float(sys.argv[5]),
             nodes=int(sys.argv[6]), shards=int(sys.argv[7]), planned=int(sys.argv[8]))
json.dump(facts, open(f"{d}/facts.json", "w"), indent=1)
PY
    stop_all
    if [ "$nshards" = 1 ]; then
        cp -r "$dir/shard-1/result" "$dir/merged"
    else
        "$CHORUS" report --merge "$dir"/shard-*/result --out "$dir/merged" > "$dir/merged.log" 2>&1 || [ $? = 3 ] ||
            BENCH_FAILED=$((BENCH_FAILED + 1))
    fi
}

# The fan-out scenario: talkers then two halves of the listeners, one group
# per target (`spread = "group"`).
fanout_file() {
    local rate=$1 file=$2 half=$((listeners / 2))
    cat > "$file" <<EOF
name = "scale-out-fanout"
description = "talkers on node 1, listeners on nodes 2 and 3"
protocol = "chorus"
seed = 1
ramp_up = "2s"
duration = "${duration}s"
drain = "2s"
spread = "group"

[[group]]
name = "talkers"
clients = $talkers
rooms = ["lobby"]
rate = $rate
arrival = "poisson"
text_size = 32

[[group]]
name = "listeners-b"
clients = $half
rooms = ["lobby"]
rate = 0.0

[[group]]
name = "listeners-c"
clients = $((listeners - half))
rooms = ["lobby"]
rate = 0.0
EOF
}

# `fanout_run SETUP RATE RUN`: part 2, one run.
fanout_run() {
    local setup=$1 rate=$2 run=$3 dir targets=() url cpu redis_cpu=0 code=0
    dir=$OUT/fanout/$setup/rate-$rate/run-$run
    mkdir -p "$dir"
    echo "fan-out: $setup, $rate msg/s per talker, run $run" >&2
    REDIS_PID=
    if [ "$setup" = cluster ]; then
        start_redis "$dir"
        start_nodes "$dir" "$nodes" 1000 "$REDIS_URL"
    else
        start_nodes "$dir" 1 1000
    fi
    for url in "${NODE_URLS[@]}"; do
        targets+=(--target "$url")
    done
    fanout_file "$rate" "$dir/scenario.toml"
    cpu=$(nodes_cpu)
    [ -z "$REDIS_PID" ] || redis_cpu=$(proc_cpu "$REDIS_PID")
    (pinned harness timeout --kill-after=5 $((duration + 60)) "$CHORUS" run "$dir/scenario.toml" "${targets[@]}" \
        --out "$dir/result") > "$dir/harness.log" 2>&1 || code=$?
    [ "$code" = 0 ] || [ "$code" = 3 ] || BENCH_FAILED=$((BENCH_FAILED + 1))
    python3 -c "import json; print(json.dumps({'cpu_secs': $(nodes_cpu) - $cpu, 'redis_cpu_secs': $( [ -z "$REDIS_PID" ] && echo 0 || proc_cpu "$REDIS_PID") - $redis_cpu}))" > "$dir/server.cpu"
    stop_all
}

broadcast single 1 $((conns / nodes)) $((shards / nodes))
broadcast cluster "$nodes" "$conns" "$shards" redis
for run in $(seq "$runs"); do
    for rate in "${rates[@]}"; do
        fanout_run single "$rate" "$run"
        fanout_run cluster "$rate" "$run"
    done
done

{
    echo "Scale-out: $nodes chorus nodes and one Redis ($(redis-server --version | cut -d' ' -f3 | cut -d= -f2)) on this machine, against one node."
    echo "Broadcast: $conns connections over $nodes nodes ($shards harness shards) vs $((conns / nodes)) on one node ($((shards / nodes)) shards), connections opened over ${ramp}s."
    echo "Fan-out: $talkers talkers on node 1 and $listeners listeners on nodes 2 and 3, one room, 32-byte texts, ${duration}s steady, $runs run(s) per setup."
    conditions
    echo "nodes started as: RUST_LOG=warn $(cat "$OUT/broadcast/cluster/node-1.cmd")"
    echo
    python3 bench/tables.py scale-out "$OUT"
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
