"""The peer-protocol campaign on the in-memory network: capture, inject, then check.

`run_peer_campaign(PeerParams(seed=s, frames=n))` runs on the virtual clock:

1. **capture**: a 3-node cluster of real `Node`s over `transport.memory`
   elects, commits writes, loses its leader (RequestVote), snapshots and
   brings a restarted laggard back (InstallSnapshot); every request each
   node receives, and its reply, is kept as a `Seed`.
2. **inject**: while writers keep proposing, `frames` mutants are handed to
   the nodes' RPC handlers as the transport would (decoded by
   `codec.decode_message`; refused there if malformed), one every
   `mean_gap` virtual seconds on average. Every reply must encode.
3. **check** (`Outcome.problems()`): no task died and no handler raised (an
   ERROR line with a traceback, a CRITICAL line, an exception); no node is
   a zombie (every running peer still has its ticker and its applier); no
   node fail-stopped (a refused frame must never cost a node), and any that
   did restarts; a leader within 5 s; a write commits; every acknowledged
   write reads back unchanged on every node and the replicas agree; then
   the whole cluster restarts from its storage and all of that holds again.

A campaign is a pure function of its parameters: the same seed replays the
same frames at the same virtual times. Nothing here reads a real clock but
the wall-time figure of the report.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from raftio import codec
from raftio.testing.clock import run
from raftio.testing.mutate.cluster import (
    _WRITE_ERRORS,
    LEADER_BOUND,
    FuzzCluster,
    Outcome,
    PeerParams,
    Register,
    _LogWatch,
)
from raftio.testing.mutate.engine import PEER_METHODS, Mutant, Mutator, Seed

__all__ = ["Outcome", "PeerParams", "Register", "capture_corpus", "run_peer_campaign"]


class _Campaign:
    def __init__(self, params: PeerParams) -> None:
        self.p = params
        self.outcome = Outcome(params)
        self.corpus: list[Seed] = []
        self.cluster = FuzzCluster(
            params.seed, params.peers, params.snapshot_bytes, self.corpus, params.machine
        )
        self.acked: dict[str, str] = {}
        self.failed: dict[str, str] = {}
        self.frame = -1
        self.last: Mutant | None = None  # the latest mutant handed to a node
        self._stop = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._writes = 0

    # --- phases ---

    async def run(self) -> Outcome:
        c, loop = self.cluster, asyncio.get_running_loop()
        started = loop.time()
        for i in range(c.n):
            await c.start(i)
        await self.capture()
        writers = [loop.create_task(self.writer(w)) for w in range(self.p.writers)]
        await self.inject()
        self._stop = True
        await asyncio.gather(*writers)
        await self.check()
        self.outcome.virtual_seconds = loop.time() - started
        return self.outcome

    async def capture(self) -> None:
        """Elections, writes, a snapshot sent to a laggard: the real frames to mutate."""
        c = self.cluster
        await c.wait_leader(10.0)
        await self.write_some(20)
        old = c.leader()
        if old is not None:  # lose the leader: RequestVote and its replies
            await c.crash(old.node_id)
            await c.wait_leader(10.0)
            await self.write_some(10)
            await self.restart(old.node_id)
        leader = c.leader()
        laggard = next((i for i in range(c.n) if leader is None or i != leader.node_id), 0)
        await c.crash(laggard)
        await self.write_some(120)  # past snapshot_bytes: the leader compacts
        await self.restart(laggard)  # and brings the laggard back with InstallSnapshot
        await asyncio.sleep(1.0)
        await self.write_some(10)
        c.recording = False
        self.corpus[:] = _keep_varied(self.corpus, random.Random(self.p.seed), per_method=300)
        self.outcome.corpus = len(self.corpus)

    async def write_some(self, count: int) -> None:
        for _ in range(count):
            await self.write_one("c")

    async def write_one(self, prefix: str) -> None:
        leader = self.cluster.leader()
        if leader is None:
            await asyncio.sleep(0.05)
            return
        self._writes += 1
        key, value = f"{prefix}{self._writes}", f"v{self._writes}.{self.p.seed}"
        try:
            await leader.propose(("set", key, value), timeout=1.0)
        except _WRITE_ERRORS:
            self.failed[key] = value
            self.outcome.writes_failed += 1
            return
        except Exception as exc:
            self.outcome.add("other", f"propose raised {exc!r:.200}")
            return
        self.acked[key] = value
        self.outcome.writes_acked += 1

    async def writer(self, w: int) -> None:
        while not self._stop:
            await self.write_one(f"w{w}.")
            await asyncio.sleep(0.005)

    async def inject(self) -> None:
        p = self.p
        mutator = Mutator(self.corpus, p.seed, p.peers)
        rng = random.Random(f"gaps:{p.seed}")
        numbers = range(p.frames) if p.only is None else [p.only]
        for n in numbers:
            if len(self.outcome.found) >= p.max_problems:
                self.outcome.add("other", f"stopped injecting after frame {self.frame}")
                break
            await asyncio.sleep(rng.expovariate(1 / p.mean_gap))
            self.frame = n
            while len(self._inflight) >= 16:  # handlers waiting on storage: bound them
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.get_running_loop().create_task(self.deliver(mutator.mutant(n)))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            if n % 500 == 499:
                self.check_tasks()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=10.0)

    async def deliver(self, mutant: Mutant) -> None:
        """Hand one mutant to its target's handler, as the transport would."""
        out = self.outcome
        out.injected += 1
        self.last = mutant
        node = self.cluster.nodes[mutant.target]
        if node is None or mutant.method not in PEER_METHODS:
            return
        try:
            args = codec.decode_message(mutant.payload)
        except codec.CodecError:
            out.codec_refused += 1
            return
        except Exception as exc:
            out.add("codec", f"decode_message raised {exc!r:.200}", f" on {mutant.describe()}")
            return
        handler: Callable[[Any], Awaitable[Any]] = getattr(node.raft, mutant.method)
        try:
            reply = await handler(args)
        except Exception as exc:
            out.add(
                "task died or raised", f"handler raised {exc!r:.200}", f" on {mutant.describe()}"
            )
            return
        if reply is None:
            out.unanswered += 1
            return
        out.answered += 1
        try:
            codec.encode_message(reply)
        except Exception as exc:
            out.add(
                "reply", f"{type(reply).__name__} does not encode ({exc})", f": {mutant.describe()}"
            )

    # --- checks ---

    def check_tasks(self) -> None:
        """No zombie: a running peer has its ticker and its applier."""
        for i, node in enumerate(self.cluster.nodes):
            if node is None or node.raft.killed():
                continue
            names = node.raft.running_tasks()
            missing = [t for t in ("ticker", "applier") if f"S{i}-{t}" not in names]
            if missing:
                problem = f"S{i} running without {', '.join(missing)}"
                self.outcome.add("zombie", problem, f" (seen after frame {self.frame})")

    async def restart_failed(self) -> None:
        c = self.cluster
        for i, node in enumerate(c.nodes):
            if node is not None and node.raft.killed():
                role = node.status().role
                if role != "failed":
                    self.outcome.add("other", f"S{i} fail-stopped but its status says {role!r}")
                await self.restart(i)

    async def restart(self, i: int) -> None:
        """Crash node i if it runs, then start it from what its storage kept."""
        c = self.cluster
        await c.crash(i)
        try:
            await c.start(i)
        except Exception as exc:
            self.outcome.add("restart", f"S{i} cannot restart from its storage: {exc!r:.200}")

    async def check(self) -> None:
        out, c = self.outcome, self.cluster
        self.check_tasks()
        await self.restart_failed()
        out.leader_after = await c.wait_leader(LEADER_BOUND)
        if out.leader_after is None:
            self.describe_nodes("no leader after the frames")
        await self.check_data("after the frames")
        for i in range(c.n):
            await c.crash(i)
        for i in range(c.n):
            await self.restart(i)
        out.leader_after_restart = await c.wait_leader(LEADER_BOUND)
        if out.leader_after_restart is None:
            self.describe_nodes("no leader after a full restart")
        self.check_tasks()
        await self.check_data("after a full restart")

    def describe_nodes(self, when: str) -> None:
        """Each running node's view, for a problem that has no log line of its own."""
        views = []
        for i, node in enumerate(self.cluster.nodes):
            if node is None:
                views.append(f"S{i} down")
                continue
            st, core = node.status(), node.raft.view
            views.append(
                f"S{i} {st.role} T{st.term} voted {core.voted_for} last {st.last_index}"
                f"@T{core.log.last_term} commit {st.commit_index} refused {dict(core.refused)}"
            )
        self.outcome.add("liveness", when, ": " + "; ".join(views))

    async def check_data(self, when: str) -> None:
        """A write commits; then every node holds every acknowledged write, and they agree."""
        c, out = self.cluster, self.outcome
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        barrier = None
        while barrier is None and loop.time() < deadline:
            leader = c.leader()
            if leader is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await leader.propose(("set", "barrier", when), timeout=2.0)
            except _WRITE_ERRORS:
                continue
            barrier = leader.status().commit_index
        if barrier is None:
            out.add("other", f"no write committed within 10 s {when}")
            return
        running = [(i, n) for i, n in enumerate(c.nodes) if n is not None and not n.raft.killed()]
        for _ in range(200):  # 10 s: followers catch up (a snapshot, then the rest)
            if all(n.applied_index >= barrier for _, n in running):
                break
            await asyncio.sleep(0.05)
        for i, node in running:
            if node.applied_index < barrier:
                st = node.status()
                out.add(
                    "liveness",
                    f"S{i} applied {node.applied_index} < {barrier} {when}",
                    f" ({st.role} T{st.term} commit {st.commit_index} last {st.last_index} "
                    f"snapshot {st.snapshot_index}; refused {dict(node.raft.view.refused)})",
                )
                continue
            data = c.machines[i].data
            wrong = [k for k, v in self.acked.items() if data.get(k) != v]
            if wrong:
                k = wrong[0]
                out.add(
                    "data",
                    f"S{i} {when}: {len(wrong)} of {len(self.acked)} acknowledged writes "
                    f"differ, e.g. {k}={data.get(k)!r} (acknowledged {self.acked[k]!r})",
                )
            foreign = [k for k in data if k not in self.acked and k not in self.failed]
            if foreign and foreign != ["barrier"]:
                out.add("data", f"S{i} {when}: keys nobody wrote: {foreign[:3]}")
        states = {
            i: c.machines[i].data
            for i, n in running
            if n.applied_index == running[0][1].applied_index
        }
        if len({repr(sorted(s.items())) for s in states.values()}) > 1:
            out.add("data", f"replicas at the same applied index disagree {when}")


