"""Tables for the bench scripts: read the raw outputs a script left under
bench/out/<script>/<stamp>/ and print Markdown tables (medians over the
repeated runs), ready to paste into bench/README.md.

    python3 bench/tables.py fanout|latency|generator|idle DIR
"""

import json
import statistics
import sys
from pathlib import Path

# A rate "holds" when every message arrived and delivery p99 stayed under this.
P99_LIMIT_MS = 50.0
SERVERS = ["chorus", "chorus-plain", "relay", "node-ws", "python-websockets"]


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
    """summary.json of each run-N/result folder under dir_, in run order."""
    return [load(p) for p in sorted(Path(dir_).glob("run-*/result/summary.json"))]


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
        "max": median([latency(s, "max_ms") for s in runs]),
        "cpu": median([s["run"]["generator_cpu_percent"] for s in runs]),
        "suspect": suspect,
        "n": len(runs),
    }


def holds(c):
    return c["ratio"] is not None and c["ratio"] >= 0.9999995 and c["p99"] is not None and c["p99"] < P99_LIMIT_MS


def fanout(root):
    servers = [s for s in SERVERS if (root / s).is_dir()]
    print("| server | rate/client | sent/s | delivered/s | ratio | p50 ms | p99 ms | harness CPU % | suspect |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    best = {}
    for server in servers:
        for rate, runs in runs_of(root, server).items():
            if not runs:
                continue
            c = cell(runs)
            if holds(c) and c["delivered"] > best.get(server, (0, 0, 0))[0]:
                best[server] = (c["delivered"], rate, c["suspect"])
            suspect = f"**yes** ({c['suspect']}/{c['n']})" if c["suspect"] else f"no (0/{c['n']})"
            print(
                f"| {server} | {rate:g} | {fmt(c['sent'])} | {fmt(c['delivered'])} | {fmt(c['ratio'], 6)} "
                f"| {fmt(c['p50'], 2)} | {fmt(c['p99'], 2)} | {fmt(c['cpu'])} | {suspect} |"
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
    for a, b in [("chorus", "relay"), ("chorus", "node-ws"), ("chorus-plain", "relay")]:
        if a in best and b in best:
            print(f"- {a} / {b}: {best[a][0] / best[b][0]:.2f}")
    return best


def latency_table(root):
    servers = [s for s in SERVERS if (root / s).is_dir()]
    print("| server | rate/client | delivered/s | ratio | p50 ms | p99 ms | p99.9 ms | max ms | suspect |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for server in servers:
        for rate, runs in runs_of(root, server).items():
            c = cell(runs)
            suspect = f"**yes** ({c['suspect']}/{c['n']})" if c["suspect"] else f"no (0/{c['n']})"
            print(
                f"| {server} | {rate:g} | {fmt(c['delivered'])} | {fmt(c['ratio'], 6)} | {fmt(c['p50'], 2)} "
                f"| {fmt(c['p99'], 2)} | {fmt(c['p999'], 2)} | {fmt(c['max'], 2)} | {suspect} |"
            )


def generator(root):
    """Harness vs tinygen, CPU per message, at each load."""
    print("| generator | rate/client | sent/s | received/s | ratio | CPU s | µs CPU per message | behind | suspect |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for rate_dir in sorted(root.glob("rate-*"), key=lambda p: float(p.name[5:])):
        rate = float(rate_dir.name[5:])
        harness, tiny = [], []
        for run in sorted(rate_dir.glob("run-*")):
            s = load(run / "result/summary.json")
            cpu = load(run / "harness.cpu")["cpu_secs"]
            msgs = s["messages"]["sent"] + s["messages"]["received"]
            lag = s["latency"].get("lag", {})
            harness.append((s, cpu, msgs, lag.get("p99_ms"), lag.get("max_ms")))
            t = load(run / "tinygen.json")
            tiny.append((t, t["cpu_secs"], t["sent"] + t["received"]))
        secs = [h[0]["run"]["steady_secs"] for h in harness]
        print(
            f"| chorus run | {rate:g} | {fmt(median([h[0]['throughput']['sent_per_sec'] for h in harness]))} "
            f"| {fmt(median([h[0]['throughput']['delivered_per_sec'] for h in harness]))} "
            f"| {fmt(median([h[0]['delivery']['ratio'] for h in harness]), 4)} "
            f"| {fmt(median([h[1] for h in harness]), 2)} "
            f"| {fmt(median([h[1] / max(h[2], 1) * 1e6 for h in harness]), 2)} "
            f"| lag p99 {fmt(median([h[3] for h in harness]), 1)} ms, max {fmt(median([h[4] for h in harness]), 0)} ms "
            f"| {suspect_cell(sum(1 for h in harness if h[0]['run']['suspect']), len(harness))} |"
        )
        tsecs = median(secs) or 1.0
        print(
            f"| tinygen | {rate:g} | {fmt(median([t[0]['sent'] / t[0]['seconds'] for t in tiny]))} "
            f"| {fmt(median([t[0]['received'] / t[0]['seconds'] for t in tiny]))} "
            f"| {fmt(median([t[0]['received'] / max(t[0]['expected'], 1) for t in tiny]), 4)} "
            f"| {fmt(median([t[1] for t in tiny]), 2)} "
            f"| {fmt(median([t[1] / max(t[2], 1) * 1e6 for t in tiny]), 2)} "
            f"| max {fmt(median([t[0]['behind_max_ms'] for t in tiny]), 0)} ms | (no such check) |"
        )
        del tsecs
    reasons = sorted({r for run in root.glob("rate-*/run-*/result/summary.json") for r in load(run)["run"]["suspect"]})
    if reasons:
        print()
        print("The harness's SUSPECT reasons, as its report prints them:")
        print()
        for r in reasons:
            print(f"- {r}")


def suspect_cell(count, n):
    return f"**yes** ({count}/{n})" if count else f"no (0/{n})"


def idle(root):
    facts = load(root / "idle.json")
    merged = load(next(root.glob("merged/summary.json")))
    conns = facts["connections"]
    per_conn = (facts["rss_after_kib"] - facts["rss_before_kib"]) / max(conns, 1)
    d = merged["latency"].get("delivery", {})
    rows = [
        ("connections open (server /healthz)", fmt(conns)),
        ("harness shards (processes)", fmt(facts["shards"])),
        ("source addresses", ", ".join(facts["sources"])),
        ("server RSS before / after", f"{fmt(facts['rss_before_kib'])} KiB / {fmt(facts['rss_after_kib'])} KiB"),
        ("server RSS per connection", f"**{per_conn:.2f} KiB**"),
        ("time to connect all", f"{facts['connect_secs']:.2f} s (first connect to the last counted by /healthz)"),
        ("connect p50 / p99 / max", "{} / {} / {} ms".format(*(fmt(merged['latency']['connect'].get(k), 1) for k in ('p50_ms', 'p99_ms', 'max_ms')))),
        ("connect failures", fmt(merged["connections"]["failed"])),
        ("broadcast: recipients (ack) / received", f"{fmt(merged['delivery']['expected'])} / {fmt(merged['delivery']['received'])}"),
        ("broadcast: first / median / last arrival", f"{fmt(d.get('min_ms'), 1)} / {fmt(d.get('p50_ms'), 1)} / **{fmt(d.get('max_ms'), 1)} ms**"),
        ("suspect", "; ".join(merged["run"]["suspect"]) or "no"),
    ]
    print("| measure | value |")
    print("|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("fanout", "latency", "generator", "idle"):
        sys.exit("usage: tables.py fanout|latency|generator|idle DIR")
    root = Path(sys.argv[2])
    {"fanout": fanout, "latency": latency_table, "generator": generator, "idle": idle}[sys.argv[1]](root)


if __name__ == "__main__":
    main()
