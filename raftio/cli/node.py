"""`raftio node`: one KV node in the foreground until SIGTERM, SIGINT, a
fail-stop or the end of its parent (--parent-pid).

A node never starts with an empty data directory unless told why: a voter
that forgot its vote and log could help elect a leader that lacks
committed writes (Raft's safety assumes nobody forgets). So with a data
directory that holds no raftio state it needs `--bootstrap` (the very first
start of a new cluster) or `--join` (a new member, added by `raftio member
add`); otherwise it refuses in one line that points to the procedure.
"""

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
    loop_choice,
    node_id,
    peer_map,
    secret,
)
from raftio.kv.service import KVNode
from raftio.storage.base import StorageError
from raftio.storage.file import holds_state

# Where the refusal to start empty points: a section of docs/operations.md.
REPLACE_PROCEDURE = 'docs/operations.md, "Replace a failed node"'

logger = logging.getLogger("raftio.cli")  # the name node logs have always shown


def add_parser(commands: Any) -> None:
    p = commands.add_parser("node", help="run one KV node until SIGTERM or SIGINT")
    p.add_argument("--id", type=node_id, required=True, help="this node's id in --peers")
    p.add_argument("--peers", type=peer_map, required=True,
                   help="Raft host:port of the nodes: HOST:PORT,... (ids 0, 1, ...) or "
                        "ID=HOST:PORT,...; with --join at least this node's")  # fmt: skip
    p.add_argument("--client-peers", type=peer_map, required=True,
                   help="client host:port of the same nodes, in the same form")  # fmt: skip
    p.add_argument("--data", required=True, help="this node's data directory")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--bootstrap", action="store_true",
                       help="first start of a new cluster: --peers are its voters")  # fmt: skip
    start.add_argument("--join", action="store_true",
                       help="a new member of a running cluster: wait to be added "
                            "(raftio member add)")  # fmt: skip
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
    if args.id not in args.peers or args.client_peers.keys() != args.peers.keys():
        raise CommandError("--id must name a node of --peers; --client-peers the same nodes")
    if args.secret_file is None and not args.insecure:
        raise CommandError(
            "give --secret-file FILE (the cluster's shared secret), or --insecure to run "
            "without authenticating peers and clients"
        )
    token = secret(args.secret_file) if args.secret_file else None
    _check_not_empty(args)
    loop = loop_choice(args.loop)
    if token is None:
        logger.warning("node %d runs --insecure: whoever reaches its ports is trusted", args.id)
    kv = KVNode(args.id, args.peers, args.client_peers, args.data, cluster_id=args.cluster_id,
                secret=token, snapshot_bytes=args.snapshot_bytes, join=args.join)  # fmt: skip
    try:
        failure = _loop.run(_serve_node(kv, args.data, args.parent_pid), loop)
    except (OSError, StorageError) as exc:
        logger.error("node %d cannot run: %s", args.id, exc)
        return 1
    return 0 if failure is None else 1  # a fail-stopped node exits non-zero


def _check_not_empty(args: argparse.Namespace) -> None:
    """Refuse (one line) a data directory without raftio state unless --bootstrap or --join."""
    if os.path.exists(args.data) and not os.path.isdir(args.data):
        raise CommandError(f"cannot use the data directory {args.data}: not a directory")
    try:
        empty = not holds_state(args.data)
    except OSError as exc:
        raise CommandError(f"cannot read the data directory {args.data}: {exc.strerror}") from None
    if empty and not (args.bootstrap or args.join):
        raise CommandError(
            f"node {args.id}: the data directory {args.data} holds no raftio state, and a "
            "node must never restart empty (it may have voted and acknowledged writes); to "
            f"replace a lost node see {REPLACE_PROCEDURE}; give --bootstrap only at a new "
            "cluster's first start, --join for a node being added"
        )


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
