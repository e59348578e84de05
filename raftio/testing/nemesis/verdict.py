"""The verdict of a nemesis run: final reads, then every check, in one `NemesisReport`.

`verify()` reads every key once after healing, checks the whole history
for linearizability (`KvResultModel`: the checker's `KvModel` plus the
answers of writes), every acknowledged append present exactly once
(`acknowledged_write_problems`), and the replicas' agreement.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftio.testing.lincheck import UNKNOWN, CheckResult, History, KvModel, Model, Operation, check
from raftio.testing.lincheck.history import fmt_time, precedes
from raftio.testing.lincheck.kv import KINDS
from raftio.testing.nemesis.workload import KvClientLike, Workload

__all__ = ["KvResultModel", "NemesisReport", "acknowledged_write_problems", "verify"]

_TOKEN = re.compile(r"[^;]*;")  # one written value: see workload.token()


class KvResultModel(KvModel):
    """`KvModel` that also checks what each write returned: the key's new value.

    That is what raftio.kv's put and append answer (a retried write answers
    what it did the first time). A write recorded with output None is not
    checked, so clients that return nothing can use it too.
    """

    def step(self, state: str, op: Operation, output: Any) -> tuple[bool, str]:
        if op.kind == "get":
            return super().step(state, op, output)
        new = op.value if op.kind == "put" else state + op.value
        return output is UNKNOWN or output is None or output == new, new

    def partition(self, operations: Sequence[Operation]) -> dict[Hashable, list[Operation]]:
        """Per key, without unknown gets nor unknown writes whose value nothing returned."""
        parts: dict[Hashable, list[Operation]] = {}
        for op in operations:
            if op.kind not in KINDS or (op.kind != "get" and not isinstance(op.value, str)):
                raise ValueError(f"KvResultModel: not a get, put or append of a str: {op}")
            if not (op.kind == "get" and op.is_unknown):
                parts.setdefault(op.key, []).append(op)
        for key, part in parts.items():
            seen = "\0".join(op.output for op in part if isinstance(op.output, str))
            parts[key] = [op for op in part if not (op.is_unknown and op.value not in seen)]
        return parts

    def describe(self, op: Operation) -> str:
        text = super().describe(op)
        return f"{text} -> {op.output!r}" if op.kind != "get" and op.output is not None else text


def acknowledged_write_problems(operations: Sequence[Operation], final: Operation) -> list[str]:
    """What a final read of one key shows wrong about the writes to it.

    Every token in the value must come from a write to that key, at most
    once (exactly-once), and every acknowledged append that no put can
    have overwritten (every put to the key returned before the append was
    called) must be there.
    """
    key, value = final.key, final.output
    assert isinstance(value, str)
    writes = [op for op in operations if op.key == key and op.kind != "get"]
    counts = Counter(_TOKEN.findall(value))
    problems = [f"key {key!r}: {t!r} applied {c} times" for t, c in counts.items() if c > 1]
    written = {op.value for op in writes}
    problems += [f"key {key!r}: {t!r} was never written to it" for t in counts if t not in written]
    puts = [op for op in writes if op.kind == "put"]
    for op in writes:
        if op.kind != "append" or op.is_unknown or op.value in counts:
            continue
        if all(precedes(put, op) for put in puts) and precedes(op, final):
            problems.append(
                f"key {key!r}: acknowledged append {op.value!r} (client {op.client_id}, "
                f"t={fmt_time(op.call_time)}..{fmt_time(op.return_time)}) is missing from the "
                f"final value {value!r}"
            )
    return problems


@dataclass(slots=True)
class NemesisReport:
    """The outcome of one nemesis run.

    Attributes:
        history: every operation, the final reads included.
        result: the linearizability verdict (None if the run never got that far).
        problems: everything else that went wrong: lost or doubled writes,
            replicas that disagree, a cluster that never recovered.
        events: the nemesis's log.
        replay: how to run this again.
    """

    history: History
    result: CheckResult | None = None
    problems: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    replay: str = ""
    acknowledged: int = 0
    unknown: int = 0
    sim_time: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok is True and not self.problems

    @property
    def operations(self) -> int:
        return len(self.history)

    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (
            f"{verdict}: {self.operations} operations ({self.acknowledged} acknowledged, "
            f"{self.unknown} unknown), {len(self.events)} nemesis events"
        )

    def explain(self) -> str:
        """The verdict, the problems, the checker's explanation and the nemesis's log."""
        lines = [self.summary()]
        if self.replay:
            lines.append(f"replay: {self.replay}")
        lines += [f"problem: {p}" for p in self.problems]
        if self.result is not None:
            lines.append(self.result.explain())
        if not self.ok:
            lines.append("nemesis events:")
            lines += [f"  {e}" for e in self.events]
        return "\n".join(lines)


async def verify(
    workload: Workload,
    reader: KvClientLike,
    converged: Callable[[], Awaitable[str | None]],
    report: NemesisReport,
    *,
    check_timeout: float = 120.0,
    model: Model[Any] | None = None,
) -> NemesisReport:
    """Finish a healed run: final reads, agreement of the replicas, then the checks.

    `reader` reads every key once (as client `len(workload.clients)`, in
    the same history); `converged()` returns None once the replicas agree,
    or a description of why they do not. The history is checked against
    `model` (default `KvResultModel()`). Fills in `report` and returns it.
    """
    reader_id = len(workload.clients)
    handles = [await workload.perform(reader_id, reader, "get", key) for key in workload.keys]
    operations = workload.history.operations
    for op in (operations[handle] for handle in handles):
        if op.is_unknown:
            report.problems.append(f"the final read of {op.key!r} did not complete")
        else:
            report.problems += acknowledged_write_problems(operations, op)
    disagreement = await converged()
    if disagreement is not None:
        report.problems.append(disagreement)
    report.acknowledged, report.unknown = workload.acknowledged, workload.unknown
    model = model if model is not None else KvResultModel()
    report.result = check(workload.history, model=model, timeout=check_timeout)
    if report.result.ok is None:
        report.problems.append(f"the checker timed out after {check_timeout:g} s")
    return report
