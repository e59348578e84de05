"""`raftio cluster add` / `remove`: grow or shrink the cluster of a directory by one node.

`add` gives the new node the next id and two free ports, records it in
cluster.json (`joined`), starts it with `--join`, waits until it answers,
then asks the leader to add it (a learner, promoted once caught up).
`remove` asks the leader to remove the node, then records it (`removed`)
and stops its process; its data directory is kept. Replacing a node is
`add` then `remove` of the old one (docs/operations.md).
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from raftio import _loop
from raftio.cli.client import admin, client, refused
from raftio.cli.common import (
    CommandError,
    add_loop,
    load_spec,
    loop_choice,
    node_id,
    os_reason,
    seconds,
    settled,
    spec_secret,
)
from raftio.kv.client import KVRequestError, KVUnavailableError
from raftio.kv.display import members_table
from raftio.kv.local import ClusterSpec, LocalCluster, stop_node, wait_stopped
from raftio.kv.protocol import MEMBERSHIP, Members

_START_WAIT = 15.0  # seconds `cluster add` waits for the new node to answer
_TIMEOUT_HELP = "give up on the change after this many seconds (default 60)"


def add_parsers(actions: Any) -> None:
    add = actions.add_parser("add", help="start a new node and add it to the cluster of --dir")
    add.add_argument("--dir", required=True, help="cluster directory")
    add.add_argument("--learner", action="store_true",
                     help="keep it a learner: it replicates but never votes")  # fmt: skip
    add.add_argument("--timeout", type=seconds, default=60.0, help=_TIMEOUT_HELP)
    add_loop(add, "the new node")
    add.set_defaults(run=cmd_cluster_add)
    remove = actions.add_parser("remove", help="remove a node from the cluster of --dir, stop it")
    remove.add_argument("--dir", required=True, help="cluster directory")
    remove.add_argument("id", type=node_id, help="the node to remove")
    remove.add_argument("--timeout", type=seconds, default=60.0, help=_TIMEOUT_HELP)
    remove.set_defaults(run=cmd_cluster_remove)


# --------------------------------------------------------------------------- add


def cmd_cluster_add(args: argparse.Namespace) -> int:
    loop = loop_choice(args.loop)
    return _loop.run(_cluster_add(Path(args.dir), args, args.loop), loop)


async def _cluster_add(directory: Path, args: argparse.Namespace, loop: str | None) -> int:
    spec = settled(load_spec(directory))
    token = spec_secret(spec)
    new: int | None = None
    try:
        # The members, asked before the new node is one of them.
        async with admin(spec.member_client_peers, token, args.timeout) as cluster_admin:
            await cluster_admin.members()  # a leader answers: only now change anything
            spec, new = spec.with_new_node()
            _save(spec)
            await _start(LocalCluster(spec, detached=True, loop=loop), new, token)
            result = await cluster_admin.add_member(
                new, spec.peers[new], spec.client_peers[new], voter=not args.learner
            )
    except CommandError as exc:
        if new is None:
            raise
        raise CommandError(
            f"{exc}; node {new} is not a member: retry with raftio member add {new} "
            f"{spec.peers[new]} {spec.client_peers[new]} --dir {directory} (if it runs), or "
            f"drop it with raftio cluster remove --dir {directory} {new}",
            code=exc.code,
        ) from None
    role = "learner" if args.learner else "voter"
    print(f"node {new} added as a {role}: raft {spec.peers[new]}, clients {spec.client_peers[new]}")
    _print_members(result)
    return 0


def _save(spec: ClusterSpec) -> None:
    try:
        spec.save()
    except OSError as exc:
        where = spec.directory / "cluster.json"
        raise CommandError(f"cannot write {where}: {os_reason(exc)}") from None


async def _start(cluster: LocalCluster, i: int, token: bytes | None) -> None:
    """Start node i detached and wait until it answers; it runs on whatever happens."""
    try:
        cluster.start(i)
        await _wait_answers(cluster, i, token)
    except OSError as exc:
        raise CommandError(f"cannot start node {i}: {os_reason(exc)}", code=1) from None
    finally:
        cluster.release()  # `cluster down` (or `cluster remove`) stops it


async def _wait_answers(cluster: LocalCluster, i: int, token: bytes | None) -> None:
    """Wait until node i answers on its client port; CommandError if it exits or stays silent."""
    spec = cluster.spec
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _START_WAIT
    async with client([spec.client_peers[i]], token) as kv:
        while True:
            if i in cluster.exited():
                raise CommandError(
                    f"node {i} exited at start-up (exit code {cluster.exited()[i]}): "
                    f"{cluster.exit_cause(i)}; log: {spec.log_path(i)}",
                    code=1,
                )
            try:
                await kv.status(spec.client_peers[i], timeout=0.5)
                return
            except KVUnavailableError:
                pass
            except KVRequestError as exc:
                raise refused(exc, token) from None
            if loop.time() >= deadline:
                raise CommandError(
                    f"node {i} does not answer within {_START_WAIT:.0f} s; log: {spec.log_path(i)}",
                    code=1,
                )
            await asyncio.sleep(0.1)


# --------------------------------------------------------------------------- remove


def cmd_cluster_remove(args: argparse.Namespace) -> int:
    return _loop.run(_cluster_remove(Path(args.dir), args), _loop.default_loop())


async def _cluster_remove(directory: Path, args: argparse.Namespace) -> int:
    spec = settled(load_spec(directory))
    if args.id not in spec.ids:
        raise CommandError(
            f"node {args.id} is not a node of the cluster in {directory} (its nodes: "
            f"{', '.join(map(str, spec.ids))})"
        )
    token = spec_secret(spec)
    async with admin(spec.member_client_peers, token, args.timeout) as cluster_admin:
        try:
            result = await cluster_admin.remove_member(args.id)
        except KVRequestError as exc:
            # One that `cluster add` started but never added, or removed by hand:
            # only its process and cluster.json are left to tidy.
            if exc.error != MEMBERSHIP:
                raise
            result = await cluster_admin.members()
            if result.role(args.id) is not None:
                raise
            print(f"node {args.id} was not a member of the configuration")
    spec = spec.without_node(args.id)
    _save(spec)
    pid = stop_node(spec, args.id)
    if pid is not None:
        await wait_stopped([pid])
    stopped = f"stopped its process (pid {pid})" if pid is not None else "it was not running"
    print(f"node {args.id} removed; {stopped}; its data stays in {spec.data_dir(args.id)}")
    _print_members(result)
    return 0


def _print_members(members: Members) -> None:
    for line in members_table(members):
        print(line)
