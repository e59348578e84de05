"""`raftio member list | add ID RAFT_ADDRESS CLIENT_ADDRESS [--learner] | remove ID`:
the cluster's configuration, read and changed through its leader.

These only talk to the cluster: they neither start nor stop processes, nor
edit a cluster directory's cluster.json (`raftio cluster add` / `remove` do).
"""

from __future__ import annotations

import argparse
from typing import Any

from raftio import _loop
from raftio.cli.client import add_admin_target, admin
from raftio.cli.common import member_address, node_id, target
from raftio.kv.display import members_table
from raftio.kv.protocol import Members


def add_parser(commands: Any) -> None:
    p = commands.add_parser("member", help="list, add or remove the cluster's members")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the leader's configuration: voters and learners")
    add_admin_target(listing)
    add = actions.add_parser("add", help="add a node started with --join (a voter once caught up)")
    add.add_argument("id", type=node_id, help="the new node's id (never one used before)")
    add.add_argument("raft_address", type=member_address, metavar="RAFT_ADDRESS",
                     help="its Raft host:port (its --peers entry)")  # fmt: skip
    add.add_argument("client_address", type=member_address, metavar="CLIENT_ADDRESS",
                     help="its client host:port (its --client-peers entry)")  # fmt: skip
    add.add_argument("--learner", action="store_true",
                     help="keep it a learner: it replicates but never votes")  # fmt: skip
    add_admin_target(add)
    remove = actions.add_parser("remove", help="remove a voter or learner")
    remove.add_argument("id", type=node_id, help="the member's id")
    add_admin_target(remove)
    p.set_defaults(run=cmd_member)


def cmd_member(args: argparse.Namespace) -> int:
    addresses, token = target(args)
    members = _loop.run(_member(addresses, token, args), _loop.default_loop())
    for line in members_table(members):
        print(line)
    return 0


async def _member(addresses: list[str], token: bytes | None, args: argparse.Namespace) -> Members:
    async with admin(addresses, token, args.timeout) as cluster:
        if args.action == "add":
            return await cluster.add_member(
                args.id, args.raft_address, args.client_address, voter=not args.learner
            )
        if args.action == "remove":
            return await cluster.remove_member(args.id)
        return await cluster.members()
