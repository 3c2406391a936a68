#!/usr/bin/env bash
# The chorus load harness beside two peer load generators, Artillery 2 (its
# ws engine, from npm) and Tsung 1.7 (Debian's package), driving the same
# chorus server one at a time: server pinned to one core, generator to the
# other, a fresh server for every measurement.
#
# Loads (100 connections each):
#   send-R    R messages a second in all, every connection in a room of its own
#             (no fan-out: what is measured is sending and the acks coming back)
#   fanout-R  R messages a second per connection, all in one room (each message
#             to the 99 others)
# Every generator sends 32-byte plain-text frames (chorus's harness with its
# chorus-plain protocol, the stamp in the text). A window of 10 s in the middle
# of each run is measured: the messages the server accepted and the deliveries
# it queued (its /metrics before and after), and the CPU the generator's
# processes used (all of its session: Node's workers, Erlang's VM; see
# bench/procstat.py). `held` = accepted / asked; CPU per message = generator CPU
# / (accepted + deliveries received by its connections).
# tinygen (examples/tinygen.rs: sends on a timer, counts what arrives, nothing
# else: no stamps, no acks matched, no histograms) runs every load too, as the
# floor a generator's CPU per message is compared with (for the send loads
# each of its clients asks for a room of its own, `?room=r{i}`).
#
# Usage: bench/peers-harness.sh [--tiny] [loads...]   (default send-1000 send-10000 send-50000 fanout-10)
# Environment: BENCH_RUNS (3), PEER_TOOLS ("chorus artillery tsung tinygen"),
#   CHORUS_BASELINE=path/to/another/chorus: adds `chorus-baseline`, that
#   build's harness against the same server, for a before / after in one run.
# Installs Artillery (npm, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1) into
# bench/peers/artillery/node_modules and Tsung (apt) when missing; a tool that
# cannot be installed is skipped and said so.
# Raw outputs: bench/out/peers-harness/<stamp>/<load>/<tool>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

set_rates "send-1000 send-10000 send-50000 fanout-10" "send-200 fanout-2" "$@"
loads=("${rates[@]}")
runs=${BENCH_RUNS:-3}
read -r -a tools <<< "${PEER_TOOLS:-chorus artillery tsung tinygen}"
if [ -n "${CHORUS_BASELINE:-}" ] && [[ " ${tools[*]} " != *" chorus-baseline "* ]]; then
    tools+=(chorus-baseline)
fi
clients=100
window=10
if [ "$BENCH_TINY" = 1 ]; then
    runs=1
    clients=4
    window=1
fi
# Each generator sends this long once connected: a second to settle, the
# window, and a few seconds of margin after it.
sending=$((window + 5))

bench/peers/install.sh artillery tsung || true
have_tool() {
    case "$1" in
    artillery) [ -x bench/peers/artillery/node_modules/.bin/artillery ] ;;
    tsung) command -v tsung > /dev/null ;;
    *) return 0 ;;
    esac
}
build_all
new_out peers-harness

# `load_rate LOAD`: messages per second per connection.
load_rate() {
    python3 -c "
kind, rate = '$1'.split('-')
print(float(rate) / $clients if kind == 'send' else float(rate))"
}

# `room_of LOAD I`: the room connection I joins.
room_of() {
    case "$1" in send-*) echo "r$2" ;; *) echo lobby ;; esac
}

# Write each tool's configuration for LOAD into DIR; echo the command to run.
configure() {
    local tool=$1 load=$2 dir=$3 rate think count
    rate=$(load_rate "$load")
    think=$(python3 -c "print(round(1 / $rate, 6))")
    count=$(python3 -c "print(int($rate * $sending))")
    case "$tool" in
    chorus | chorus-baseline)
        {
            echo "name = \"peers-$load\""
            echo "protocol = \"chorus-plain\""
            echo "ramp_up = \"1s\""
            echo "duration = \"${sending}s\""
            echo "drain = \"1s\""
            echo "[[group]]"
            echo "name = \"senders\""
            echo "clients = $clients"
            if [[ $load == send-* ]]; then
                echo "rooms = [$(for i in $(seq "$clients"); do printf '"r%s",' "$i"; done | sed 's/,$//')]"
            fi
            echo "rate = $rate"
            echo "text_size = 32"
        } > "$dir/scenario.toml"
        local harness=$CHORUS
        [ "$tool" = chorus ] || harness=$CHORUS_BASELINE
        echo "$harness run $dir/scenario.toml --target $SERVER_URL --out $dir/result"
        ;;
    artillery)
        local path="/"
        [[ $load == send-* ]] && path="/?room=r{{ \$randomNumber(1, 1000000000) }}"
        cat > "$dir/artillery.yml" <<EOF
config:
  target: "${SERVER_URL%/}"
  phases:
    - duration: 1
      arrivalCount: $clients
  # Sub-second think times are written in ms: a bare 0.02 would be 0.02 ms.
scenarios:
  - engine: ws
    flow:
      - connect: "${SERVER_URL%/}$path"
      - loop:
          - send: "artillery load test message 0001"
          - think: "$(python3 -c "print(max(1, round(1000 * $think)))")ms"
        count: $count
