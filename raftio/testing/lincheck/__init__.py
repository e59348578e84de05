"""The linearizability checker's implementation; import it from `raftio.testing.linearizability`."""

from raftio.testing.lincheck.check import check
from raftio.testing.lincheck.history import CallHandle, History, Operation
from raftio.testing.lincheck.kv import KvModel
from raftio.testing.lincheck.model import UNKNOWN, Explainer, Lookahead, Model, ReadOnlyAware
from raftio.testing.lincheck.report import CheckResult, Violation, timeline

__all__ = [
    "UNKNOWN",
    "CallHandle",
    "CheckResult",
    "Explainer",
    "History",
    "KvModel",
    "Lookahead",
    "Model",
    "Operation",
    "ReadOnlyAware",
    "Violation",
    "check",
    "timeline",
]
