"""FileStorage against real files: MemoryStorage semantics, reopening, group commit,
the lock, fault injection and stall hooks."""

from __future__ import annotations

import asyncio
import errno
import os
import random
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftio import codec
from raftio.membership import Configuration, encode_configuration
from raftio.messages import Entry
from raftio.storage import wal
from raftio.storage.base import StorageCorruptError, StorageError
from raftio.storage.file import Disk, FileStorage, StorageLockedError
from raftio.storage.memory import MemoryStorage
from raftio.storage.recovery import LogState, entry_size
from raftio.testing import run

# --- equivalence with MemoryStorage -------------------------------------------------


class NoFsyncDisk(Disk):
    """Real files without fsync: these tests are about what is written, not when it
    is durable, and a busy disk's fsync would make hundreds of examples slow."""

    def fdatasync(self, fd: int) -> None:
        pass

    def fsync_dir(self, fd: int) -> None:
        pass


Op = tuple[Any, ...]
# What a snapshot's configuration may be: none (a fixed peer list), or one with learners.
CONFIGS = [
    None,
    Configuration({0: "127.0.0.1:7000"}),
    Configuration({0: "a:1", 1: "b:2", 5: "c:3"}, {9: "d:4"}),
]

ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("hard"), st.integers(0, 300), st.sampled_from([None, 0, 1, 2])),
        st.tuples(
            st.just("append"),
            st.integers(0, 4),  # how far before the end the append starts
            st.lists(st.tuples(st.integers(0, 300), st.binary(max_size=300)), max_size=5),
        ),
        st.tuples(
            st.just("snap"),
            st.integers(-1, 8),
            st.integers(0, 300),
            st.binary(max_size=50),
            st.sampled_from(CONFIGS),
        ),
        st.tuples(st.just("gap")),
        st.tuples(st.just("sync")),
        st.tuples(st.just("reopen")),
    ),
    max_size=40,
)


def apply_op(storage: MemoryStorage | FileStorage, op: Op) -> None:
    """Apply a generated op; positions are relative to the current log, so both agree."""
    state = storage.load()
    last = state.snapshot_index + len(state.entries)
    if op[0] == "hard":
        storage.save_hard_state(op[1], op[2])
    elif op[0] == "append":
        first = max(last + 1 - op[1], state.snapshot_index + 1)
        storage.append_entries(first, [Entry(t, d) for t, d in op[2]])
    elif op[0] == "snap":
        storage.save_snapshot(state.snapshot_index + op[1], op[2], op[3], op[4])
    elif op[0] == "gap":
        with pytest.raises(ValueError, match="gap"):
            storage.append_entries(last + 2, [Entry(1, b"x")])


def assert_same(file: FileStorage, mem: MemoryStorage) -> None:
    assert file.load() == mem.load()
    assert file.read_snapshot() == mem.read_snapshot()
    assert file.raft_state_size() == mem.raft_state_size()
    assert file.snapshot_size() == mem.snapshot_size()


async def run_equivalence(directory: str, ops: list[Op], **options: Any) -> None:
    options["disk"] = NoFsyncDisk()
    mem = MemoryStorage()
    file = FileStorage(directory, **options)
    try:
        for op in ops:
            if op[0] == "sync":
                await wait_sync(file)
            elif op[0] == "reopen":
                await wait_sync(file)
                file.close()
                file = FileStorage(directory, **options)
            else:
                apply_op(mem, op)
                apply_op(file, op)
            assert_same(file, mem)
        await wait_sync(file)
    finally:
        file.close()
    with FileStorage(directory, **options) as reopened:
        assert_same(reopened, mem)


async def wait_sync(storage: FileStorage) -> None:
    pending = storage.sync()
    if pending is not None:
        await pending


@settings(max_examples=60, deadline=None, derandomize=True)
@given(ops=ops_strategy)
def test_same_observable_state_as_memory_storage(ops: list[Op]) -> None:
    # Hypothesis reports the falsifying op list; derandomize makes every run the same.
    with tempfile.TemporaryDirectory() as directory:
        run(run_equivalence(directory, ops))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(ops=ops_strategy)
