"""A minimal broadcast relay on the Python `websockets` package: every text or
binary message goes, verbatim, to every other open connection. No rooms, no
envelope, no acks: the same job as examples/relay.rs, for bench/fanout.sh.

    python3 bench/peers/python-websockets/relay.py 127.0.0.1:9001
"""

import asyncio
import signal
import sys

from websockets.asyncio.server import broadcast, serve

clients = set()


async def relay(ws):
    clients.add(ws)
    try:
        async for message in ws:
            broadcast([other for other in clients if other is not ws], message)
    finally:
        clients.discard(ws)


async def main(addr):
    host, port = addr.rsplit(":", 1)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(relay, host, int(port), compression=None, max_size=2**20) as server:
        print(f"python websockets relay listening on ws://{addr}/", file=sys.stderr)
        try:
            await stop
        except asyncio.CancelledError:
            server.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:9001"))
