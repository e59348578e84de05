"""The replicated key/value service in one file: three replicas and a client on 127.0.0.1.

Run:  python examples/kv_service.py

Production runs one replica per process (`raftio node`, see docs/cli.md);
here all three share one event loop so the whole story fits on a screen:

1. a replica is a raftio.Node running a KVStateMachine, plus a KVServer,
   the port clients talk to;
2. a KVClient finds the leader by itself, following redirects;
3. a write retried with the same (client, seq) is applied once;
4. when the leader stops, the client carries on with the new one;
5. a restarted replica catches up from its files and the leader.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
import tempfile

from raftio.kv import KVClient, KVServer, KVStateMachine
from raftio.node import Node

N = 3
SECRET = secrets.token_bytes(32)  # authenticates peers and KV clients alike


class Replica:
    """1. One replica: state machine, Raft node (TCP + FileStorage), client port."""

    def __init__(self, i: int, peers: list[str], client_peers: list[str], data: str) -> None:
        self.machine = KVStateMachine()
        self.node = Node(i, peers, f"{data}/node-{i}", self.machine, secret=SECRET)
        self.server = KVServer(self.node, self.machine, client_peers, token=SECRET)

    async def start(self) -> Replica:
        await self.node.start()  # Raft first: the client port never answers for a dead node
        await self.server.start()
        return self

    async def stop(self) -> None:
        await self.server.close()
        await self.node.close()


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
    ports = free_ports(2 * N)
    peers = [f"127.0.0.1:{p}" for p in ports[:N]]  # Raft traffic
    client_peers = [f"127.0.0.1:{p}" for p in ports[N:]]  # KV clients
    with tempfile.TemporaryDirectory() as data:
        replicas = [await Replica(i, peers, client_peers, data).start() for i in range(N)]
        async with KVClient(client_peers, token=SECRET) as client:
            await tour(client, replicas, peers, client_peers, data)
        for replica in replicas:
            await replica.stop()


async def tour(
    client: KVClient, replicas: list[Replica], peers: list[str], client_peers: list[str], data: str
) -> None:
    # 2. Writes and reads go to the leader; the client finds it.
    await client.put("greeting", "hello")
    print("append ->", await client.append("greeting", ", world"))
    print(f"the leader answers at {client.leader}")

    # 3. Exactly once: a request sent twice (as after a lost reply) applies once.
    session = await client.request({"op": "register"})  # KVClient does this by itself
    request = {"op": "append", "key": "log", "value": "+1", "session": session, "seq": 1}
    first, again = await client.request(request), await client.request(request)
    print(f"same request twice -> {first!r}, {again!r}; log = {await client.get('log')!r}")

    # 4. Stop the leader: the client retries until a new leader answers.
    leader = client_peers.index(client.leader or "")
    await replicas[leader].stop()
    print(f"stopped node {leader}; append ->", await client.append("greeting", "!"))
    print(f"the new leader answers at {client.leader}")

    # 5. Restart it: it replays its own log, then learns the rest from the leader.
    replicas[leader] = await Replica(leader, peers, client_peers, data).start()
    caught_up = False
    while not caught_up:
        await asyncio.sleep(0.05)
        caught_up = replicas[leader].machine.data == replicas[(leader + 1) % N].machine.data
    print(f"node {leader} caught up: {replicas[leader].machine.data}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # peers going away are logged as warnings
    asyncio.run(main())
