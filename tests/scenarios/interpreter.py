"""The scenario directives: one method per directive, each printing what happened.

A script is a sequence of directives (see README.md and testdata/); the
interpreter keeps one `Env` (env.py) between them. Every directive takes
positional node numbers and `key=value` options, and its output is a few
lines in a stable form: the messages delivered, then, indented under each,
what that message changed (`S0 became leader at T1`, `S1 committed through 3`).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator

from raftio import codec
from raftio.config import RaftConfig
from raftio.core import RaftCore, Role
from raftio.membership import Configuration, is_configuration
from raftio.messages import NOOP_COMMAND, RequestVoteArgs
from tests.scenarios.env import Env, Message

# A heartbeat every 10 ticks, an election timeout drawn from [30, 60] ticks.
FLAGS = ("pre_vote", "check_quorum", "leader_noop")
WORDS = (*FLAGS, "full")  # bare words that are flags, not positional arguments
CHANGES = (" became ", " moved ", " committed ")  # what quiet directives print


class ScriptError(Exception):
    """A directive the interpreter cannot run (a mistake in the script, not in raftio)."""


class Interpreter:
    """Runs directives against one cluster; `run(line)` returns the output lines."""

    def __init__(self) -> None:
        self._env: Env | None = None
        self._lines: list[str] = []

    @property
    def env(self) -> Env:
        if self._env is None:
            raise ScriptError("no cluster yet: start with `cluster N`")
        return self._env

    def run(self, line: str) -> list[str]:
        words = shlex.split(line)
        name, args = words[0], words[1:]
        handler: Callable[[Args], None] | None = getattr(self, f"do_{name}", None)
        if handler is None:
            raise ScriptError(f"unknown directive {name!r}")
        self._lines = []
        handler(Args(args))
        return self._lines

    def _print(self, text: str) -> None:
        self._lines.append(text)

    # ------------------------------------------------------------------ directives

    def do_cluster(self, args: Args) -> None:
        """`cluster 3 pre_vote check_quorum seed=1`: n fresh peers (flags default off)."""
        n = args.number(0)
        flags = {flag: flag in args.flags for flag in FLAGS}
        voters = args.option("voters", n)
        self._env = Env(
            n, RaftConfig(**flags), seed=args.option("seed", 0), out=self._print, voters=voters
        )
        low, high = self._env.config.election_ticks
        on = " ".join(flag for flag in FLAGS if flags[flag]) or "none"
        waiting = f", S{voters}-S{n - 1} wait to be added" if voters < n else ""
        self._print(f"{n} peers, election timeout {low}-{high} ticks, options: {on}{waiting}")

    def do_conf(self, args: Args) -> None:
        """`conf 0 voters=0,1,2 learners=3`: S0 proposes that configuration (thesis 4.1)."""
        env, i = self.env, args.number(0)
        config = Configuration(
            dict.fromkeys(args.ids("voters"), ""), dict.fromkeys(args.ids("learners"), "")
        )
        refused = env.step(i, lambda core: core.propose_configuration(config))
        if refused is not None:
            self._print(f"S{i} refused: {refused}")
            return
        core = env.nodes[i].live
        self._print(f"S{i} appended {config.describe()} at {core.configs.latest_index}")

    def do_unsafe(self, args: Args) -> None:
        """`unsafe 0 1`: turn off the raft-dev 2015 fix (a leader changes the configuration
        before committing an entry of its term) on the running S0 and S1."""
        for i in [int(a) for a in args.positional]:
            self.env.nodes[i].live.change_needs_term_commit = False

    def do_config(self, args: Args) -> None:
        """`config` or `config 0 1`: each peer's configuration in effect and its index."""
        for i, core in self._running(args):
            index = core.configs.latest_index
            state = "committed" if index <= core.commit_index else "uncommitted"
            self._print(f"S{i} {core.configuration.describe()} at {index} ({state})")

    def do_elect(self, args: Args) -> None:
        """`elect 0`: tick S0 alone until it asks for (pre-)votes, then deliver until it wins.

        Quiet: prints only role, term and commit changes. If S0 wins, what it
        sent as leader (and any vote reply not yet counted) stays in flight.
        """
        env, i = self.env, args.number(0)
        core = env.nodes[i].live
        if core.is_leader:
            raise ScriptError(f"S{i} already leads")
        for _ in range(env.config.election_ticks[1] + 1):
            env.tick(i)
            if core.is_leader or any(_is_vote(m, i) for m in env.flight + env.nodes[i].waiting):
                break
        self._quietly(lambda: env.stabilize(until=lambda: core.is_leader))

    def do_propose(self, args: Args) -> None:
        """`propose 0 a b c`: S0.start() each command; `propose 0 n=5` proposes 1..5."""
        env, i = self.env, args.number(0)
        commands = args.positional[1:] or [str(k) for k in range(1, args.option("n", 1) + 1)]
        placed = env.propose(i, [codec.encode_command(c) for c in commands])
        if not all(ok for _, _, ok in placed):
            self._print(f"S{i} is not the leader")
            return
        self._print(f"S{i} appended {' '.join(f'{index}@T{term}' for index, term, _ in placed)}")

    do_start = do_propose

    def do_tick(self, args: Args) -> None:
        """`tick 10` ticks every running peer 10 times (no delivery); `tick 10 0 2` only S0, S2."""
        env, count = self.env, args.number(0)
        nodes = [int(a) for a in args.positional[1:]] or env.alive()
        for _ in range(count):
            for i in nodes:
                env.tick(i)

    def do_run(self, args: Args) -> None:
        """`run 100`: 100 times, tick every running peer, then stabilize; prints changes only."""
        env = self.env

        def one_tick() -> None:
            for i in env.alive():
                env.tick(i)
            env.stabilize()

        for t in range(1, args.number(0) + 1):
            self._quietly(one_tick, prefix=f"t+{t} ")

    def do_deliver(self, args: Args) -> None:
        """`deliver from=0 to=1 type=AE n=1`: deliver the matching messages now in flight."""
        env = self.env
        msgs = env.take(args.matcher())
        limit = args.option("n", len(msgs))
        env.flight = msgs[limit:] + env.flight
        for msg in msgs[:limit]:
            env.deliver(msg)

    def do_drop(self, args: Args) -> None:
        """`drop to=2`: lose the matching messages in flight (their RPCs fail)."""
        for msg in self.env.take(args.matcher()):
            self.env.drop(msg)

    def do_hold(self, args: Args) -> None:
        """`hold from=1 type=AE-ok`: set matching messages aside (late delivery with `release`)."""
        env = self.env
        for msg in env.take(args.matcher()):
            self._print(f"held {msg.describe()}")
            env.held.append(msg)

    def do_release(self, args: Args) -> None:
        """`release`: put the held messages back in flight, ahead of the others."""
        env = self.env
        env.flight, env.held = env.held + env.flight, []

    def do_sync(self, args: Args) -> None:
        """`sync 1`: S1's storage reports its writes durable (all peers if none given)."""
        env = self.env
        for i in [int(a) for a in args.positional] or env.alive():
            env.sync(i)

    def do_stabilize(self, args: Args) -> None:
        """`stabilize`: sync and deliver until nothing is in flight; `stabilize 0 1` only those."""
        nodes = [int(a) for a in args.positional] or None
        self.env.stabilize(nodes)

    def do_partition(self, args: Args) -> None:
        """`partition 0 | 1 2`: only links between the groups are cut (both ways)."""
        groups = [[int(a) for a in part.split()] for part in " ".join(args.positional).split("|")]
        self.env.cut.clear()
        for g, group in enumerate(groups):
            for other in groups[g + 1 :]:
                for a in group:
                    for b in other:
                        self.env.cut |= {(a, b), (b, a)}

    def do_cut(self, args: Args) -> None:
        """`cut 0 2`: one direction only, messages from S0 to S2 are lost."""
        self.env.cut.add((args.number(0), args.number(1)))

    def do_heal(self, args: Args) -> None:
        """`heal`: every link works again."""
        self.env.cut.clear()

    def do_crash(self, args: Args) -> None:
        """`crash 1`: S1 stops, keeping only what it synced."""
        self.env.crash(args.number(0))

    def do_restart(self, args: Args) -> None:
        """`restart 1`: S1 starts again from its durable state."""
        self.env.restart(args.number(0))

    def do_log(self, args: Args) -> None:
        """`log` (every peer) or `log 0 1`: runs of entries `first-last@Tterm`; `full`: data."""
        for i, core in self._running(args):
            text = _entries(core, full="full" in args.flags)
            self._print(f"S{i} log: {text} (commit {core.commit_index})")

    def do_status(self, args: Args) -> None:
        """`status` or `status 0`: role, term, vote, indexes; a leader's view of each follower."""
        env = self.env
        for i in [int(a) for a in args.positional] or range(len(env.nodes)):
            node = env.nodes[i]
            if node.core is None:
                d = node.durable
                vote = "-" if d.voted_for is None else f"S{d.voted_for}"
                last = d.snapshot_index + len(d.entries)
                self._print(f"S{i} crashed (durable: T{d.current_term} vote={vote} last={last})")
                continue
            self._print(_status(i, node.core))
            for peer, pr in sorted(node.core.progress.items()):
                paused = " paused" if pr.paused else ""
                self._print(
                    f"  ->S{peer} {pr.state.value} match={pr.match_index} "
                    f"next={pr.next_index}{paused}"
                )

    def _running(self, args: Args) -> Iterator[tuple[int, RaftCore]]:
        """(i, core) of the nodes named (all by default); prints `S<i> crashed` for the others."""
        env = self.env
        for i in [int(a) for a in args.positional] or range(len(env.nodes)):
            core = env.nodes[i].core
            if core is None:
                self._print(f"S{i} crashed")
            else:
                yield i, core

    def _quietly(self, action: Callable[[], None], prefix: str = "") -> None:
        """Run `action`, printing only role, term and commit changes and violations."""
        env, out = self.env, list[str]()
        env.out = out.append
        try:
            action()
        finally:
            env.out = self._print
        for line in out:
            line = line.strip()
            if line.startswith("!!") or any(w in line for w in CHANGES):
                self._print(prefix + line)


