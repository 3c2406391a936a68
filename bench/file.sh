#!/usr/bin/env bash
# File transfer under chat: the delivery latency of a room's chat while one
# member uploads a big file (50 MB by default), side by side with the same
# room without the upload, and the upload's throughput. Target: the chat's
# delivery p99 with the upload within 10 % of the p99 without.
#
# The room: BENCH_CLIENTS (20) clients at FILE_RATE (20) msg/s each, 32-byte
# texts, through the harness against a chorus server (SQLite history, files on
# disk). With the upload, a `chorus client` shares the file 2 s into the
# steady phase; its throughput is the file's size over the time from its
# offer to its ack (from the client's own output). Runs alternate (without,
# with), BENCH_RUNS (3) of each, a fresh server each time.
#
# Usage: bench/file.sh [--tiny]
# Environment: BENCH_RUNS, BENCH_CLIENTS, BENCH_DURATION (steady seconds, 20),
#   FILE_MB (50), FILE_RATE (20). --tiny: 5 clients, 3 s, 2 MB, one run each.
# Raw outputs: bench/out/file/<stamp>/<mode>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

load_settings 20
clients=${BENCH_CLIENTS:-20}
rate=${FILE_RATE:-20}
mb=${FILE_MB:-50}
if [ "$BENCH_TINY" = 1 ]; then
    clients=${BENCH_CLIENTS:-5}
    duration=${BENCH_DURATION:-3}
    mb=${FILE_MB:-2}
fi

build_all
new_out file
head -c "$((mb * 1000 * 1000))" /dev/urandom > "$OUT/big.bin"

for run in $(seq "$runs"); do
    for mode in without with; do
        dir=$OUT/$mode/run-$run
        echo "$mode upload, run $run" >&2
        start_server chorus "$dir"
        fanout_scenario chorus "$rate" "$dir/scenario.toml"
        start_bg "$dir/harness.log" pinned harness timeout --kill-after=5 $((duration + 60)) \
            "$CHORUS" run "$dir/scenario.toml" --target "$SERVER_URL" --out "$dir/result"
        harness=$BG_PID
        if [ "$mode" = with ]; then
            sleep "$(python3 -c "print($ramp + 2)")"
            started=$(date +%s.%N)
            printf '/file %s\n' "$OUT/big.bin" |
                NO_COLOR=1 timeout 300 "$CHORUS" client "$SERVER_URL" --downloads "$dir/downloads" > "$dir/uploader.log" 2>&1 ||
                BENCH_FAILED=$((BENCH_FAILED + 1))
            ended=$(date +%s.%N)
            grep -q "^\* sent big.bin" "$dir/uploader.log" || BENCH_FAILED=$((BENCH_FAILED + 1))
            echo "{\"seconds\": $(python3 -c "print($ended - $started)"), \"bytes\": $((mb * 1000 * 1000))}" > "$dir/upload.json"
        fi
        wait "$harness" || true
        forget_pid "$harness"
        stop_pid "$SERVER_PID"
        [ -f "$dir/result/summary.json" ] || BENCH_FAILED=$((BENCH_FAILED + 1))
    done
done

{
    echo "File transfer under chat: $clients clients in one room at $rate msg/s each (32-byte texts),"
    echo "${duration}s steady, with and without one client uploading a ${mb} MB file; $runs run(s) each."
    conditions
    echo
    python3 - "$OUT" "$runs" <<'PY'
import json, os, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def summary(mode, run):
    path = f"{out}/{mode}/run-{run}/result/summary.json"
    return json.load(open(path)) if os.path.exists(path) else None
def p(s, stat):
    return (s or {}).get("latency", {}).get("delivery", {}).get(stat)
# The uploader is a member of the room the harness does not read: each chat's
# ack counts it as a recipient, so the delivery ratio with the upload is
# below 1 by its share and says nothing; the latencies are the bots' own.
print("| upload | run | p50 ms | p99 ms | upload MB/s |")
print("|---|---:|---:|---:|---:|")
p99 = {"without": [], "with": []}
speeds = []
for mode in ("without", "with"):
    for run in range(1, runs + 1):
        s = summary(mode, run)
        speed = ""
        up = f"{out}/{mode}/run-{run}/upload.json"
        if os.path.exists(up):
            u = json.load(open(up))
            speed = u["bytes"] / 1e6 / u["seconds"] if u["seconds"] > 0 else None
            speeds.append(speed)
            speed = f"{speed:.1f}"
        if p(s, "p99_ms") is not None:
            p99[mode].append(p(s, "p99_ms"))
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        print(f"| {mode} | {run} | {fmt(p(s, 'p50_ms'))} | {fmt(p(s, 'p99_ms'))} | {speed} |")
if p99["without"] and p99["with"]:
    a, b = statistics.median(p99["without"]), statistics.median(p99["with"])
    print()
    print(f"median delivery p99: without {a:.2f} ms, with the upload {b:.2f} ms: ratio {b / a:.2f} (target <= 1.10)")
if speeds:
    print(f"median upload throughput: {statistics.median(speeds):.1f} MB/s")
PY
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
