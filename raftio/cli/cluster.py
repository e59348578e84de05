"""`raftio cluster up` / `down` (and `add` / `remove`, in cluster_change.py):
detached node processes of a cluster directory.

`up` makes the directory (cluster.json, secret) if it holds no cluster,
starts the members not already running and waits until every one answers
and one leads; the nodes run on after it returns, whatever happened. Only
the first voters of a cluster it made, at their first start, get
`--bootstrap` (raftio.kv.spec): a node whose data directory was lost
later refuses to start, and says how to replace it.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raftio import _loop
from raftio.cli import cluster_change
from raftio.cli.client import client, print_table, refused, statuses
from raftio.cli.common import (
    CommandError,
    add_loop,
    load_spec,
    loop_choice,
    os_reason,
    prepare,
    secret,
    settled,
)
from raftio.kv.client import KVRequestError
from raftio.kv.local import ClusterSpec, LocalCluster, running_detached, stop_detached

_UP_WAIT = 15.0  # seconds `cluster up` waits for every node to answer and one to lead


def add_parser(commands: Any) -> None:
    p = commands.add_parser("cluster", help="start or stop detached node processes")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the nodes of --dir in the background")
    up.add_argument("-n", type=int, help="nodes of a new cluster (default 3)")
    up.add_argument("--dir", required=True, help="cluster directory (cluster.json, data, logs)")
    up.add_argument(
        "--base-port",
        type=int,
        help="Raft ports P..P+n-1, client ports P+n..P+2n-1 (default: free ports)",
    )
    add_loop(up, "the nodes")
    up.set_defaults(run=cmd_cluster_up)
    down = actions.add_parser("down", help="stop the nodes of --dir")
    down.add_argument("--dir", required=True, help="cluster directory")
    down.set_defaults(run=cmd_cluster_down)
    cluster_change.add_parsers(actions)


def cmd_cluster_up(args: argparse.Namespace) -> int:
    if args.n is not None and args.n < 1:
        raise CommandError("-n must be at least 1")
    if args.base_port is not None and not 0 < args.base_port <= 65536 - 2 * (args.n or 3):
        raise CommandError(f"--base-port {args.base_port}: the ports must lie in 1-65535")
    loop = loop_choice(args.loop)
    nodes_loop = args.loop  # None: each node picks its own default
    return _loop.run(_cluster_up(Path(args.dir), args.n, args.base_port, nodes_loop), loop)


async def _cluster_up(
    directory: Path, n: int | None, base_port: int | None, loop: str | None
) -> int:
    spec = _open_cluster(directory, n, base_port)
    token = secret(str(spec.secret_path))
    running = running_detached(spec)
    cluster = LocalCluster(spec, detached=True, loop=loop)
    try:
        for i in spec.ids:
            if i not in running:
                cluster.start(i)
    except OSError as exc:
        cluster.kill_all_now()
        raise CommandError(f"cannot start the nodes in {directory}: {os_reason(exc)}") from None
    try:
        ready = await _wait_for_cluster(cluster, token, running)
    except KVRequestError as exc:  # a node left running from before it had a secret, say
        raise refused(exc, token) from None
    finally:
        started = sorted(cluster.procs)
        cluster.release()  # they run on, whatever happened; `cluster down` stops them
    print(f"cluster of {spec.n} in {directory}: started {started or 'none'}, "
          f"already running {sorted(running) or 'none'}")  # fmt: skip
    print_table(ready, running_detached(spec), spec.ids)
    return 0


def _open_cluster(directory: Path, n: int | None, base_port: int | None) -> ClusterSpec:
    """The cluster in `directory`, made (cluster.json and secret) if there is none."""
    try:
        spec = ClusterSpec.load(directory)
    except FileNotFoundError:
        spec = ClusterSpec.create(directory, n or 3, base_port=base_port)
    except (OSError, ValueError, TypeError):
        spec = load_spec(directory)  # raises its one-line error
    if n is not None and n != spec.n:
        raise CommandError(f"{directory} holds a cluster of {spec.n}, not {n}")
    prepare(spec)
    return settled(spec)


async def _wait_for_cluster(
    cluster: LocalCluster, token: bytes | None, running: dict[int, int]
) -> list[dict[str, Any] | None]:
    """Statuses once every node answers and one leads; CommandError (exit 1) as soon as a node
    this command started has exited, or after _UP_WAIT seconds."""
    spec = cluster.spec
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _UP_WAIT
    async with client(spec.member_client_peers, token) as kv:
        while True:
            _raise_if_exited(cluster, running)
            found = await statuses(kv, spec.member_client_peers)
            if all(found) and any(s["role"] == "leader" for s in found if s):
                return found
            if loop.time() >= deadline:
                raise CommandError(_not_ready(spec, found), code=1)
            await asyncio.sleep(0.1)


def _raise_if_exited(cluster: LocalCluster, running: dict[int, int]) -> None:
    exited = cluster.exited()
    if not exited:
        return
    spec, first = cluster.spec, min(exited)
    others = sorted(exited)[1:]
    also = f" (nodes {_ids(others)} exited too)" if others else ""
    alive = sorted({*running, *cluster.procs} - exited.keys())
    for i in exited:
        spec.pid_path(i).unlink(missing_ok=True)
    rest = f"; nodes {_ids(alive)} run on: raftio cluster down --dir {spec.directory} stops them"
    raise CommandError(
        f"node {first} exited at start-up (exit code {exited[first]}): "
        f"{cluster.exit_cause(first)}{also}; log: {spec.log_path(first)}{rest if alive else ''}",
        code=1,
    )


def _not_ready(spec: ClusterSpec, found: list[dict[str, Any] | None]) -> str:
    by_id = list(zip(spec.ids, found, strict=True))
    silent = [i for i, s in by_id if s is None]
    leaders = [i for i, s in by_id if s is not None and s["role"] == "leader"]
    what = (
        f"node {leaders[0]} leads, but nodes {_ids(silent)} do not answer"
        if leaders
        else "no leader"
    )
    return (
        f"{what} within {_UP_WAIT:.0f} s; the nodes run on (logs: {spec.directory}/node-*.log; "
        f"raftio cluster down --dir {spec.directory} stops them)"
    )


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids))


def cmd_cluster_down(args: argparse.Namespace) -> int:
    spec = settled(load_spec(args.dir))
    stopped = asyncio.run(stop_detached(spec))
    for i, pid in stopped:
        print(f"node {i} (pid {pid}) stopped")
    if not stopped:
        print("no node was running")
    return 0
