"""SimNemesis: the simulator's seeded schedule of faults against a SimCluster.

Every `interval` seconds (drawn per step) it picks one action, by weight:
partitions (`raftio.testing.partitions`, the key/value nemesis's shapes:
a random minority split off, the leader isolated, a bridge, the leader
unable to send), healing, a flaky or calm network (loss, duplication,
delay, reordering), crashes (any peer or the leader, losing unsynced
writes or not) followed by a restart after a random down time, slow
storage, and an injected fsync failure (the peer must fail-stop; it is
restarted like a crashed one).

Profile "figure8" follows the lab's Figure 8 test instead: start a command
on the leader, wait a few ms (sometimes up to an election timeout), crash
that leader (keeping its disk), and restart a random crashed peer whenever
fewer than a majority are up; now and then the network turns flaky or calm.
This builds logs whose entries of old terms a later leader re-replicates:
the scenario of the extended Raft paper's Figure 8.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from raftio.testing.partitions import draw_partition
from raftio.testing.sim import membership
from raftio.testing.sim.cluster import SimCluster
from raftio.testing.sim.links import Links
from raftio.testing.sim.trace import Trace

PROFILES = ("mixed", "figure8", "membership")

_MIXED: dict[str, float] = {
    "split": 3,
    "isolate_leader": 2,
    "one_way": 2,
    "bridge": 1,
    "heal": 3,
    "flaky": 2,
    "calm": 1,
    "crash": 2,
    "crash_leader": 1.5,
    "crash_unsynced": 1.5,
    "slow_disk": 1.5,
    "fail_sync": 0.2,
}
_FIGURE8: dict[str, float] = {"flaky": 1, "unreliable": 3}
# The mixed faults, plus membership changes and transfers (sim/membership.py).
_MEMBERSHIP: dict[str, float] = {**_MIXED, **membership.WEIGHTS}


class SimNemesis:
    """Drives faults; `run()` until cancelled, then `heal_all()` before the liveness check."""

    def __init__(
        self, cluster: SimCluster, links: Links, rng: random.Random, trace: Trace, profile: str
    ) -> None:
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
        self._cluster = cluster
        self._links = links
        self._rng = rng
        self._trace = trace
        self._figure8 = profile == "figure8"
        self._weights = {"mixed": _MIXED, "figure8": _FIGURE8, "membership": _MEMBERSHIP}[profile]
        self._down_until: dict[int, float] = {}
        self._actions: dict[str, Callable[[], str]] = {
            "split": lambda: self._partition("split"),
            "isolate_leader": lambda: self._partition("isolate_leader"),
            "one_way": lambda: self._partition("one_way"),
            "bridge": lambda: self._partition("bridge"),
            "heal": self._heal,
            "flaky": self._flaky,
            "calm": self._calm,
            "unreliable": self._unreliable,
            "crash": self._crash_any,
            "crash_leader": self._crash_leader,
            "crash_unsynced": self._crash_unsynced,
            "slow_disk": self._slow_disk,
            "fail_sync": self._fail_sync,
            **{name: self._membership(name) for name in membership.WEIGHTS},
        }
        self._names = list(self._weights)
        self._weight_list = [self._weights[name] for name in self._names]
        self.steps = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if self._figure8:
            self._act("unreliable")
        while True:
            if self._figure8:
                await self._figure8_round()
            else:
                await asyncio.sleep(self._rng.uniform(0.05, 2.0))
                self._restart_due(loop.time())
            if not self._figure8 or self._rng.random() < 0.02:
                self._act(self._rng.choices(self._names, self._weight_list)[0])

    def _act(self, name: str) -> None:
        what = self._actions[name]()
        self.steps += 1
        self._trace.event("nemesis", f"{name}: {what}")

    async def _figure8_round(self) -> None:
        """One round of the lab's Figure 8 test, with partitions as well as crashes.

        Half the time the leader is cut off before it appends, so its entry
        stays in its log only: logs diverge in entries of many terms.
        """
        rng, cluster, links = self._rng, self._cluster, self._links
        leader = self._leader()
        if leader is not None:
            if rng.random() < 0.5:
                links.isolate(leader)
                self._trace.event("nemesis", f"figure8: isolated S{leader} before appending")
            self.steps += 1
            cluster._raft(leader).start(f"f8-{self.steps}")
        if rng.random() < 0.1:
            await asyncio.sleep(rng.uniform(0.0, 0.5))
        else:
            await asyncio.sleep(rng.uniform(0.0, 0.013))
        if leader is not None and cluster.alive(leader) and leader not in links.isolated:
            if rng.random() < 0.5:
                links.isolate(leader)
                self._trace.event("nemesis", f"figure8: isolated S{leader}")
            else:
                self._trace.event("nemesis", f"figure8: {self._crash(leader)}")
        self._keep_majority_up()

    def _keep_majority_up(self) -> None:
        """Bring back a random peer (restart or rejoin) while at most half are up."""
        cluster, links = self._cluster, self._links
        up = [i for i in self._live() if i not in links.isolated]
        if len(up) * 2 <= cluster.n:
            i = self._rng.choice([i for i in range(cluster.n) if i not in up])
            if cluster.raft(i) is None:
                cluster.start(i)
                self._trace.event("nemesis", f"figure8: restarted S{i}")
            else:
                links.rejoin(i)
                self._trace.event("nemesis", f"figure8: S{i} rejoined")

    def heal_all(self) -> None:
        """Undo every fault: heal and calm the network, fast disks, every peer up."""
        self._links.heal()
        self._links.calm()
        for peer in self._cluster.peers:
            peer.storage.clear_faults()
        self._restart_due(float("inf"))
        for i in range(self._cluster.n):
            if self._cluster.raft(i) is None:
                self._cluster.start(i)
        self._down_until.clear()
        self._trace.event("nemesis", "healed everything")

    # --- scheduling ----------------------------------------------------------

    def _restart_due(self, now: float) -> None:
        cluster = self._cluster
        for i in range(cluster.n):
            rf = cluster.raft(i)
            if rf is not None and rf.killed():
                cluster.crash(i, lose_unsynced=True)  # fail-stopped: restart from disk
                self._down_until[i] = now + self._down_time()
        for i, until in sorted(self._down_until.items()):
            if until <= now:
                del self._down_until[i]
                cluster.start(i)

    def _down_time(self) -> float:
        return self._rng.uniform(0.05, 5.0)

    def _live(self) -> list[int]:
        return [i for i in range(self._cluster.n) if self._cluster.alive(i)]

    def _leader(self) -> int | None:
        """The leader of the highest term among live peers not cut off."""
        leaders = [i for i in self._cluster.leaders() if i not in self._links.isolated]
        if not leaders:
            return None
        return max(leaders, key=lambda i: self._cluster._raft(i).get_state()[0])

    # --- actions (each returns what it did, for the trace) ----------------------

    def _partition(self, shape: str) -> str:
        partition = draw_partition(shape, self._rng, self._cluster.n, self._leader())
        self._links.partition(partition.links)
        return partition.describe()

    def _heal(self) -> str:
        self._links.heal()
        return "network healed"

    def _flaky(self) -> str:
        rng, links = self._rng, self._links
        links.loss = rng.choice([0.0, 0.02, 0.05, 0.1, 0.2, 0.3])
        links.duplicate = rng.choice([0.0, 0.02, 0.05, 0.1])
        links.delay = rng.choice([0.0, 0.005, 0.02, 0.05, 0.1])
        links.long_delay = rng.choice([0.0, 0.0, 0.01, 0.05])
        links.corrupt = rng.choice([0.0, 0.0, 0.05, 0.2])
        return links.describe()

    def _unreliable(self) -> str:
        """labrpc's unreliable network: up to 27 ms of delay, 10% loss."""
        self._links.calm()
        self._links.loss, self._links.delay = 0.1, 0.027
        return self._links.describe()

    def _calm(self) -> str:
        self._links.calm()
        return self._links.describe()

    def _crash_any(self) -> str:
        live = self._live()
        if not live:
            return "nobody up"
        return self._crash(self._rng.choice(live))

    def _crash_leader(self) -> str:
        leader = self._leader()
        if leader is None:
            return "no leader"
        return self._crash(leader)

    def _crash_unsynced(self) -> str:
        """Crash a peer whose fsync is in flight, losing what it had not synced."""
        cluster = self._cluster
        busy = [i for i in self._live() if cluster.peers[i].storage.has_unsynced()]
        if not busy:
            return "no peer is writing"
        return self._crash(self._rng.choice(busy), lose=True)

    def _crash(self, i: int, lose: bool | None = None) -> str:
        if lose is None:
            lose = False if self._figure8 else self._rng.random() < 0.5
        self._cluster.crash(i, lose_unsynced=lose)
        if self._figure8:
            return f"S{i} crashed"  # restarted when fewer than a majority are up
        down = self._down_time()
        self._down_until[i] = asyncio.get_running_loop().time() + down
        return f"S{i} lose_unsynced={lose} down={down:.2f}s"

    def _membership(self, action: str) -> Callable[[], str]:
        def act() -> str:
            leader = self._leader()
            if leader is None:
                return "no leader"
            rf = self._cluster._raft(leader)
            return f"S{leader}: {membership.change(rf, self._rng, self._cluster.n, action)}"

        return act

    def _slow_disk(self) -> str:
        i = self._rng.randrange(self._cluster.n)
        seconds = self._rng.uniform(0.2, 3.0)
        self._cluster.peers[i].storage.stall(seconds)
        return f"S{i} disk stalls {seconds:.2f}s"

    def _fail_sync(self) -> str:
        i = self._rng.randrange(self._cluster.n)
        self._cluster.peers[i].storage.fail_next_sync()
        return f"S{i} next fsync fails"
