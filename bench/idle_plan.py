"""Write the scenario of one bench/idle.sh run and print what it will do.

    python3 bench/idle_plan.py TEMPLATE OUT CONNS SHARDS PHANTOM ROOM_SIZE RAMP QUIET DRAIN

The harness spreads clients over source addresses (127.0.0.(1 + k / 25,000)
for client k) only when a scenario has more than 25,000 clients. So the
scenario names PHANTOM x CONNS clients and idle.sh runs SHARDS of its
PHANTOM x SHARDS shards (`--shard i/n` runs clients i-1, i-1+n, ...): CONNS
clients connect, spread over every address; the others never run.

ROOM_SIZE 0: every connection in the lobby and one sender, one message: the
broadcast to all. ROOM_SIZE > 0: rooms of about that size (a room count
prime to the shard count, so the clients that run fill every room alike),
SHARDS senders in each room, each sending one message in the same 10 ms.
Prints JSON: sources, rooms, room sizes, senders and expected deliveries.
"""

import json
import math
import re
import sys

PER_SOURCE_ADDRESS = 25_000  # src/harness/driver.rs


def main():
    template, out = sys.argv[1], sys.argv[2]
    conns, shards, phantom, room_size = (int(a) for a in sys.argv[3:7])
    ramp, quiet, drain = sys.argv[7:10]
    n = phantom * shards
    total = phantom * conns
    if room_size == 0:
        rooms, senders = ["lobby"], 1
    else:
        count = max(1, round(conns / room_size))
        while math.gcd(count, n) != 1:
            count += 1
        rooms, senders = [f"room-{j}" for j in range(count)], n * count
    runs = lambda k: k % n < shards  # noqa: E731 (the clients of shards 1..SHARDS of n)
    members = {room: 0 for room in rooms}
    running_senders = []
    for k in range(total):
        if runs(k):
            index = k if k < senders else k - senders
            room = rooms[index % len(rooms)]
            members[room] += 1
            if k < senders:
                running_senders.append(room)
    text = open(template).read()
    text = re.sub(r'(type = "ramp"\nduration = )"[^"]*"', rf'\1"{ramp}s"', text)
    text = re.sub(r'(name = "quiet"\nduration = )"[^"]*"', rf'\1"{quiet}s"', text)
    text = re.sub(r'(type = "drain"\nduration = )"[^"]*"', rf'\1"{drain}s"', text)
    room_list = "[" + ", ".join(f'"{r}"' for r in rooms) + "]"
    text = re.sub(r'(name = "sender"\nclients = )\d+\nrooms = .*', rf"\g<1>{senders}\nrooms = {room_list}", text)
    text = re.sub(r'(name = "idle"\nclients = )\d+\nrooms = .*', rf"\g<1>{total - senders}\nrooms = {room_list}", text)
    open(out, "w").write(text)
    addresses = sorted({1 + k // PER_SOURCE_ADDRESS for k in range(total) if runs(k)}) if total > PER_SOURCE_ADDRESS else [1]
    print(json.dumps({
        "sources": [f"127.0.0.{a}" for a in addresses],
        "rooms": len(rooms),
        "room_size_min": min(members.values()),
        "room_size_max": max(members.values()),
        "senders": len(running_senders),
        "expected_deliveries": sum(members[room] - 1 for room in running_senders),
        "connections": sum(members.values()),
    }))


if __name__ == "__main__":
    main()
