"""Hostile peer input against a live cluster (issue: trust nothing it receives).

Each test runs three Nodes on the in-memory network and the virtual clock,
commits real writes, then hands one node's RPC handlers a frame no honest
peer sends (as the transport would after decoding it: the codec already
checked the field types). Afterwards: no task died unless the node
fail-stopped cleanly and says so, every committed write reads back
unchanged on every node still running, and the cluster still commits.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import raftio
from raftio.codec import encode_command, pack, unpack
from raftio.messages import (
    AppendEntriesArgs,
    Entry,
    InstallSnapshotArgs,
    RequestVoteArgs,
    RequestVoteReply,
)
from raftio.node import Node
from raftio.testing import run
from raftio.transport.memory import Network
from raftio.validate import MAX_TERM_JUMP

ADDRESSES = ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]


class Register:
    """key -> value; commands ("set", key, value); snapshots as msgpack (decoded safely)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    def apply(self, command: Any) -> Any:
        op, key, value = command
        if op != "set":
            raise ValueError(f"unknown op {op!r}")
        self.values[key] = value
        return value

    def snapshot(self) -> bytes:
        return pack(self.values)

    def restore(self, data: bytes) -> None:
        values = unpack(data)
        if not isinstance(values, dict):
            raise ValueError("not a Register snapshot")
        self.values = dict(values)

    def query(self, key: str) -> str | None:
        return self.values.get(key)


async def until(done: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if done():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not within {seconds} s")


class Cluster:
    def __init__(self, seed: int) -> None:
        self.net = Network(seed)
        self.rng = random.Random(seed)
        self.machines = [Register() for _ in ADDRESSES]
        self.nodes: list[Node] = []
        self.written: dict[str, str] = {}

    async def start(self) -> None:
        for i in range(len(ADDRESSES)):
            ends = []
            for j in range(len(ADDRESSES)):
                name = (i, j)
                ends.append(self.net.make_end(name))
                self.net.connect(name, j)
                self.net.enable(name, True)
            node = Node(
                i,
                ADDRESSES,
                None,
                self.machines[i],
                storage=raftio.MemoryStorage(),
                peers=ends,
                snapshot_bytes=4096,
                rng=random.Random(self.rng.random()),
            )
            await node.start()
            self.net.add_server(i, node.raft)
            self.nodes.append(node)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.failure is None]

    async def leader(self) -> Node:
        for _ in range(100):
            for node in self.running():
                if node.raft.get_state()[1]:
                    return node
            await asyncio.sleep(0.05)
        raise AssertionError("no leader within 5 s")

    async def write(self, count: int, prefix: str) -> None:
        """Commit `count` writes through whoever leads, each applied on every running node."""
        for n in range(count):
            key, value = f"{prefix}{n % 7}", f"{prefix}-{n}"
            for _ in range(50):
                leader = await self.leader()
                try:
                    await leader.propose(("set", key, value), timeout=1.0)
                    break
                except raftio.RaftioError:
                    await asyncio.sleep(0.05)
            else:
                raise AssertionError(f"write {key}={value} never committed")
            self.written[key] = value
        await self.settle()

    async def settle(self) -> None:
        leader = await self.leader()
        target = leader.applied_index
        await until(lambda: all(n.applied_index >= target for n in self.running()))

    def check_intact(self) -> None:
        """Every committed write reads back on every running node; no task is dead."""
        for node in self.nodes:
            if node.failure is not None:
                assert node.status().role == "failed"
                continue
            assert node.raft.status().role != "failed"
            tasks = node.raft.running_tasks()
            for name in ("ticker", "applier"):
                assert f"S{node.node_id}-{name}" in tasks, f"S{node.node_id} lost its {name}"
            machine = self.machines[node.node_id]
            for key, value in self.written.items():
                assert machine.values.get(key) == value, (node.node_id, key)

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()
        self.net.cleanup()


def scenario(
    seed: int,
    attack: Callable[[Cluster], Awaitable[None]],
    *,
    survivors: int = 3,
) -> Cluster:
    async def main() -> Cluster:
        cluster = Cluster(seed)
        await cluster.start()
        try:
            await cluster.write(30, "a")
            await attack(cluster)
            await asyncio.sleep(1.0)
            cluster.check_intact()
            await cluster.write(30, "b")  # the cluster still commits
            cluster.check_intact()
            assert len(cluster.running()) >= survivors
        finally:
            await cluster.close()
        return cluster

    print(f"seed={seed} (rerun with --seed {seed})")
    return run(main(), "virtual")