def test_same_state_with_tiny_segments_and_eager_compaction(ops: list[Op]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        run(run_equivalence(directory, ops, segment_size=256, compact_min_bytes=0))


def test_long_random_sequence_matches_memory_storage(tmp_path: Path, seed: int) -> None:
    print(f"seed={seed}")
    rng = random.Random(seed)
    ops: list[Op] = []
    for _ in range(400):
        kind = rng.choices(["hard", "append", "snap", "sync", "reopen"], [10, 60, 8, 20, 2])[0]
        if kind == "hard":
            ops.append(("hard", rng.randrange(50), rng.choice([None, 0, 1, 2])))
        elif kind == "append":
            entries = [(rng.randrange(50), rng.randbytes(rng.randrange(200))) for _ in range(3)]
            ops.append(("append", rng.choice([0, 0, 0, 1, 3]), entries[: rng.randrange(4)]))
        elif kind == "snap":
            snap = ("snap", rng.randrange(1, 20), rng.randrange(50), rng.randbytes(100))
            ops.append((*snap, rng.choice(CONFIGS)))
        else:
            ops.append((kind,))

    run(run_equivalence(str(tmp_path), ops, segment_size=2048, compact_min_bytes=4096))


@settings(max_examples=300, derandomize=True)
@given(term=st.integers(0, 2**64 - 1), data=st.binary(max_size=70000))
def test_entry_size_is_the_encoded_length(term: int, data: bytes) -> None:
    assert entry_size(Entry(term, data)) == len(codec.pack([term, data]))


# --- reopening ----------------------------------------------------------------------


async def test_fresh_directory_is_an_empty_peer(tmp_path: Path) -> None:
    with FileStorage(tmp_path / "new" / "peer") as storage:
        assert storage.load() == MemoryStorage().load()
        assert storage.read_snapshot() == b""
        assert storage.sync() is None
        assert storage.raft_state_size() == MemoryStorage().raft_state_size()


async def test_a_snapshots_configuration_survives_reopening_and_compaction(
    tmp_path: Path,
) -> None:
    config = CONFIGS[2]
    storage = FileStorage(tmp_path, segment_size=256, compact_min_bytes=0)
    storage.append_entries(1, [Entry(1, bytes(100)) for _ in range(6)])
    storage.save_snapshot(3, 1, b"snap", config)
    storage.append_entries(7, [Entry(1, bytes(100)) for _ in range(6)])  # rolls segments
    await wait_sync(storage)
    storage.close()

    with FileStorage(tmp_path) as reopened:
        state = reopened.load()
        assert state.snapshot_config == config
        assert state.snapshot_index == 3


def test_a_snapshot_marker_round_trips_its_configuration() -> None:
    encoded = encode_configuration(CONFIGS[1])
    body = wal.snapshot_mark_body(4, 2, wal.snapshot_name(4, 2), encoded)

    assert wal.decode_body(body) == wal.SnapshotMark(4, 2, wal.snapshot_name(4, 2), encoded)
    assert wal.decode_body(wal.snapshot_mark_body(4, 2, "f")) == wal.SnapshotMark(4, 2, "f")


def test_a_configuration_that_does_not_decode_is_corruption() -> None:
    state = LogState()
    state.compact(4, 2, wal.snapshot_name(4, 2), b"\xc1\xc1{")

    with pytest.raises(StorageCorruptError, match="configuration"):
        state.durable_state()


async def test_synced_state_survives_reopening(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.save_hard_state(3, 1)
    storage.append_entries(1, [Entry(1, b"a"), Entry(2, b"b"), Entry(3, b"c")])
    storage.save_snapshot(2, 2, b"snap")
    await wait_sync(storage)
    expected = storage.load()
    storage.close()

    with FileStorage(tmp_path) as reopened:
        assert reopened.load() == expected
        assert reopened.load().entries == [Entry(3, b"c")]
        assert reopened.read_snapshot() == b"snap"


async def test_close_drops_unsynced_writes_like_a_crash(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.append_entries(1, [Entry(1, b"synced")])
    await wait_sync(storage)
    storage.append_entries(2, [Entry(1, b"never synced")])
    storage.close()

    with FileStorage(tmp_path) as reopened:
        assert reopened.load().entries == [Entry(1, b"synced")]


async def test_compaction_shrinks_state_size_and_disk_use(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)  # default segment and compaction thresholds
    for index in range(1, 12001):
        storage.append_entries(index, [Entry(1, bytes(100))])
    await wait_sync(storage)
    size_before, disk_before = storage.raft_state_size(), disk_use(tmp_path)

    storage.save_snapshot(11990, 1, b"s" * 1000)
    await wait_sync(storage)

    assert size_before > 1_000_000
    assert storage.raft_state_size() < 2000
    assert disk_use(tmp_path) < 20_000 < disk_before
    assert sorted(os.listdir(tmp_path)) == [
        "LOCK", "MANIFEST", "snap-0000000000002ed6-0000000000000001.snap",
        "wal-0000000000000002.log",
    ]  # fmt: skip
    storage.close()
    with FileStorage(tmp_path) as reopened:
        assert len(reopened.load().entries) == 10


def disk_use(directory: Path) -> int:
    """Bytes of content: a segment's preallocated zeros after its records do not count."""
    total = 0
    for path in directory.iterdir():
        if path.name.startswith("wal-"):
            data = path.read_bytes()
            total += wal.scan_newest(str(path), data).end
        else:
            total += path.stat().st_size
    return total


async def test_an_older_snapshot_is_deleted_once_the_new_marker_is_durable(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.append_entries(1, [Entry(1, b"x")] * 4)
    storage.save_snapshot(2, 1, b"first")
    await wait_sync(storage)
    storage.save_snapshot(3, 1, b"second")
    await wait_sync(storage)

    snapshots = [name for name in os.listdir(tmp_path) if name.endswith(".snap")]
    assert snapshots == ["snap-0000000000000003-0000000000000001.snap"]
    storage.close()


# --- group commit -------------------------------------------------------------------


async def test_256_concurrent_waiters_share_a_few_fsyncs(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    fsyncs_before = storage.fsync_count

    async def writer(payload: bytes) -> None:
        storage.append_entries(storage.load().snapshot_index + len(storage.load().entries) + 1,
                               [Entry(1, payload)])  # fmt: skip
        await wait_sync(storage)

    await asyncio.gather(*(writer(b"%d" % i) for i in range(256)))

    assert len(storage.load().entries) == 256
    assert storage.fsync_count - fsyncs_before <= 4
    assert storage.durable_version == storage.written_version == 256
    storage.close()


class GatedDisk(Disk):
    """Holds each fdatasync until the test opens the gate; logs every call."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Semaphore(0)
        self.calls: list[tuple[str, int]] = []
        self.threads: set[int] = set()

    def write(self, fd: int, data: bytes | bytearray) -> None:
        self.calls.append(("write", len(data)))
        self.threads.add(threading.get_ident())
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        self.calls.append(("fdatasync", 0))
        self.threads.add(threading.get_ident())
        self.entered.release()
        self.gate.wait()
        super().fdatasync(fd)


async def test_writes_during_an_fsync_go_into_the_next_batch(tmp_path: Path) -> None:
    disk = GatedDisk()
    storage = FileStorage(tmp_path, disk=disk)
    disk.gate.clear()
    storage.append_entries(1, [Entry(1, b"a")])
    first = storage.sync()
    assert first is not None
    await asyncio.to_thread(disk.entered.acquire)  # the first batch is inside fdatasync

    joins_first = storage.sync()  # nothing new written: shares the batch in flight
    storage.append_entries(2, [Entry(1, b"b")])
    second, also_second = storage.sync(), storage.sync()
    assert joins_first is not None
    assert second is not None
    assert also_second is not None
    assert storage.durable_version == 0
    disk.gate.set()
    await first
    await joins_first
    assert storage.durable_version == 1 < storage.written_version
    assert not second.done()

    await asyncio.gather(second, also_second)
    assert storage.durable_version == storage.written_version == 2
    size = len(wal.encode_entries(1, [Entry(1, b"a")]))
    # The second batch starts with a watermark record: the first batch is durable.
    start = len(wal.encode_checkpoint(wal.Checkpoint(1, 0, None, 0, 0, "", [])))
    mark = len(wal.frame(wal.watermark_body(start + size)))
    assert disk.calls[-5:] == [
        ("write", size), ("fdatasync", 0), ("write", mark), ("write", size), ("fdatasync", 0),
    ]  # fmt: skip
    storage.close()


async def test_writes_synced_in_one_loop_iteration_share_one_fsync(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.append_entries(1, [Entry(1, b"warm-up")])  # the first segment's own fsyncs
    await wait_sync(storage)
    fsyncs_before = storage.fsync_count

    # A burst as Raft makes it: each write followed by sync(), no await in between.
    pending = []
    for index in range(2, 52):
        storage.append_entries(index, [Entry(1, b"%d" % index)])
        fut = storage.sync()
        assert fut is not None
        pending.append(fut)
    await asyncio.gather(*pending)

    assert storage.fsync_count - fsyncs_before == 1
    assert storage.durable_version == storage.written_version == 51
    storage.close()
    with FileStorage(tmp_path) as reopened:
        assert len(reopened.load().entries) == 51


async def test_sync_returns_none_when_everything_is_durable(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        assert storage.sync() is None
        storage.save_hard_state(1, None)
        await wait_sync(storage)
        assert storage.sync() is None
        storage.append_entries(1, [])  # appends nothing, truncates nothing: nothing to write
        assert storage.sync() is None


async def test_disk_io_never_runs_on_the_event_loop_thread(tmp_path: Path) -> None:
    disk = GatedDisk()
    storage = FileStorage(tmp_path, disk=disk, segment_size=512, compact_min_bytes=0)
    disk.threads.clear()

    for index in range(1, 60):
        storage.append_entries(index, [Entry(1, bytes(40))])
        if index % 20 == 0:
            storage.save_snapshot(index - 5, 1, b"snap")
        await wait_sync(storage)

    assert disk.threads
    assert threading.get_ident() not in disk.threads
    storage.close()


# --- the lock -----------------------------------------------------------------------


def test_a_second_storage_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    first = FileStorage(tmp_path)
    with pytest.raises(StorageLockedError, match=f"already open.*pid {os.getpid()}"):
        FileStorage(tmp_path)

    first.close()
    FileStorage(tmp_path).close()


def test_another_process_cannot_open_a_locked_directory(tmp_path: Path) -> None:
    script = "import sys; from raftio.storage.file import FileStorage; FileStorage(sys.argv[1])"
    with FileStorage(tmp_path):
        child = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True
        )
        assert child.returncode != 0
        assert "StorageLockedError" in child.stderr
        assert "already open" in child.stderr

    after_close = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True)
    assert after_close.returncode == 0


# --- faults -------------------------------------------------------------------------


class FailingDisk(Disk):
    """Raises `error` from the armed call; with `partial`, writes half the data first."""

    def __init__(self) -> None:
        self.fail_write: OSError | None = None
        self.fail_fsync: OSError | None = None
        self.partial = False

    def write(self, fd: int, data: bytes | bytearray) -> None:
        if self.fail_write is not None:
            if self.partial:
                super().write(fd, data[: len(data) // 2])
            raise self.fail_write
        super().write(fd, data)

    def fdatasync(self, fd: int) -> None:
        if self.fail_fsync is not None:
            raise self.fail_fsync
        super().fdatasync(fd)


@pytest.mark.parametrize("partial", [False, True])
async def test_a_full_disk_fails_the_sync_and_every_later_one(
    tmp_path: Path, partial: bool, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FailingDisk()
    storage = FileStorage(tmp_path, disk=disk)
    storage.append_entries(1, [Entry(1, b"durable")])
    await wait_sync(storage)

    disk.fail_write, disk.partial = OSError(errno.ENOSPC, "No space left on device"), partial
    storage.append_entries(2, [Entry(1, b"lost")])
    with pytest.raises(StorageError, match="No space left"):
        await wait_sync(storage)

    assert storage.failed is not None
    assert "every later sync fails" in caplog.text
    disk.fail_write = None
    with pytest.raises(StorageError, match="No space left"):
        await wait_sync(storage)  # even with nothing new written
    with pytest.raises(StorageError, match="failed earlier"):
        storage.save_hard_state(5, 1)
    storage.close()
    with FileStorage(tmp_path) as reopened:
        assert reopened.load().entries == [Entry(1, b"durable")]


async def test_an_fsync_error_fails_every_waiter(tmp_path: Path) -> None:
    disk = FailingDisk()
    storage = FileStorage(tmp_path, disk=disk)
    disk.fail_fsync = OSError(errno.EIO, "Input/output error")

    async def writer(index: int) -> None:
        storage.append_entries(index, [Entry(1, b"x")])
        await wait_sync(storage)

    results = await asyncio.gather(*(writer(i) for i in range(1, 9)), return_exceptions=True)

    assert all(isinstance(r, StorageError) and "fsync of" in str(r) for r in results)
    assert storage.durable_version == 0
    storage.close()
    with FileStorage(tmp_path) as reopened:
        # The data may have reached the page cache; only its prefix property matters.
        assert reopened.load().entries in ([], [Entry(1, b"x")] * 8)


async def test_close_fails_pending_syncs(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path)
    storage.pause_syncs()
    storage.append_entries(1, [Entry(1, b"x")])
    pending = storage.sync()
    assert pending is not None

    storage.close()

    with pytest.raises(StorageError, match="closed"):
        await pending
    with pytest.raises(StorageError, match="closed"):
        await wait_sync(storage)
    storage.close()  # twice is fine


# --- stall hooks --------------------------------------------------------------------


async def test_pause_holds_syncs_until_resumed(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.pause_syncs()
        storage.save_hard_state(1, 0)
        pending = storage.sync()
        assert pending is not None
        await asyncio.sleep(0.05)
        assert not pending.done()

        storage.resume_syncs()
        await pending
        assert storage.durable_version == 1


async def test_pause_right_after_sync_holds_the_batch_already_scheduled(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        storage.save_hard_state(1, 0)
        fsyncs_before = storage.fsync_count
        pending = storage.sync()  # the batch will be launched later in this iteration...
        assert pending is not None
        storage.pause_syncs()  # ...but the disk stalls first

        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.sleep(0.02)
        assert storage.durable_version == 0
        assert storage.fsync_count == fsyncs_before
        assert not pending.done()

        storage.resume_syncs()
        async with asyncio.timeout(10):
            await pending
        assert storage.durable_version == storage.written_version == 1


async def test_pause_while_a_batch_is_in_flight_holds_only_the_next(tmp_path: Path) -> None:
    disk = GatedDisk()
    storage = FileStorage(tmp_path, disk=disk)
    disk.gate.clear()
    storage.append_entries(1, [Entry(1, b"a")])
    first = storage.sync()
    assert first is not None
    await asyncio.to_thread(disk.entered.acquire)  # the first batch is inside fdatasync

    storage.pause_syncs()
    storage.append_entries(2, [Entry(1, b"b")])
    second = storage.sync()
    assert second is not None
    disk.gate.set()
    await first  # already started: the pause does not hold it
    fdatasyncs = disk.calls.count(("fdatasync", 0))

    for _ in range(5):
        await asyncio.sleep(0)
    await asyncio.sleep(0.02)
    assert storage.durable_version == 1
    assert not second.done()
    assert disk.calls.count(("fdatasync", 0)) == fdatasyncs

    storage.resume_syncs()
    async with asyncio.timeout(10):
        await second
    assert storage.durable_version == storage.written_version == 2
    storage.close()


def test_writes_during_sync_delay_join_the_waiting_batch(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, float, int]:
        loop = asyncio.get_running_loop()
        with FileStorage(tmp_path, sync_delay=5.0) as storage:
            storage.save_hard_state(1, 0)
            await wait_sync(storage)
            fsyncs_before = storage.fsync_count
            started = loop.time()
            pending = []
            for index in range(1, 11):
                storage.append_entries(index, [Entry(1, b"x")])
                fut = storage.sync()
                assert fut is not None
                pending.append(fut)
                await asyncio.sleep(0.4)  # 4 s of loop time: all within the 5 s delay
            await asyncio.gather(*pending)
            assert storage.durable_version == storage.written_version
            return storage.fsync_count - fsyncs_before, loop.time() - started, len(pending)

    fsyncs, elapsed, writes = run(scenario(), loop="virtual")

    assert writes == 10
    assert fsyncs == 1
    assert 5.0 <= elapsed < 5.5


def test_a_pause_during_sync_delay_holds_the_batch_until_resumed(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, bool, float]:
        loop = asyncio.get_running_loop()
        with FileStorage(tmp_path, sync_delay=1.0) as storage:
            storage.save_hard_state(1, 0)
            started = loop.time()
            pending = storage.sync()
            assert pending is not None
            await asyncio.sleep(0.5)
            storage.pause_syncs()  # stalls while the batch waits out its delay
            await asyncio.sleep(10.0)
            held = storage.durable_version
            done_while_paused = pending.done()
            storage.resume_syncs()
            async with asyncio.timeout(5):
                await pending
            assert storage.durable_version == 1
            return held, done_while_paused, loop.time() - started

    held, done_while_paused, elapsed = run(scenario(), loop="virtual")

    assert held == 0
    assert not done_while_paused
    # Resumed at 10.5 s: the batch had served its delay, so it is written at once.
    assert 10.5 <= elapsed < 10.6


def test_sync_delay_runs_on_the_loop_clock(tmp_path: Path) -> None:
    async def scenario() -> tuple[float, bool]:
        loop = asyncio.get_running_loop()
        with FileStorage(tmp_path, sync_delay=30.0) as storage:
            storage.save_hard_state(1, 0)
            started = loop.time()
            pending = storage.sync()
            assert pending is not None
            await asyncio.sleep(29.0)
            early = pending.done()
            await pending
            return loop.time() - started, early

    # On a virtual clock the 30 s stall takes no real time.
    elapsed, early = run(scenario(), loop="virtual")

    assert not early
    assert 30.0 <= elapsed < 31.0


async def test_a_large_unsynced_buffer_is_written_without_a_sync(tmp_path: Path) -> None:
    with FileStorage(tmp_path) as storage:
        for index in range(1, 5001):  # 5 MiB, more than the 4 MiB eager threshold
            storage.append_entries(index, [Entry(1, bytes(1024))])

        for _ in range(500):
            if storage.durable_version:
                break
            await asyncio.sleep(0.01)

        assert storage.durable_version >= 4000
        assert storage.fsync_count >= 3  # the first segment's two, and this batch's
