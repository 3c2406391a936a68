# Shared by the bench scripts (sourced, not run): building, free ports, CPU
# pinning, starting the servers under test, and stopping every process a
# script started when it exits, however it exits.
#
# Pinning: with 2+ cores the server under test runs on core BENCH_SERVER_CPU
# (default 0) and the load generator on BENCH_HARNESS_CPU (default 1), so
# neither steals the other's CPU. With one core nothing is pinned. Other
# processes on the machine still share those cores: see BENCH_NICE below.

BENCH_SERVER_CPU=${BENCH_SERVER_CPU:-0}
BENCH_HARNESS_CPU=${BENCH_HARNESS_CPU:-1}
PYTHON_PEER=bench/peers/python-websockets/.venv/bin/python
BENCH_PIDS=()
# Measurements that failed (the script still prints what it has, then exits 1).
BENCH_FAILED=0

# Every process started with `start_bg` is stopped on exit (TERM, then KILL).
bench_cleanup() {
    local pid
    for pid in "${BENCH_PIDS[@]}"; do
        stop_pid "$pid"
    done
    BENCH_PIDS=()
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# The tiny configuration (CI): BENCH_TINY=1 or --tiny as the first argument.
# It checks that the scripts still work, not how fast anything is, so it uses
# the debug build CI has anyway (BENCH_PROFILE=release to override).
BENCH_TINY=${BENCH_TINY:-0}
if [ "${1:-}" = "--tiny" ]; then
    BENCH_TINY=1
    shift
fi
if [ "$BENCH_TINY" = 1 ]; then
    BENCH_PROFILE=${BENCH_PROFILE:-debug}
else
    BENCH_PROFILE=${BENCH_PROFILE:-release}
fi
CHORUS=./target/$BENCH_PROFILE/chorus
RELAY=./target/$BENCH_PROFILE/examples/relay
TINYGEN=./target/$BENCH_PROFILE/examples/tinygen

# Build the server, the harness and the examples.
build_all() {
    local profile=()
    [ "$BENCH_PROFILE" = debug ] || profile=(--profile "$BENCH_PROFILE")
    cargo build "${profile[@]}" -q --example relay --example tinygen
    cargo build "${profile[@]}" -q
}

# Exit 1 if any measurement failed (after the table was printed).
bench_status() {
    if [ "$BENCH_FAILED" != 0 ]; then
        echo "$BENCH_FAILED measurement(s) failed: see the logs under $OUT" >&2
        exit 1
    fi
}

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# `pinned server|harness CMD...`: run CMD on its core, at niceness
# BENCH_NICE (default 0; a negative value, as root, lets the measured
# processes win the CPU from other work on a shared machine). nice and taskset
# exec CMD, so a background job's pid is CMD's own.
pinned() {
    local role=$1 cpu
    shift
    cpu=$BENCH_HARNESS_CPU
    [ "$role" != server ] || cpu=$BENCH_SERVER_CPU
    if [ "$(nproc)" -lt 2 ]; then
        exec nice -n "${BENCH_NICE:-0}" "$@"
    fi
    exec nice -n "${BENCH_NICE:-0}" taskset -c "$cpu" "$@"
}

# `start_bg LOG CMD...`: CMD in the background, output to LOG; its pid in
# BG_PID (a function as CMD must end in `exec`, as `pinned` does).
start_bg() {
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    BG_PID=$!
    BENCH_PIDS+=("$BG_PID")
}

# Stop one process we started: TERM, up to 5 s, then KILL.
stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
}

# `forget_pid PID`: the process ended (waited for): no need to stop it on exit.
forget_pid() {
    local kept=() i
    for i in "${BENCH_PIDS[@]}"; do
        [ "$i" = "$1" ] || kept+=("$i")
    done
    BENCH_PIDS=("${kept[@]}")
}

# Wait until 127.0.0.1:PORT accepts connections (PID must stay alive).
wait_port() {
    local port=$1 pid=$2 i
    for i in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server (pid $pid) exited before listening on port $port" >&2
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$port after 10 s" >&2
    return 1
}

