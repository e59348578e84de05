"""A 64 MiB state reaches a new node over real TCP, streamed, in bounded memory.

Nodes on loopback with FileStorage: two make the cluster and grow a
BulkState (bytes generated on demand, so the state costs no memory) past
64 MiB; the leader snapshots it in the background. A third joins as a
learner once both logs are compacted, starts empty and catches up from the
snapshot in 1 MiB chunks. (Had it been a member from the start, an
AppendEntries queued for it before the compaction could carry it the whole
log once it came up: on a busy machine one did.) tracemalloc watches the
whole process (both ends): the peak growth stays far below the state.
The 1 GiB version, with RSS per process, is `raftio bench --snapshot`.
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from raftio.config import RaftConfig
from raftio.kv.spec import free_ports
from raftio.node import Node
from raftio.storage import wal
from raftio.testing.bulk_state import BulkState

STATE = 64 << 20
BOUND = 24 << 20  # peak traced memory growth while it streams, both ends together
SECRET = b"snapshot-stream-test"


def make_node(
    i: int, addresses: dict[int, str], root: Path, machine: BulkState, *, join: bool = False
) -> Node:
    return Node(
        i,
        addresses,
        str(root / f"n{i}"),
        machine,
        join=join,
        secret=SECRET,
        snapshot_bytes=1024,
        config=RaftConfig(),
    )


async def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - polls nodes that have no event to wait on
            await asyncio.sleep(0.02)


def test_a_new_node_catches_up_from_a_64_mib_snapshot_in_bounded_memory(tmp_path: Path) -> None:
    async def main() -> None:
        addresses = dict(enumerate(f"127.0.0.1:{port}" for port in free_ports(3)))
        machines = [BulkState(seed=7) for _ in range(3)]
        founders = {i: addresses[i] for i in range(2)}
        nodes = [make_node(i, founders, tmp_path, machines[i]) for i in range(2)]
        for node in nodes:
            await node.start()
        try:
            await wait_for(lambda: any(n.is_leader() for n in nodes))
            leader = next(n for n in nodes if n.is_leader())
            for _ in range(8):
                await leader.propose(("grow", STATE // 8))
            for k in range(40):  # past snapshot_bytes: the leader snapshots, streamed
                await leader.propose(("put", f"v{k}" + "x" * 100))
            # Both logs start past the grows: whoever leads must send the snapshot.
            await wait_for(lambda: all(n.raft.status().snapshot_index >= 9 for n in nodes))

            tracemalloc.start()
            try:
                base, _ = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                late = make_node(2, {2: addresses[2]}, tmp_path, machines[2], join=True)
                nodes.append(late)
                await late.start()
                await leader.add_member(2, addresses[2], voter=False)
                writes = 0
                while machines[2].size < STATE:  # writes keep committing meanwhile
                    await leader.propose(("put", f"during{writes}"))
                    writes += 1
                    await asyncio.sleep(0.01)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            await wait_for(lambda: machines[2].register == machines[0].register != "")
        finally:
            for node in nodes:
                await node.close(transfer=False)

        assert machines[2].restores >= 1
        assert peak - base < BOUND, f"peak growth {(peak - base) >> 20} MiB"
        assert writes > 0
        out.update(peak=peak - base, writes=writes)

    out: dict[str, int] = {}
    asyncio.run(main())
    snaps = [n for n in os.listdir(tmp_path / "n2") if n.endswith(".snap")]
    assert len(snaps) == 1
    size = os.path.getsize(tmp_path / "n2" / snaps[0]) - wal.SNAPSHOT_HEADER_SIZE
    assert size >= STATE
    print(f"peak traced growth {out['peak'] / 2**20:.1f} MiB; {out['writes']} writes meanwhile")
