"""Asking running nodes, as `cluster`, `kv`, `status`, `member` and `transfer`
do: the client, every node's status, a node's refusal as one line, the
status table."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from raftio.cli.common import CommandError, add_target, seconds
from raftio.kv.admin_client import KVAdmin
from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.display import status_table
from raftio.kv.protocol import UNAUTHORIZED, ProtocolError

# Seconds one admin request may take: more than a server's admin_timeout (10 s),
# so that a change still under way is not abandoned and sent again.
ADMIN_ATTEMPT = 15.0


def client(addresses: list[str], token: bytes | None, **options: Any) -> KVClient:
    return KVClient(addresses, token=token, **options)


async def statuses(
    client: KVClient, addresses: list[str], timeout: float = 1.0
) -> list[dict[str, Any] | None]:
    """Each node's status, None for one that does not answer within `timeout` seconds."""
    found: list[dict[str, Any] | None] = []
    for address in addresses:
        try:
            found.append(await client.status(address, timeout=timeout))
        except KVUnavailableError:
            found.append(None)
    return found


def add_admin_target(p: argparse.ArgumentParser) -> None:
    """--dir or --peers, --secret-file and --timeout: the cluster an admin command asks."""
    add_target(p)
    p.add_argument("--timeout", type=seconds, default=60.0,
                   help="give up after this many seconds (default 60)")  # fmt: skip


@contextlib.asynccontextmanager
async def admin(
    addresses: list[str], token: bytes | None, timeout: float
) -> AsyncIterator[KVAdmin]:
    """A KVAdmin of the cluster, its requests bounded by `timeout` seconds in all.

    Raises CommandError (exit 1) when the cluster refuses, cannot be
    reached or does not finish in time.
    """
    try:
        async with client(addresses, token, attempt_timeout=ADMIN_ATTEMPT, deadline=timeout) as kv:
            async with asyncio.timeout(timeout):
                yield KVAdmin(kv)
    except KVUnavailableError as exc:
        raise CommandError(str(exc), code=1) from None
    except KVRequestError as exc:
        raise refused(exc, token) from None
    except TimeoutError:
        raise CommandError(f"no answer within {timeout:g} s (--timeout)", code=1) from None
    except ProtocolError as exc:  # a reply that is not what the protocol says
        raise CommandError(f"a node answered what raftio does not expect: {exc}", code=1) from None


def refused(exc: KVRequestError, token: bytes | None) -> CommandError:
    """A node's refusal as one line; for `unauthorized`, what to do about it."""
    hint = ""
    if exc.error == UNAUTHORIZED:
        hint = ("; give the cluster's secret: --secret-file FILE, or --dir DIR" if token is None
                else "; is this the cluster's secret file?")  # fmt: skip
    return CommandError(f"{exc}{hint}", code=1)


def print_table(
    statuses: list[dict[str, Any] | None], pids: dict[int, int], ids: list[int] | None = None
) -> None:
    for line in status_table(statuses, pids=dict(pids.items()), ids=ids):
        print(line)
