"""`raftio node`: one KV node in the foreground until SIGTERM, SIGINT, a
fail-stop or the end of its parent (--parent-pid)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from raftio import _loop
from raftio.cli.common import (
    LOG_FORMAT,
    CommandError,
    add_loop,
    addresses,
    loop_choice,
    secret,
)
from raftio.kv.service import KVNode
from raftio.storage.base import StorageError

logger = logging.getLogger("raftio.cli")  # the name node logs have always shown


def add_parser(commands: Any) -> None:
    p = commands.add_parser("node", help="run one KV node until SIGTERM or SIGINT")
    p.add_argument("--id", type=int, required=True, help="this node's index in --peers")
    p.add_argument("--peers", type=addresses, required=True, help="every node's Raft host:port")
    p.add_argument("--client-peers", type=addresses, required=True,
                   help="every node's client host:port, in the same order")  # fmt: skip
    p.add_argument("--data", required=True, help="this node's data directory")
    p.add_argument("--cluster-id", default="raftio", help="peers of other clusters are refused")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--secret-file", help="file holding the cluster's shared secret (mode 600)")
    auth.add_argument("--insecure", action="store_true",
                      help="no secret: whoever reaches the ports is trusted")  # fmt: skip
    p.add_argument("--snapshot-bytes", type=int, default=8 << 20,
                   help="snapshot once the log passes this many bytes")  # fmt: skip
    p.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")  # fmt: skip
    add_loop(p, "this node")
    p.set_defaults(run=cmd_node)


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=LOG_FORMAT)
    if not 0 <= args.id < len(args.peers) or len(args.client_peers) != len(args.peers):
        raise CommandError("--id must index --peers; --client-peers must match it")
    if args.secret_file is None and not args.insecure:
        raise CommandError(
            "give --secret-file FILE (the cluster's shared secret), or --insecure to run "
            "without authenticating peers and clients"
        )
    token = secret(args.secret_file) if args.secret_file else None
    loop = loop_choice(args.loop)
    if token is None:
        logger.warning("node %d runs --insecure: whoever reaches its ports is trusted", args.id)
    kv = KVNode(args.id, args.peers, args.client_peers, args.data, cluster_id=args.cluster_id,
                secret=token, snapshot_bytes=args.snapshot_bytes)  # fmt: skip
    try:
        failure = _loop.run(_serve_node(kv, args.data, args.parent_pid), loop)
    except (OSError, StorageError) as exc:
        logger.error("node %d cannot run: %s", args.id, exc)
        return 1
    return 0 if failure is None else 1  # a fail-stopped node exits non-zero


async def _serve_node(kv: KVNode, data: str, parent_pid: int | None) -> str | None:
    """Serve until SIGTERM/SIGINT or a fail-stop; returns the failure, if any."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with kv:
        node = kv.node
        logger.info("node %d ready: raft %s, clients %s, data %s, loop %s", node.node_id,
                    node.address, kv.server.client_addresses[node.node_id], data,
                    _loop.loop_name(loop))  # fmt: skip
        watcher = loop.create_task(_watch_parent(parent_pid, stop), name="parent-watcher")
        watcher.add_done_callback(_log_failure)
        failed = loop.create_task(node.wait_failed(), name="failure-watcher")
        failed.add_done_callback(lambda _: stop.set())
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            failed.cancel()
            await asyncio.gather(watcher, failed, return_exceptions=True)
        logger.info("node %d stopping", node.node_id)
    logger.info("node %d stopped", node.node_id)
    return node.failure


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("task %s failed", task.get_name(), exc_info=task.exception())


async def _watch_parent(parent_pid: int | None, stop: asyncio.Event) -> None:
    """Stop the node once its parent is gone (a demo or test that died without cleaning up)."""
    if parent_pid is None:
        return
    while os.getppid() == parent_pid:
        if stop.is_set():
            return
        await asyncio.sleep(0.5)
    logger.warning("parent %d is gone; stopping", parent_pid)
    stop.set()
