"""Tables for the bench scripts: read the raw outputs a script left under
bench/out/<script>/<stamp>/ and print Markdown tables (medians over the
repeated runs), ready to paste into bench/README.md.

    python3 bench/tables.py fanout|latency|history|generator|idle|capacity|scale-out DIR
"""

import json
import statistics
import sys
from pathlib import Path

# A rate "holds" when every message arrived and delivery p99 stayed under this.
P99_LIMIT_MS = 50.0
SERVERS = ["chorus", "chorus-baseline", "chorus-plain", "relay", "node-ws", "python-websockets"]
HISTORY = ["chorus", "chorus-sqlite-normal", "chorus-memory", "chorus-history-off"]
HISTORY_NAMES = {
    "chorus": "SQLite, sync FULL (default)",
    "chorus-sqlite-normal": "SQLite, sync NORMAL",
    "chorus-memory": "memory",
    "chorus-history-off": "off",
}
# Every server name a script may use (the history settings are chorus too).
ALL_SERVERS = SERVERS + HISTORY[1:]
PAIRS = [("chorus", "chorus-baseline"), ("chorus", "relay"), ("chorus-memory", "relay"), ("chorus-history-off", "relay"), ("chorus-plain", "relay"), ("chorus", "node-ws"), ("chorus", "python-websockets")]


def load(path):
    with open(path) as f:
        return json.load(f)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def summaries(dir_):
    """summary.json of each run-N/result folder under dir_, in run order, with
    the server's CPU seconds over the run (server.cpu) added as `server_cpu`."""
    out = []
    for path in sorted(Path(dir_).glob("run-*/result/summary.json")):
        summary = load(path)
        cpu = path.parent.parent / "server.cpu"
        summary["server_cpu"] = load(cpu)["cpu_secs"] if cpu.exists() else None
        out.append(summary)
    return out


def server_cpu_percent(s):
    return None if s["server_cpu"] is None else s["server_cpu"] / s["run"]["duration_secs"] * 100


def server_us_per_delivery(s):
    received = s["messages"]["received"]
    return None if s["server_cpu"] is None or not received else s["server_cpu"] / received * 1e6


def runs_of(root, server):
    """{rate: [summary, ...]} for one server."""
    out = {}
    for rate_dir in sorted((root / server).glob("rate-*"), key=lambda p: float(p.name[5:])):
        out[float(rate_dir.name[5:])] = summaries(rate_dir)
    return out


def latency(summary, stat):
    return summary["latency"].get("delivery", {}).get(stat)


def cell(runs):
    """Medians of one (server, rate) over its runs."""
    suspect = sum(1 for s in runs if s["run"]["suspect"])
    return {
        "sent": median([s["throughput"]["sent_per_sec"] for s in runs]),
        "delivered": median([s["throughput"]["delivered_per_sec"] for s in runs]),
        "ratio": median([s["delivery"]["ratio"] for s in runs]),
        "p50": median([latency(s, "p50_ms") for s in runs]),
        "p99": median([latency(s, "p99_ms") for s in runs]),
        "p999": median([latency(s, "p999_ms") for s in runs]),
        "ack50": median([s["latency"].get("ack", {}).get("p50_ms") for s in runs]),
        "ack99": median([s["latency"].get("ack", {}).get("p99_ms") for s in runs]),
        "max": median([latency(s, "max_ms") for s in runs]),
        "cpu": median([s["run"]["generator_cpu_percent"] for s in runs]),
        "server_cpu": median([server_cpu_percent(s) for s in runs]),
        "server_us": median([server_us_per_delivery(s) for s in runs]),
        "suspect": suspect,
        "n": len(runs),
    }


def holds(c):
    return c["ratio"] is not None and c["ratio"] >= 0.9999995 and c["p99"] is not None and c["p99"] < P99_LIMIT_MS


