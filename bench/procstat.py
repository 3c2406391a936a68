"""One sample of a load generator and the chorus server it drives, for the
bench scripts to measure a window of a run: the time, the CPU seconds (user
+ system) used so far by every process of the generator's session (started
with setsid: its workers and helpers included), and the server's counters
of messages accepted and deliveries queued (from its /metrics).

    python3 bench/procstat.py SID PORT    ->  {"t": ..., "cpu": ..., "accepted": ..., "deliveries": ...}
"""

import json
import os
import sys
import time
import urllib.request


def session_cpu(sid):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12)
        if int(fields[3]) == sid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def server_counters(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    sums = {"accepted": 0.0, "deliveries": 0.0}
    for line in text.splitlines():
        name = line.split("{")[0].split(" ")[0]
        if name == "chorus_messages_received_total":
            sums["accepted"] += float(line.rsplit(" ", 1)[1])
        elif name == "chorus_deliveries_total":
            sums["deliveries"] += float(line.rsplit(" ", 1)[1])
    return sums


if __name__ == "__main__":
    sid, port = int(sys.argv[1]), int(sys.argv[2])
    sample = {"t": time.monotonic(), "cpu": session_cpu(sid)}
    sample.update(server_counters(port))
    print(json.dumps(sample))
