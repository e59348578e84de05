"""The linearizability checker's implementation; import it from `raftio.testing.linearizability`."""

from raftio.testing.lincheck.check import check
from raftio.testing.lincheck.history import CallHandle, History, Operation
from raftio.testing.lincheck.kv import KvModel
from raftio.testing.lincheck.model import UNKNOWN, Explainer, Model
from raftio.testing.lincheck.report import CheckResult, Violation, timeline

__all__ = [
    "UNKNOWN",
    "CallHandle",
    "CheckResult",
    "Explainer",
    "History",
    "KvModel",
    "Model",
    "Operation",
    "Violation",
    "check",
    "timeline",
]