# The command line of each server under test, on 127.0.0.1:PORT. chorus runs
# with its abuse limits off (per-connection rate limit, per-address cap), as
# a load test from one machine needs. Extra chorus flags: CHORUS_FLAGS.
# chorus keeps history as it does by default (SQLite in DIR/data, synchronous
# FULL); bench/history.sh compares that with its other history settings:
# chorus-sqlite-normal, chorus-memory and chorus-history-off.
# chorus-baseline is chorus built from another commit, for before / after
# figures in the same run: CHORUS_BASELINE=path/to/that/chorus.
server_command() {
    local name=$1 port=$2 dir=$3 history=
    case "$name" in
    chorus-sqlite-normal) history="--history-sync normal" ;;
    chorus-memory) history="--history memory" ;;
    chorus-history-off) history="--history off" ;;
    esac
    case "$name" in
    chorus-baseline)
        echo "${CHORUS_BASELINE:?chorus-baseline needs CHORUS_BASELINE=path/to/another/chorus} server --addr 127.0.0.1:$port --rate-limit off --max-connections-per-ip 0 --data $dir/data ${CHORUS_FLAGS:-}"
        ;;
    chorus | chorus-plain | chorus-sqlite-normal | chorus-memory | chorus-history-off)
        echo "$CHORUS server --addr 127.0.0.1:$port --rate-limit off --max-connections-per-ip 0 --data $dir/data $history ${CHORUS_FLAGS:-}"
        ;;
    relay) echo "$RELAY 127.0.0.1:$port" ;;
    node-ws) echo "node bench/peers/node-ws/relay.js 127.0.0.1:$port" ;;
    python-websockets) echo "$PYTHON_PEER bench/peers/python-websockets/relay.py 127.0.0.1:$port" ;;
    *)
        echo "unknown server $name (chorus, chorus-plain, chorus-baseline, chorus-sqlite-normal, chorus-memory, chorus-history-off, relay, node-ws, python-websockets)" >&2
        return 2
        ;;
    esac
}

# The harness protocol each server is driven with.
server_protocol() {
    case "$1" in
    chorus | chorus-baseline | chorus-sqlite-normal | chorus-memory | chorus-history-off) echo chorus ;;
    chorus-plain) echo chorus-plain ;;
    *) echo raw ;;
    esac
}

# `start_server NAME DIR`: start NAME pinned to its core on a free port, wait
# until it listens; sets SERVER_PID and SERVER_URL, logs to DIR/server.log.
start_server() {
    local name=$1 dir=$2 port cmd
    port=$(free_port)
    cmd=$(server_command "$name" "$port" "$dir")
    mkdir -p "$dir"
    echo "$cmd" > "$dir/server.cmd"
    # shellcheck disable=SC2086 # the command is split on purpose
    RUST_LOG=${RUST_LOG:-warn} start_bg "$dir/server.log" pinned server $cmd
    SERVER_PID=$BG_PID
    SERVER_URL="ws://127.0.0.1:$port/"
    wait_port "$port" "$SERVER_PID"
}

# `run_harness SECONDS_LIMIT ARGS...`: chorus run on the harness core, bounded
# in time; a failed threshold (exit 3) is data, not an error.
run_harness() {
    local limit=$1
    shift
    local code=0
    (pinned harness timeout --kill-after=5 "$limit" "$CHORUS" run "$@") || code=$?
    case "$code" in
    0 | 3) return 0 ;;
    *)
        echo "  chorus run $* exited with $code" >&2
        return "$code"
        ;;
    esac
}

# CPU seconds (user + system, every thread) process PID has used so far.
proc_cpu() {
    sed 's/.*) //' "/proc/$1/stat" | awk -v tck="$(getconf CLK_TCK)" '{print ($12 + $13) / tck}'
}

# Install the peers' pinned packages if they are missing (quietly).
need_peers() {
    local want=()
    for name in "$@"; do
        case "$name" in
        node-ws) want+=(node) ;;
        python-websockets) want+=(python) ;;
        esac
    done
    if [ "${#want[@]}" -gt 0 ]; then
        bench/peers/install.sh "${want[@]}"
    fi
}

# What this machine is, for the figures' conditions.
machine_line() {
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(. /etc/os-release && echo "$PRETTY_NAME"), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
}

# The load settings of fanout.sh, latency.sh and generator.sh, from the
# environment: BENCH_RUNS (3), BENCH_CLIENTS (100), BENCH_DURATION (steady
# seconds, default $1); with BENCH_TINY: 1 run of 5 clients for 1 s.
load_settings() {
    runs=${BENCH_RUNS:-3}
    clients=${BENCH_CLIENTS:-100}
    duration=${BENCH_DURATION:-$1}
    ramp=2
    drain=2
    if [ "$BENCH_TINY" = 1 ]; then
        runs=${BENCH_RUNS:-1}
        clients=${BENCH_CLIENTS:-5}
        duration=${BENCH_DURATION:-1}
        ramp=0.5
        drain=0.5
    fi
}

