"""SimStorage: writes are durable once a simulated fsync finishes; crashes keep exactly that."""

from __future__ import annotations

import asyncio
import random

import pytest

from raftio.messages import Entry
from raftio.storage.base import StorageError
from raftio.testing import run
from raftio.testing.sim import SimStorage

E1, E2 = Entry(1, b"a"), Entry(1, b"b")


def storage(latency: tuple[float, float] = (0.01, 0.01)) -> SimStorage:
    return SimStorage(random.Random(1), latency)


def test_writes_become_durable_when_the_sync_finishes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = storage()
        s.save_hard_state(1, 0)
        s.append_entries(1, [E1])

        assert s.load().entries == [E1]  # the live view sees the write at once
        assert s.durable_state().entries == []
        assert s.has_unsynced()

        pending = s.sync()
        assert pending is not None
        assert s.sync() is pending  # nothing new: the in-flight sync covers everything
        await pending
        assert loop.time() == pytest.approx(0.01)
        assert s.durable_state().current_term == 1
        assert s.durable_state().entries == [E1]
        assert s.sync() is None
        assert not s.has_unsynced()

    run(main(), loop="virtual")


@pytest.mark.parametrize(("lose", "kept"), [(True, [E1]), (False, [E1, E2])])
def test_a_crash_keeps_synced_writes_and_unsynced_ones_only_if_asked(
    lose: bool, kept: list[Entry]
) -> None:
    async def main() -> None:
        s = storage()
        s.append_entries(1, [E1])
        first = s.sync()
        assert first is not None
        await first
        s.append_entries(2, [E2])
        s.sync()  # in flight at the crash

        restarted = s.crash(lose_unsynced=lose)

        assert restarted.load().entries == kept
        assert restarted.durable_state().entries == kept

    run(main(), loop="virtual")


def test_syncs_finish_in_order_and_a_stall_delays_later_ones() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        s = storage()
        s.append_entries(1, [E1])
        first = s.sync()
        s.stall(5.0)
        s.append_entries(2, [E2])
        second = s.sync()
        assert first is not None
        assert second is not None

        await first
        assert loop.time() == pytest.approx(0.01)  # issued before the stall
        await second
        assert loop.time() == pytest.approx(5.01)

    run(main(), loop="virtual")


def test_an_injected_failure_fails_that_sync_and_every_later_one() -> None:
    async def main() -> None:
        s = storage()
        s.fail_next_sync()
        s.append_entries(1, [E1])
        failed = s.sync()
        assert failed is not None
        with pytest.raises(StorageError):
            await failed
        s.append_entries(2, [E2])
        later = s.sync()
        assert later is not None
        with pytest.raises(StorageError):
            await later

        assert s.failed
        assert s.crash(lose_unsynced=False).load().entries == []  # nothing was made durable

    run(main(), loop="virtual")


def test_snapshots_compact_the_durable_log_too() -> None:
    async def main() -> None:
        s = storage()
        s.append_entries(1, [E1, E2])
        s.save_snapshot(1, 1, b"snap")
        pending = s.sync()
        assert pending is not None
        await pending

        restarted = s.crash(lose_unsynced=True)

        state = restarted.load()
        assert (state.snapshot_index, state.snapshot_term, state.entries) == (1, 1, [E2])
        assert restarted.read_snapshot() == b"snap"
        assert restarted.snapshot_size() == 4

    run(main(), loop="virtual")