def _keep_varied(corpus: list[Seed], rng: random.Random, per_method: int) -> list[Seed]:
    """At most `per_method` seeds of each method (heartbeats would crowd out the rest)."""
    by_method: dict[str, list[Seed]] = {}
    for s in corpus:
        by_method.setdefault(s.method, []).append(s)
    kept: list[Seed] = []
    for method in sorted(by_method):
        seeds = by_method[method]
        with_entries = [s for s in seeds if len(s.payload) > 40]  # rarer, richer frames first
        rest = [s for s in seeds if len(s.payload) <= 40]
        rng.shuffle(rest)
        kept += (with_entries + rest)[:per_method]
    return kept


async def _watched(campaign: _Campaign) -> Outcome:
    """Run a campaign with raftio's log lines going to its outcome (and not further)."""
    watch = _LogWatch(campaign.outcome, lambda: campaign.last)
    root = logging.getLogger("raftio")
    saved = root.propagate
    root.addHandler(watch)
    root.propagate = False  # a million frames' warnings must not pile up in a test's log
    try:
        return await campaign.run()
    finally:
        root.removeHandler(watch)
        root.propagate = saved
        await campaign.cluster.close()


def capture_corpus(seed: int, peers: int = 3) -> list[Seed]:
    """The frames a campaign with this seed mutates (its capture phase alone)."""

    async def capture() -> list[Seed]:
        campaign = _Campaign(PeerParams(seed=seed, peers=peers))
        try:
            for i in range(peers):
                await campaign.cluster.start(i)
            await campaign.capture()
        finally:
            await campaign.cluster.close()
        return campaign.corpus

    return run(capture(), "virtual")


def run_peer_campaign(params: PeerParams) -> Outcome:
    """Run one campaign on a fresh virtual-clock loop; see the module docstring."""
    started = time.perf_counter()
    outcome = run(_watched(_Campaign(params)), "virtual")
    outcome.wall_seconds = time.perf_counter() - started
    return outcome