class Args:
    """A directive's words: positionals, bare flags and `key=value` options."""

    def __init__(self, words: list[str]) -> None:
        self.positional = [w for w in words if "=" not in w and w not in WORDS]
        self.flags = {w for w in words if w in WORDS}
        self.options = dict(w.split("=", 1) for w in words if "=" in w)

    def number(self, k: int) -> int:
        try:
            return int(self.positional[k])
        except (IndexError, ValueError):
            raise ScriptError(f"argument {k + 1} must be a number: {self.positional}") from None

    def option(self, key: str, default: int) -> int:
        return int(self.options.get(key, default))

    def ids(self, key: str) -> list[int]:
        """`voters=0,1,2` -> [0, 1, 2]; [] when absent or empty."""
        text = self.options.get(key, "")
        return [int(word) for word in text.split(",") if word]

    def matcher(self) -> Callable[[Message], bool]:
        src, dst, kind = (self.options.get(k) for k in ("from", "to", "type"))

        def match(msg: Message) -> bool:
            return (
                (src is None or msg.src == int(src))
                and (dst is None or msg.dst == int(dst))
                and (kind is None or msg.kind() == kind)
            )

        return match


def _is_vote(msg: Message, i: int) -> bool:
    return msg.src == i and not msg.is_reply and isinstance(msg.request, RequestVoteArgs)


