"""A replicated counter: the smallest raftio embedding (3 Nodes in one process, 127.0.0.1).

Run:  python examples/counter.py
"""

import asyncio
import tempfile

from raftio.kv.local import free_ports
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


async def main() -> None:
    addresses = [f"127.0.0.1:{port}" for port in free_ports(3)]
    with tempfile.TemporaryDirectory() as data:
        nodes = [Node(i, addresses, f"{data}/{i}", Counter()) for i in range(3)]
        for node in nodes:
            await node.start()
        leader = None
        while leader is None:  # wait for the first election
            await asyncio.sleep(0.05)
            leader = next((n for n in nodes if n.status().role == "leader"), None)
        for _ in range(5):
            print("counter =", await leader.propose(1))
        for node in nodes:
            await node.close()


asyncio.run(main())
