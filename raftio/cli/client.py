"""Asking running nodes, as `cluster up`, `kv` and `status` do: the client,
every node's status, a node's refusal as one line, the status table."""

from __future__ import annotations

from typing import Any

from raftio.cli.common import CommandError
from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.display import status_table
from raftio.kv.protocol import UNAUTHORIZED


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


def refused(exc: KVRequestError, token: bytes | None) -> CommandError:
    """A node's refusal as one line; for `unauthorized`, what to do about it."""
    hint = ""
    if exc.error == UNAUTHORIZED:
        hint = ("; give the cluster's secret: --secret-file FILE, or --dir DIR" if token is None
                else "; is this the cluster's secret file?")  # fmt: skip
    return CommandError(f"{exc}{hint}", code=1)


def print_table(statuses: list[dict[str, Any] | None], pids: dict[int, int]) -> None:
    for line in status_table(statuses, pids=dict(pids.items())):
        print(line)