def _status(i: int, core: RaftCore) -> str:
    vote = "-" if core.voted_for is None else f"S{core.voted_for}"
    following = core.role is not Role.LEADER and core.leader_id is not None
    leader = f" leader=S{core.leader_id}" if following else ""
    return (
        f"S{i} T{core.current_term} {core.role.value}{leader} vote={vote} "
        f"commit={core.commit_index} applied={core.applied_index} "
        f"last={core.log.last_index} durable={core.durable_index}"
    )


def _entries(core: RaftCore, full: bool) -> str:
    log = core.log
    parts = [f"snap {log.snapshot_index}@T{log.snapshot_term}"] if log.snapshot_index else []
    first = log.snapshot_index + 1
    if full:
        for k, entry in enumerate(log.entries):
            if entry.data == NOOP_COMMAND:
                data = "noop"
            elif is_configuration(entry.data):
                data = "conf"
            else:
                data = repr(codec.decode_command(entry.data))
            parts.append(f"{first + k}@T{entry.term}={data}")
    else:
        run_start = first
        for k, entry in enumerate(log.entries):
            index = first + k
            if index == log.last_index or log.entries[k + 1].term != entry.term:
                span = f"{run_start}" if run_start == index else f"{run_start}-{index}"
                parts.append(f"{span}@T{entry.term}")
                run_start = index + 1
    return " ".join(parts) or "empty"
