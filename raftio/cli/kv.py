"""`raftio kv`: one get, put or append, through whichever node leads."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from raftio import _loop
from raftio.cli.client import client, refused
from raftio.cli.common import CommandError, add_target, target
from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError

_KV_NOTE_AFTER = 1.0  # seconds `raftio kv` waits silently before saying it is retrying


def add_parser(commands: Any) -> None:
    p = commands.add_parser("kv", help="get, put or append through the cluster's leader")
    add_target(p)
    p.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds")
    p.add_argument("op", choices=["get", "put", "append"])
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="for put and append")
    p.set_defaults(run=cmd_kv)


def cmd_kv(args: argparse.Namespace) -> int:
    if (args.op == "get") != (args.value is None):
        raise CommandError(f"{args.op} takes {'no' if args.op == 'get' else 'a'} VALUE")
    addresses, token = target(args)
    try:
        value = _loop.run(_kv(addresses, token, args), _loop.default_loop())
    except KVUnavailableError as exc:
        raise CommandError(str(exc), code=1) from None
    except KVRequestError as exc:
        raise refused(exc, token) from None
    if value is None:
        print("(nil)", file=sys.stderr)
        return 1
    print(value)
    return 0


async def _kv(addresses: list[str], token: bytes | None, args: argparse.Namespace) -> str | None:
    async with client(addresses, token, deadline=args.timeout) as kv:
        request = asyncio.ensure_future(_kv_request(kv, args.op, args.key, args.value))
        done, _ = await asyncio.wait({request}, timeout=_KV_NOTE_AFTER)
        if not done:  # say why nothing happens yet (no node up, an election, ...)
            print(f"raftio kv: no node has answered yet; retrying for up to {args.timeout:g} s "
                  "(--timeout)", file=sys.stderr)  # fmt: skip
        return await request


async def _kv_request(kv: KVClient, op: str, key: str, value: str | None) -> str | None:
    if op == "get":
        return await kv.get(key)
    if value is None:
        raise ValueError(f"{op} needs a value")  # cmd_kv checked it already
    return await (kv.put if op == "put" else kv.append)(key, value)
