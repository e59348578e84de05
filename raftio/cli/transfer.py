"""`raftio transfer [--to ID]`: hand the cluster's leadership to another voter
(Raft thesis 3.10), e.g. before upgrading the leader's machine."""

from __future__ import annotations

import argparse
from typing import Any

from raftio import _loop
from raftio.cli.client import add_admin_target, admin
from raftio.cli.common import node_id, target


def add_parser(commands: Any) -> None:
    p = commands.add_parser("transfer", help="hand leadership to another voter")
    p.add_argument("--to", type=node_id, metavar="ID",
                   help="the voter to lead (default: the most caught-up one)")  # fmt: skip
    add_admin_target(p)
    p.set_defaults(run=cmd_transfer)


def cmd_transfer(args: argparse.Namespace) -> int:
    addresses, token = target(args)
    leader = _loop.run(_transfer(addresses, token, args), _loop.default_loop())
    print(f"node {leader} leads")
    return 0


async def _transfer(addresses: list[str], token: bytes | None, args: argparse.Namespace) -> int:
    async with admin(addresses, token, args.timeout) as cluster:
        return await cluster.transfer(args.to)