def follower_of(cluster: Cluster) -> Node:
    return next(n for n in cluster.running() if not n.raft.get_state()[1])


@pytest.mark.parametrize("term", [2**64 - 1, 2**63, 2**53, "jump"])
def test_a_vote_request_with_an_absurd_term_changes_nothing(seed: int, term: Any) -> None:
    async def attack(cluster: Cluster) -> None:
        for node in cluster.nodes:
            current = node.raft.get_state()[0]
            bad = current + MAX_TERM_JUMP + 1 if term == "jump" else term
            for pre_vote in (False, True):
                args = RequestVoteArgs(bad, (node.node_id + 1) % 3, 10**6, bad, pre_vote)
                assert await node.raft.request_vote(args) is None
            assert node.raft.get_state()[0] == current
            reason = "term_jump" if term == "jump" else "term_range"
            assert node.metrics()[f'raftio_refused_total{{reason="{reason}"}}'] == 2

    cluster = scenario(seed, attack)
    assert all(n.failure is None for n in cluster.nodes)


def test_a_term_far_but_plausibly_ahead_is_adopted_and_the_cluster_recovers(seed: int) -> None:
    async def attack(cluster: Cluster) -> None:
        node = follower_of(cluster)
        current = node.raft.get_state()[0]
        args = AppendEntriesArgs(current + 1000, (node.node_id + 1) % 3, 0, 0, [], 0)
        assert await node.raft.append_entries(args) is not None
        assert node.raft.get_state()[0] == current + 1000

    scenario(seed, attack)


def test_a_vote_request_inside_the_leaders_lease_moves_no_term(seed: int) -> None:
    """Thesis 4.2.3: a follower that hears its leader ignores a disruptive candidate."""

    async def attack(cluster: Cluster) -> None:
        node = follower_of(cluster)
        current = node.raft.get_state()[0]
        args = RequestVoteArgs(current + 1000, (node.node_id + 1) % 3, 0, 0)
        assert await node.raft.request_vote(args) == RequestVoteReply(current, False)
        assert node.raft.get_state()[0] == current

    scenario(seed, attack)


@pytest.mark.parametrize("index", [2**63, 2**64 - 1, "ahead"])
def test_an_install_snapshot_at_an_absurd_or_forged_index_is_refused(seed: int, index: Any) -> None:
    """A well-formed state at a forged position: installed, its receiver would win
    the next election with a log nobody has and replace every replica's state."""

    async def attack(cluster: Cluster) -> None:
        leader = await cluster.leader()
        node = follower_of(cluster)
        term = node.raft.get_state()[0]
        at = leader.raft.status().last_index + 50 if index == "ahead" else index
        data = pack(dict(cluster.written))  # well-formed state, forged position
        args = InstallSnapshotArgs(term, leader.node_id, at, term, data)
        assert await node.raft.install_snapshot(args) is None
        reason = "snapshot_ahead" if index == "ahead" else "index_range"
        assert node.metrics()[f'raftio_refused_total{{reason="{reason}"}}'] == 1

    scenario(seed, attack)


def test_an_install_snapshot_whose_data_does_not_restore_is_refused(seed: int) -> None:
    async def attack(cluster: Cluster) -> None:
        leader = await cluster.leader()
        for node in cluster.running():
            if node is leader:
                continue
            term = node.raft.get_state()[0]
            last = leader.raft.status().last_index
            # The leader's commit index goes first (a follower refuses a snapshot
            # past it as a forgery); then only the state machine can refuse these.
            mine = node.raft.view.log
            beat = AppendEntriesArgs(
                term, leader.node_id, mine.last_index, mine.last_term, [], last + 5
            )
            assert await node.raft.append_entries(beat) is not None
            for data in (b"\xc1garbage", pack([1, 2, 3]), b""):
                args = InstallSnapshotArgs(term, leader.node_id, last + 5, term, data)
                assert await node.raft.install_snapshot(args) is None
            assert node.raft.status().snapshot_index <= last
            assert node.metrics()['raftio_refused_total{reason="snapshot_invalid"}'] == 3

    cluster = scenario(seed, attack)
    assert all(n.failure is None for n in cluster.nodes)


