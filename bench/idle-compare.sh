#!/usr/bin/env bash
# Idle memory before / after a change: 2,000 idle connections in 20 rooms of
# 100 (bench/scenarios/idle-rooms.toml) to chorus and, with CHORUS_BASELINE
# set, to chorus built from another commit, alternately, IDLE_RUNS (2) times
# each; a fresh server every time. Prints the server's RSS per connection
# (VmRSS 4 s into the steady phase minus VmRSS before the first connection,
# over the connections /healthz counts). Smaller than bench/idle.sh and in
# rooms of 100, so that older builds without the presence limit take it too.
#
# Usage: [CHORUS_BASELINE=path/to/other/chorus] bench/idle-compare.sh [--tiny]
# IDLE_CONNS (2,000) idle connections; BENCH_TINY=1 (= --tiny): 100 connections, one run.
# Raw outputs: bench/out/idle-compare/<stamp>/<server>/run-<n>/ and table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

runs=${IDLE_RUNS:-2}
conns=${IDLE_CONNS:-2000}
[ "$BENCH_TINY" = 0 ] || { runs=1; conns=100; }
servers=(chorus)
[ -z "${CHORUS_BASELINE:-}" ] || servers+=(chorus-baseline)

build_all
new_out idle-compare
for run in $(seq "$runs"); do
    for server in "${servers[@]}"; do
        dir=$OUT/$server/run-$run
        echo "$server, run $run" >&2
        start_server "$server" "$dir"
        sed "s/^clients = .*/clients = $conns/" bench/scenarios/idle-rooms.toml > "$dir/scenario.toml"
        before=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
        start_bg "$dir/harness.log" pinned harness timeout --kill-after=5 60 \
            "$CHORUS" run "$dir/scenario.toml" --target "$SERVER_URL" --out "$dir/result"
        harness=$BG_PID
        sleep 6
        after=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
        port=${SERVER_URL#ws://127.0.0.1:}
        open=$(python3 -c "import json, urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:${port%/}/healthz'))['connections'])")
        wait "$harness" || BENCH_FAILED=$((BENCH_FAILED + 1))
        forget_pid "$harness"
        stop_pid "$SERVER_PID"
        echo "{\"rss_before_kib\": $before, \"rss_after_kib\": $after, \"connections\": $open}" > "$dir/rss.json"
    done
done

{
    echo "Idle memory: $conns idle connections in rooms of 100, $runs run(s) per server."
    conditions
    [ -z "${CHORUS_BASELINE:-}" ] || echo "chorus-baseline: $CHORUS_BASELINE"
    echo
    echo "| server | run | connections | RSS before KiB | RSS after KiB | KiB per connection |"
    echo "|---|---:|---:|---:|---:|---:|"
    for server in "${servers[@]}"; do
        for run in $(seq "$runs"); do
            python3 - "$OUT/$server/run-$run/rss.json" "$server" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
per = (r["rss_after_kib"] - r["rss_before_kib"]) / max(r["connections"], 1)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['connections']:,} | {r['rss_before_kib']:,} | {r['rss_after_kib']:,} | **{per:.2f}** |")
PY
        done
    done
} | tee "$OUT/table.md"
echo "raw outputs: $OUT" >&2
bench_status