def fanout(root):
    servers = [s for s in ALL_SERVERS if (root / s).is_dir()]
    print(
        "| server | rate/client | sent/s | delivered/s | ratio | p50 ms | p99 ms "
        "| server CPU % | server µs CPU/delivery | harness CPU % | suspect |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    best, cost = {}, {}
    for server in servers:
        for rate, runs in runs_of(root, server).items():
            if not runs:
                continue
            c = cell(runs)
            # No rate (a run without a whole steady second, tiny CI runs): not a highest rate.
            if holds(c) and (c["delivered"] or 0) > best.get(server, (0, 0, 0))[0]:
                best[server] = (c["delivered"], rate, c["suspect"])
            # A run too short for the CPU clock to tick (tiny CI runs) measures 0 µs: no figure.
            if holds(c) and not c["suspect"] and c["server_us"]:
                cost.setdefault(server, (c["server_us"], rate))
            print(
                f"| {server} | {rate:g} | {fmt(c['sent'])} | {fmt(c['delivered'])} | {fmt(c['ratio'], 6)} "
                f"| {fmt(c['p50'], 2)} | {fmt(c['p99'], 2)} | {fmt(c['server_cpu'])} | {fmt(c['server_us'], 2)} "
                f"| {fmt(c['cpu'])} | {suspect_cell(c['suspect'], c['n'])} |"
            )
    print()
    print(f"Highest delivered/s with ratio 1.0 and p99 < {P99_LIMIT_MS:g} ms (medians):")
    print()
    print("| server | delivered/s | at rate/client | note |")
    print("|---|---:|---:|---|")
    for server in servers:
        if server in best:
            delivered, rate, suspect = best[server]
            note = "harness SUSPECT there: a lower bound" if suspect else ""
            print(f"| {server} | {fmt(delivered)} | {rate:g} | {note} |")
        else:
            print(f"| {server} | - | none held | |")
    print()
    print("Ratios of the highest sustained delivered/s (above 1: chorus delivers more):")
    print()
    print_ratios(best)
    print()
    print("Server CPU per delivered message at the lowest rate that held, harness not SUSPECT")
    print("(a cost comparison that holds even where the harness, not the server, is the limit):")
    print()
    print("| server | µs CPU per delivery | at rate/client |")
    print("|---|---:|---:|")
    for server in servers:
        if server in cost:
            print(f"| {server} | {cost[server][0]:.2f} | {cost[server][1]:g} |")
    print()
    print("Ratios of CPU cost per delivery (below 1: chorus spends less):")
    print()
    print_ratios(cost)


def print_ratios(figures):
    """`- a / b: ratio` for each of PAIRS measured, from {server: (figure, ...)}."""
    for a, b in PAIRS:
        if a in figures and b in figures and figures[b][0] > 0:
            print(f"- {a} / {b}: {figures[a][0] / figures[b][0]:.2f}")


def history(root):
    """Each history setting of bench/history.sh, and its cost against --history off."""
    settings = [s for s in HISTORY if (root / s).is_dir()]
    print(
        "| history | rate/client | delivered/s | ratio | ack p50 ms | ack p99 ms | delivery p99 ms "
        "| server CPU % | server µs CPU/delivery | suspect |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    cells = {}
    for setting in settings:
        for rate, runs in runs_of(root, setting).items():
            if not runs:
                continue
            c = cells[setting, rate] = cell(runs)
            print(
                f"| {HISTORY_NAMES[setting]} | {rate:g} | {fmt(c['delivered'])} | {fmt(c['ratio'], 6)} "
                f"| {fmt(c['ack50'], 2)} | {fmt(c['ack99'], 2)} | {fmt(c['p99'], 2)} | {fmt(c['server_cpu'])} "
                f"| {fmt(c['server_us'], 2)} | {suspect_cell(c['suspect'], c['n'])} |"
            )
    base = "chorus-history-off"
    print()
    print(f"Against history off (highest delivered/s with ratio 1.0 and p99 < {P99_LIMIT_MS:g} ms; server CPU")
    print("per delivery at each rate, where both measured one; above 1: history costs that much more):")
    print()
    print("| history | highest delivered/s held | throughput vs off | CPU per delivery vs off, by rate |")
    print("|---|---:|---:|---|")
    best = {}
    for setting in settings:
        held = [c["delivered"] for (s, _), c in cells.items() if s == setting and holds(c) and c["delivered"]]
        best[setting] = max(held) if held else None
    for setting in settings:
        throughput = "-"
        if best[setting] and best.get(base):
            throughput = f"{best[setting] / best[base]:.3f}"
        costs = []
        for (s, rate), c in sorted(cells.items(), key=lambda kv: kv[0][1]):
            b = cells.get((base, rate))
            if s == setting and b and c["server_us"] and b["server_us"]:
                costs.append(f"{rate:g}/s: {c['server_us'] / b['server_us']:.2f}")
        print(f"| {HISTORY_NAMES[setting]} | {fmt(best[setting])} | {throughput} | {', '.join(costs) or '-'} |")


def latency_table(root):
    servers = [s for s in SERVERS if (root / s).is_dir()]
    print("| server | rate/client | delivered/s | ratio | p50 ms | p99 ms | p99.9 ms | max ms | suspect |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for server in servers:
        for rate, runs in runs_of(root, server).items():
            c = cell(runs)
            suspect = suspect_cell(c["suspect"], c["n"])
            print(
                f"| {server} | {rate:g} | {fmt(c['delivered'])} | {fmt(c['ratio'], 6)} | {fmt(c['p50'], 2)} "
                f"| {fmt(c['p99'], 2)} | {fmt(c['p999'], 2)} | {fmt(c['max'], 2)} | {suspect} |"
            )


def generator(root):
    """Harness vs tinygen, CPU per message, at each load."""
    print("| generator | rate/client | sent/s | received/s | ratio | CPU s | µs CPU per message | behind schedule | suspect |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for rate_dir in sorted(root.glob("rate-*"), key=lambda p: float(p.name[5:])):
        rate = float(rate_dir.name[5:])
        harness = [harness_row(s) for s in summaries(rate_dir)]
        tiny = [tinygen_row(load(p)) for p in sorted(rate_dir.glob("run-*/tinygen.json")) if p.stat().st_size]
        for name, rows in (("chorus run", harness), ("tinygen", tiny)):
            if not rows:
                continue
            m = {k: median([r[k] for r in rows]) for k in rows[0] if k not in ("behind", "suspect", "is_suspect")}
            behind = rows[len(rows) // 2]["behind"]
            print(
                f"| {name} | {rate:g} | {fmt(m['sent'])} | {fmt(m['received'])} | {fmt(m['ratio'], 4)} "
                f"| {fmt(m['cpu'], 2)} | {fmt(m['us'], 2)} | {behind} | {rows[0]['suspect'](rows)} |"
            )
    reasons = sorted({r for p in root.glob("rate-*/run-*/result/summary.json") for r in load(p)["run"]["suspect"]})
    if reasons:
        print()
        print("The harness's SUSPECT reasons, as its report prints them:")
        print()
        for r in reasons:
            print(f"- {r}")


def harness_row(s):
    cpu = s["run"]["generator_cpu_percent"] / 100 * s["run"]["duration_secs"]
    lag = s["latency"].get("lag", {})
    return {
        "sent": s["throughput"]["sent_per_sec"],
        "received": s["throughput"]["delivered_per_sec"],
        "ratio": s["delivery"]["ratio"],
        "cpu": cpu,
        "us": cpu / max(s["messages"]["sent"] + s["messages"]["received"], 1) * 1e6,
        "behind": f"lag p99 {fmt(lag.get('p99_ms'), 1)} ms, max {fmt(lag.get('max_ms'), 0)} ms",
        "suspect": lambda rows: suspect_cell(sum(1 for r in rows if r["is_suspect"]), len(rows)),
        "is_suspect": bool(s["run"]["suspect"]),
    }


def tinygen_row(t):
    return {
        "sent": t["sent"] / t["seconds"],
        "received": t["received"] / t["seconds"],
        "ratio": t["received"] / max(t["expected"], 1),
        "cpu": t["cpu_secs"],
        "us": t["cpu_secs"] / max(t["sent"] + t["received"], 1) * 1e6,
        "behind": f"max {fmt(t['behind_max_ms'], 0)} ms",
        "suspect": lambda rows: "(no such check)",
        "is_suspect": False,
    }


def suspect_cell(count, n):
    return f"**yes** ({count}/{n})" if count else f"no (0/{n})"


def idle(root):
    facts = load(root / "idle.json")
    if not (root / "merged/summary.json").exists():
        sys.exit(f"no merged results in {root}/merged: see the shards' harness.log files")
    merged = load(root / "merged/summary.json")
    conns = facts["connections"]
    per_conn = (facts["rss_after_kib"] - facts["rss_before_kib"]) / max(conns, 1)
    d = merged["latency"].get("delivery", {})
    c = merged["latency"].get("connect", {})
    connect = facts["connect_secs"]
    rows = [
        ("connections open (server /healthz)", fmt(conns)),
        ("rooms", "one (the lobby)"),
        ("harness shards (processes) / source addresses", f"{facts['shards']} / {', '.join(facts['sources'])}"),
        ("server RSS before / after", f"{fmt(facts['rss_before_kib'])} KiB / {fmt(facts['rss_after_kib'])} KiB"),
        ("server RSS per connection", f"**{per_conn:.2f} KiB**"),
        ("time to connect all", "not reached" if connect is None else f"**{connect:.2f} s**"),
        ("connect p50 / p99 / max", " / ".join(fmt(c.get(k), 1) for k in ("p50_ms", "p99_ms", "max_ms")) + " ms"),
        ("connect failures / dropped", f"{fmt(merged['connections']['failed'])} / {fmt(merged['connections']['dropped'])}"),
        ("broadcast: messages sent (senders)", f"{fmt(merged['messages']['sent'])} ({fmt(facts['senders'])})"),
        (
            "broadcast: deliveries planned / acked recipients / received",
            f"{fmt(facts['expected_deliveries'])} / {fmt(merged['delivery']['expected'])} / {fmt(merged['delivery']['received'])}",
        ),
        (
            "broadcast: first / median / last arrival",
            f"{fmt(d.get('min_ms'), 1)} / {fmt(d.get('p50_ms'), 1)} / **{fmt(d.get('max_ms'), 1)} ms**",
        ),
        ("server CPU from the end of the quiet phase to the end of the run", f"{facts['server_cpu_after_idle']:.2f} s"),
        ("closed by the server", ", ".join(f"{k}: {v}" for k, v in merged["closes"].items()) or "none"),
        ("suspect", "; ".join(merged["run"]["suspect"]) or "no"),
    ]
    print("| measure | value |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def capacity(root):
    """tinygen against each server: frames per second, share delivered, server CPU."""
    print("| server | rate/client | sent/s | frames received/s | share of expected | server CPU s | generator CPU s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for server in [s for s in ALL_SERVERS if (root / s).is_dir()]:
        for rate_dir in sorted((root / server).glob("rate-*"), key=lambda p: float(p.name[5:])):
            rows = []
            for run in sorted(rate_dir.glob("run-*")):
                if not (run / "tinygen.json").stat().st_size:
                    continue
                t = load(run / "tinygen.json")
                # chorus also sends an ack per message (and a welcome and
                # presence per connection: a few thousand, left out).
                expected = t["expected"] + (t["sent"] if server.startswith("chorus") else 0)
                rows.append({
                    "sent": t["sent"] / t["seconds"],
                    "received": t["received"] / t["seconds"],
                    "share": t["received"] / max(expected, 1),
                    "server": load(run / "server.cpu")["cpu_secs"],
                    "gen": t["cpu_secs"],
                })
            if rows:
                m = {k: median([r[k] for r in rows]) for k in rows[0]}
                print(
                    f"| {server} | {float(rate_dir.name[5:]):g} | {fmt(m['sent'])} | {fmt(m['received'])} "
                    f"| {fmt(m['share'], 3)} | {fmt(m['server'], 2)} | {fmt(m['gen'], 2)} |"
                )


PEER_TOOLS = ["chorus", "chorus-baseline", "artillery", "tsung", "tinygen"]


def peers(dir_):
    """bench/peers-harness.sh: per load and generator, medians of the measured window."""
    print("| load | generator | asked/s | held | accepted/s | deliveries/s | generator CPU % | µs CPU per message |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    per_message = {}
    loads = [p for p in Path(dir_).iterdir() if p.is_dir() and p.name.count("-") == 1]
    for load_dir in sorted(loads, key=lambda p: (p.name.split("-")[0], float(p.name.split("-")[1]))):
        for tool in PEER_TOOLS:
            rows = [load(p) for p in sorted((load_dir / tool).glob("run-*/measure.json"))]
            if not rows:
                continue
            fanout = load_dir.name.startswith("fanout")
            asked = rows[0]["asked_per_sec"]

            def cost(r):
                # send: each message and its ack; fan-out: each message sent and each delivery received
                handled = r["accepted"] + (r["deliveries"] if fanout else 0)
                return r["generator_cpu_secs"] / handled * 1e6 if handled else None

            m = {
                "held": median([r["accepted"] / r["window_secs"] / asked for r in rows]),
                "accepted": median([r["accepted"] / r["window_secs"] for r in rows]),
                "deliveries": median([r["deliveries"] / r["window_secs"] for r in rows]),
                "cpu": median([r["generator_cpu_secs"] / r["window_secs"] * 100 for r in rows]),
                "us": median([cost(r) for r in rows]),
            }
            per_message[(load_dir.name, tool)] = m["us"]
            held = f"{m['held'] * 100:.1f} %" if m["held"] is not None else "-"
            print(
                f"| {load_dir.name} | {tool} | {fmt(asked)} | {held} | {fmt(m['accepted'])} | {fmt(m['deliveries'])} "
                f"| {fmt(m['cpu'])} | {fmt(m['us'], 2)} |"
            )
    print()
    for (load_name, tool), us in sorted(per_message.items()):
        base = per_message.get((load_name, "tinygen"))
        other = per_message.get((load_name, "chorus"))
        before = per_message.get((load_name, "chorus-baseline"))
        if tool == "chorus" and base and us:
            print(f"- {load_name}: chorus / tinygen CPU per message = {us / base:.2f}")
        if tool == "chorus" and before and us:
            print(f"- {load_name}: chorus / chorus-baseline CPU per message = {us / before:.2f}")
        elif tool in ("artillery", "tsung") and us and other:
            print(f"- {load_name}: {tool} / chorus CPU per message = {us / other:.2f}")


def scale_out(root):
    """bench/scale-out.sh: the broadcast to many connections, then fan-out
    across nodes, each cluster beside the single node."""
    print("Broadcast to every connection of one room:")
    print()
    print(
        "| setup | connections (nodes) | time to connect all | RSS per node | first / median / last arrival ms "
        "| expected / received | nodes CPU s | Redis CPU s | suspect |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for setup in ("single", "cluster"):
        d = root / "broadcast" / setup
        if not (d / "facts.json").exists() or not (d / "merged/summary.json").exists():
            print(f"| {setup} | no result: see {d}/*.log | | | | | | | |")
            continue
        facts, merged = load(d / "facts.json"), load(d / "merged/summary.json")
        arrival = merged["latency"].get("delivery", {})
        connect = facts["connect_secs"]
        print(
            f"| {setup} | {fmt(facts['connections'])} ({facts['nodes']}) "
            f"| {'not reached' if connect is None else f'{connect:.2f} s'} "
            f"| {' / '.join(fmt(r / 1024, 0) for r in facts['rss_kib'])} MiB "
            f"| {' / '.join(fmt(arrival.get(k), 1) for k in ('min_ms', 'p50_ms', 'max_ms'))} "
            f"| {fmt(merged['delivery']['expected'])} / {fmt(merged['delivery']['received'])} "
            f"| {facts['nodes_cpu']:.2f} | {facts['redis_cpu']:.2f} "
            f"| {'; '.join(merged['run']['suspect']) or 'no'} |"
        )
    print()
    print("Fan-out, talkers on node 1, listeners on nodes 2 and 3 (on the single node: every group on it):")
    print()
    print(
        "| setup | rate/talker | sent/s | delivered/s | ratio | listeners p50 ms | listeners p99 ms "
        "| nodes µs CPU/delivery | Redis µs CPU/message | suspect |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    cells = {}
    for setup in ("single", "cluster"):
        for rate_dir in sorted((root / "fanout" / setup).glob("rate-*"), key=lambda p: float(p.name[5:])):
            rows = []
            for run in sorted(rate_dir.glob("run-*")):
                if not (run / "result/summary.json").exists():
                    continue
                s, cpu = load(run / "result/summary.json"), load(run / "server.cpu")
                groups = [g for g in s["groups"] if g["name"].startswith("listeners")]
                # Two halves, two histograms: the worse of their percentiles.
                worst = lambda stat: max((g["latency"].get("delivery", {}).get(stat) or 0) for g in groups) if groups else None
                rows.append({
                    "sent": s["throughput"]["sent_per_sec"],
                    "delivered": s["throughput"]["delivered_per_sec"],
                    "ratio": s["delivery"]["ratio"],
                    "p50": worst("p50_ms"),
                    "p99": worst("p99_ms"),
                    "cpu": cpu["cpu_secs"] / max(s["messages"]["received"], 1) * 1e6,
                    "redis": cpu["redis_cpu_secs"] / max(s["messages"]["sent"], 1) * 1e6,
                    "suspect": bool(s["run"]["suspect"]),
                })
            if not rows:
                continue
            rate = float(rate_dir.name[5:])
            m = {k: median([r[k] for r in rows]) for k in rows[0] if k != "suspect"}
            cells[(setup, rate)] = m
            suspect = sum(r["suspect"] for r in rows)
            print(
                f"| {setup} | {rate:g} | {fmt(m['sent'])} | {fmt(m['delivered'])} | {fmt(m['ratio'], 4)} "
                f"| {fmt(m['p50'], 2)} | {fmt(m['p99'], 2)} | {fmt(m['cpu'], 2)} "
                f"| {fmt(m['redis'], 1) if setup == 'cluster' else '-'} | {suspect_cell(suspect, len(rows))} |"
            )
    for (setup, rate), c in sorted(cells.items()):
        base = cells.get(("single", rate))
        if setup != "cluster" or not base:
            continue
        ratio = lambda k: "-" if not base[k] or c[k] is None else f"{c[k] / base[k]:.2f}x"
        print()
        print(
            f"At {rate:g} msg/s per talker, cluster / single: listeners p50 {ratio('p50')}, "
            f"p99 {ratio('p99')}, nodes CPU per delivery {ratio('cpu')}."
        )


def main():
    tables = {"fanout": fanout, "latency": latency_table, "history": history, "generator": generator, "idle": idle, "capacity": capacity, "peers": peers, "scale-out": scale_out}
    if len(sys.argv) != 3 or sys.argv[1] not in tables:
        sys.exit(f"usage: tables.py {'|'.join(tables)} DIR")
    tables[sys.argv[1]](Path(sys.argv[2]))


if __name__ == "__main__":
    main()