@pytest.mark.parametrize("where", ["below_commit", "same_term_fork"])
def test_an_append_that_contradicts_the_log_is_refused_and_changes_nothing(
    seed: int, where: str
) -> None:
    """A replayed current-term AppendEntries with one changed entry is no kill switch."""

    async def attack(cluster: Cluster) -> None:
        leader = await cluster.leader()
        node = follower_of(cluster)
        term = node.raft.get_state()[0]
        log = node.raft.view.log
        commit = node.raft.status().commit_index
        assert commit > 3
        at = commit - 1 if where == "below_commit" else log.last_index
        prev_term = log.term_at(at - 1)
        assert prev_term is not None
        mine = log.entry(at)
        forged = Entry(mine.term, encode_command(("set", "a0", "forged")))
        if where == "below_commit":
            forged = Entry(term, forged.data)  # a different term where ours is committed
        args = AppendEntriesArgs(term, leader.node_id, at - 1, prev_term, [forged], commit)
        before = node.raft.status()
        assert await node.raft.append_entries(args) is None
        assert log.entry(at) is mine
        assert node.raft.status() == before
        reason = "committed_conflict" if mine.term != forged.term else "entry_forked"
        assert node.metrics()[f'raftio_refused_total{{reason="{reason}"}}'] == 1

    cluster = scenario(seed, attack)
    assert all(n.failure is None for n in cluster.nodes)
    assert all(m.values["a0"] != "forged" for m in cluster.machines)


def test_a_forged_undecodable_committed_entry_is_skipped_alike_everywhere(seed: int) -> None:
    async def attack(cluster: Cluster) -> None:
        leader = await cluster.leader()
        term = leader.raft.get_state()[0]
        # The leader itself starts an undecodable command (as a forged entry would look).
        # (Raft.start encodes every command: reach past it to the core.)
        index, _, _ = leader.raft._core.start(b"\xc1\xc1 not msgpack")
        leader.raft._schedule_drain()
        await until(lambda: all(node.applied_index >= index for node in cluster.running()))
        assert term == leader.raft.get_state()[0]

    cluster = scenario(seed, attack)
    assert all(n.failure is None for n in cluster.nodes)


def test_a_second_leader_in_the_same_term_is_refused(seed: int) -> None:
    async def attack(cluster: Cluster) -> None:
        leader = await cluster.leader()
        node = follower_of(cluster)
        other = next(n for n in cluster.nodes if n not in (leader, node))
        term = node.raft.get_state()[0]
        last = node.raft.status().last_index
        last_term = node.raft.view.log.term_at(last)
        assert last_term is not None
        forged = Entry(term, encode_command(("set", "x", "forged")))
        args = AppendEntriesArgs(term, other.node_id, last, last_term, [forged], last + 1)
        assert await node.raft.append_entries(args) is None
        assert node.metrics()['raftio_refused_total{reason="second_leader"}'] == 1

    cluster = scenario(seed, attack)
    assert all("x" not in m.values for m in cluster.machines)


def test_an_exception_in_a_peer_task_fail_stops_the_node(seed: int) -> None:
    """A dead ticker must not leave a zombie: the whole node stops and says why."""

    async def attack(cluster: Cluster) -> None:
        node = follower_of(cluster)

        def broken_tick(now: float | None = None, late: int = 0) -> None:
            raise RuntimeError("injected")

        node.raft._core.tick = broken_tick  # type: ignore[method-assign]
        await asyncio.sleep(0.1)
        assert node.failure is not None
        assert "injected" in node.failure
        status = node.status()
        assert (status.role, status.failure) == ("failed", node.failure)
        assert node.raft.get_state()[1] is False
        with pytest.raises(raftio.errors.NodeFailedError):
            await node.propose(("set", "k", "v"))
        # It answers nothing now, so it cannot block anyone's (pre-)votes.
        args = RequestVoteArgs(node.raft.get_state()[0] + 1, (node.node_id + 1) % 3, 10**3, 1)
        assert await node.raft.request_vote(args) is None

    scenario(seed, attack, survivors=2)