# `set_rates DEFAULT TINY ARGS...`: the caller's array `rates`: the script's
# arguments, else DEFAULT, or TINY in the tiny configuration.
set_rates() {
    local default=$1 tiny=$2
    shift 2
    if [ $# -gt 0 ]; then
        read -r -a rates <<< "$*"
    elif [ "$BENCH_TINY" = 1 ]; then
        read -r -a rates <<< "$tiny"
    else
        read -r -a rates <<< "$default"
    fi
}

# `set_servers DEFAULT`: the caller's array `servers`, from BENCH_SERVERS or DEFAULT.
set_servers() {
    read -r -a servers <<< "${BENCH_SERVERS:-$1}"
}

# `fanout_table KIND HEADER...`: the HEADER lines, the conditions, chorus's
# command line and `tables.py KIND` for the runs of `fanout_runs`, on the
# terminal and in OUT/table.md; then exit 1 if a measurement failed.
fanout_table() {
    local kind=$1
    shift
    {
        printf '%s\n' "$@"
        conditions
        echo "chorus started as: RUST_LOG=warn $(server_command chorus PORT "$OUT/chorus/rate-R/run-N")"
        echo
        python3 bench/tables.py "$kind" "$OUT"
    } | tee "$OUT/table.md"
    echo "raw outputs: $OUT" >&2
    bench_status
}

# `new_out NAME`: a fresh bench/out/NAME/<stamp>/ holding machine.txt; its path in OUT.
new_out() {
    OUT=bench/out/$1/$(date +%Y%m%d-%H%M%S)
    mkdir -p "$OUT"
    machine_line > "$OUT/machine.txt"
}

# The conditions line of a table: pinning and machine.
conditions() {
    echo "Server pinned to CPU $BENCH_SERVER_CPU, load generator to CPU $BENCH_HARNESS_CPU (taskset), niceness ${BENCH_NICE:-0}."
    echo "$(cat "$OUT/machine.txt")."
}

# `fanout_scenario SERVER RATE FILE`: bench/scenarios/fanout.toml with this
# measurement's protocol, rate, clients, text size and phase lengths (from the
# caller's variables clients, duration, ramp, drain). Every protocol sends
# 32-byte texts (raw and chorus-plain carry the stamp in them).
fanout_scenario() {
    local server=$1 rate=$2 file=$3 protocol size=32
    protocol=$(server_protocol "$server")
    sed -e "s/^protocol = .*/protocol = \"$protocol\"/" -e "s/^rate = .*/rate = $rate/" \
        -e "s/^clients = .*/clients = $clients/" -e "s/^text_size = .*/text_size = $size/" \
        -e "s/^duration = .*/duration = \"${duration}s\"/" -e "s/^ramp_up = .*/ramp_up = \"${ramp}s\"/" \
        -e "s/^drain = .*/drain = \"${drain}s\"/" bench/scenarios/fanout.toml > "$file"
}

# `fanout_runs OUT`: every (run, rate, server) of the caller's arrays `rates`
# and `servers` and count `runs`, interleaved so that noise spreads over all
# servers alike; a fresh server process for each. Results in
# OUT/<server>/rate-<r>/run-<n>/.
fanout_runs() {
    local out=$1 total step=0 limit run rate server dir cpu
    total=$((runs * ${#rates[@]} * ${#servers[@]}))
    limit=$(python3 -c "print(int($ramp + $duration + $drain + 60))")
    for run in $(seq "$runs"); do
        for rate in "${rates[@]}"; do
            for server in "${servers[@]}"; do
                step=$((step + 1))
                dir=$out/$server/rate-$rate/run-$run
                echo "[$step/$total] $server, $rate msg/s per client, run $run" >&2
                start_server "$server" "$dir"
                fanout_scenario "$server" "$rate" "$dir/scenario.toml"
                cpu=$(proc_cpu "$SERVER_PID")
                run_harness "$limit" "$dir/scenario.toml" --target "$SERVER_URL" --out "$dir/result" \
                    > "$dir/harness.log" 2>&1 || BENCH_FAILED=$((BENCH_FAILED + 1))
                echo "{\"cpu_secs\": $(python3 -c "print($(proc_cpu "$SERVER_PID") - $cpu)")}" > "$dir/server.cpu"
                stop_pid "$SERVER_PID"
            done
        done
    done
}
