"""A replicated counter: the smallest raftio embedding (3 Nodes in one process, 127.0.0.1).

Run:  python examples/counter.py
"""

import asyncio
import secrets
import socket
import tempfile

from raftio.node import Node


class Counter:
    def __init__(self) -> None:
        self.value = 0

    def apply(self, n: int) -> int:  # every replica applies every committed command
        self.value += n
        return self.value

    def snapshot(self) -> bytes:
        return str(self.value).encode()

    def restore(self, data: bytes) -> None:
        self.value = int(data)


def free_ports(n: int) -> list[int]:
    """n ports of 127.0.0.1 that are free right now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


async def main() -> None:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    secret = secrets.token_bytes(32)  # peers prove they know it; keep it in a 0600 file
    with tempfile.TemporaryDirectory() as data:
        nodes = [Node(i, addresses, f"{data}/{i}", Counter(), secret=secret) for i in range(3)]
        for node in nodes:
            await node.start()
        leader = None
        while leader is None:  # wait for the first election
            await asyncio.sleep(0.05)
            leader = next((n for n in nodes if n.status().role == "leader"), None)
        for _ in range(5):
            print("counter =", await leader.propose(1))
        # Together, and without handing leadership over (the whole cluster stops):
        # a node closed while the others still call it is a peer lost mid-call,
        # which they would rightly log as a warning.
        await asyncio.gather(*(node.close(transfer=False) for node in nodes))


asyncio.run(main())
