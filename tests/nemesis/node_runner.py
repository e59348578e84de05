"""One KV node process for the real-process nemesis tests: `raftio node` with a bind address.

`raftio node` listens on its own entry of `--peers`, and every node shares
one list, so links cannot be routed through per-link proxies. Here each
node gets a list of its own (`--peers`: entry j is where this node reaches
node j, i.e. the proxy i->j) and listens for Raft on `--bind`:

    python tests/nemesis/node_runner.py --id 0 --peers SELF,P01,P02 --bind HOST:PORT \
        --client-peers C0,C1,C2 --data DIR [--snapshot-bytes N] [--parent-pid PID]

Runs until SIGTERM/SIGINT, or until its parent is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from raftio.kv import KVNode

logger = logging.getLogger("nemesis.node")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--id", type=int, required=True)
    p.add_argument("--peers", required=True, help="where this node reaches each node, by id")
    p.add_argument("--bind", required=True, help="host:port this node's Raft server listens on")
    p.add_argument("--client-peers", required=True, help="every node's KV client host:port")
    p.add_argument("--data", required=True)
    p.add_argument("--snapshot-bytes", type=int, default=8 << 20)
    p.add_argument("--parent-pid", type=int)
    return p.parse_args()


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    kv = KVNode(
        args.id,
        args.peers.split(","),
        args.client_peers.split(","),
        args.data,
        bind=args.bind,
        snapshot_bytes=args.snapshot_bytes,
    )
    async with kv:
        logger.info("node %d ready: raft on %s, peers %s", args.id, args.bind, args.peers)
        while not stop.is_set():
            if args.parent_pid is not None and os.getppid() != args.parent_pid:
                logger.warning("parent %d is gone; stopping", args.parent_pid)
                return
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
