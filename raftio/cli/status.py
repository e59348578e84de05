"""`raftio status`: a table of every node's status (and with --metrics, their metrics)."""

from __future__ import annotations

import argparse
from typing import Any

from raftio import _loop
from raftio.cli.client import client, print_table, refused, statuses
from raftio.cli.common import add_target, load_spec, target
from raftio.kv.client import KVRequestError
from raftio.kv.display import metrics_table
from raftio.kv.local import running_detached


def add_parser(commands: Any) -> None:
    p = commands.add_parser("status", help="a table of every node's status")
    add_target(p)
    p.add_argument("--metrics", action="store_true", help="also a table of each node's metrics")
    p.set_defaults(run=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    addresses, token = target(args)
    spec = load_spec(args.dir) if args.dir else None
    pids = running_detached(spec) if spec is not None else {}
    ids = spec.ids if spec is not None else None  # with --peers: 0, 1, ... in their order
    try:
        found = _loop.run(_status(addresses, token), _loop.default_loop())
    except KVRequestError as exc:
        raise refused(exc, token) from None
    print_table(found, pids, ids)
    if args.metrics:
        print()
        for line in metrics_table(found, ids=ids):
            print(line)
    return 0 if any(found) else 1


async def _status(addresses: list[str], token: bytes | None) -> list[dict[str, Any] | None]:
    async with client(addresses, token) as kv:
        return await statuses(kv, addresses)