EOF
        echo "node bench/peers/artillery/node_modules/artillery/bin/run run --quiet $dir/artillery.yml"
        ;;
    tsung)
        local path="/"
        [[ $load == send-* ]] && path="/?room=%%_room%%"
        local port=${SERVER_URL##*:}
        port=${port%/}
        # Tsung's arrivals are random (exponential gaps): a one-second phase at
        # $clients a second starts about 90 users, not $clients. A longer phase
        # capped by maxnumber starts all of them in about a second.
        cat > "$dir/tsung.xml" <<EOF
<?xml version="1.0"?>
<!DOCTYPE tsung SYSTEM "/usr/share/tsung/tsung-1.0.dtd">
<tsung loglevel="error" dumptraffic="false">
  <clients><client host="localhost" use_controller_vm="true" maxusers="$((clients * 2))"/></clients>
  <servers><server host="127.0.0.1" port="$port" type="tcp"/></servers>
  <load><arrivalphase phase="1" duration="10" unit="second"><users maxnumber="$clients" arrivalrate="$clients" unit="second"/></arrivalphase></load>
  <sessions>
    <session name="chat" probability="100" type="ts_websocket">
      <setdynvars sourcetype="random_string" length="12"><var name="room"/></setdynvars>
      <request subst="true"><websocket type="connect" path="$path"/></request>
      <for from="1" to="$count" incr="1" var="i">
        <request><websocket type="message" ack="no_ack">tsung load test message 00000001</websocket></request>
        <thinktime value="$think" random="false"/>
      </for>
    </session>
  </sessions>
</tsung>
EOF
        echo "tsung -f $dir/tsung.xml -l $dir/log start"
        ;;
    tinygen)
        local url=$SERVER_URL
        [[ $load == send-* ]] && url="${SERVER_URL}?room=r{i}"
        echo "$TINYGEN $url $clients $rate $sending 32"
        ;;
    esac
}

# The server's counter NAME summed over its labels.
server_counter() {
    curl -s "http://127.0.0.1:${SERVER_URL##*:}metrics" 2> /dev/null |
        awk -v name="$1" '$1 ~ "^"name"({|$)" { sum += $NF } END { printf "%d\n", sum }'
}

# `wait_connected N SECONDS`: until the server counts N open WebSocket sessions.
wait_connected() {
    local want=$1 i
    for i in $(seq $(($2 * 10))); do
        [ "$(server_counter chorus_connections)" -ge "$want" ] && return 0
        sleep 0.1
    done
    return 1
}

# One measurement: a fresh server, TOOL's LOAD, the window sampled.
measure() {
    local tool=$1 load=$2 dir=$3 cmd sid port
    mkdir -p "$dir"
    start_server chorus "$dir"
    cmd=$(configure "$tool" "$load" "$dir")
    port=${SERVER_URL##*:}
    port=${port%/}
    echo "$cmd" > "$dir/command"
    # setsid: the generator and everything it starts share one session to sample.
    # shellcheck disable=SC2086 # the command is split on purpose
    start_bg "$dir/tool.log" pinned harness setsid timeout --kill-after=5 $((sending + 60)) $cmd
    sid=$BG_PID
    # The window opens a second after every connection is up (Artillery takes
    # seconds to start), and is valid only if the generator still runs at its end.
    wait_connected "$clients" 60 || echo "  $tool $load: not all $clients connections came up" >&2
    sleep 1
    python3 bench/procstat.py "$sid" "$port" > "$dir/window-start.json"
    sleep "$window"
    python3 bench/procstat.py "$sid" "$port" > "$dir/window-end.json"
    if ! kill -0 "$sid" 2> /dev/null; then
        echo "  $tool $load: the generator ended inside the window (see $dir/tool.log)" >&2
        return 1
    fi
    wait "$sid" || echo "  $tool $load exited with $? (see $dir/tool.log)" >&2
    forget_pid "$sid"
    stop_pid "$SERVER_PID"
    python3 - "$dir" <<EOF
import json, sys
d = sys.argv[1]
a, b = (json.load(open(f"{d}/window-{w}.json")) for w in ("start", "end"))
json.dump({"tool": "$tool", "load": "$load", "asked_per_sec": $(load_rate "$load") * $clients,
           "window_secs": b["t"] - a["t"], "generator_cpu_secs": b["cpu"] - a["cpu"],
           "accepted": b["accepted"] - a["accepted"], "deliveries": b["deliveries"] - a["deliveries"]},
          open(f"{d}/measure.json", "w"))
EOF
}

total=$((runs * ${#loads[@]} * ${#tools[@]}))
step=0
for run in $(seq "$runs"); do
    for load in "${loads[@]}"; do
        for tool in "${tools[@]}"; do
            step=$((step + 1))
            if ! have_tool "$tool"; then
                echo "[$step/$total] $tool is not installed: skipped" >&2
                continue
            fi
            echo "[$step/$total] $tool, $load, run $run" >&2
            measure "$tool" "$load" "$OUT/$load/$tool/run-$run" || BENCH_FAILED=$((BENCH_FAILED + 1))
        done
    done
done

{
    echo "Load generators side by side against one chorus server: $clients connections, 32-byte texts,"
    echo "a ${window} s window in the middle of each run, medians of $runs run(s)."
    conditions
    echo
    python3 bench/tables.py peers "$OUT"
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
