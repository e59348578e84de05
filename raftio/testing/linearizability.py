"""A linearizability checker for histories of client operations (Wing & Gong, Lowe, Porcupine).

Record what clients did, then ask whether some single order of the operations,
consistent with real time, explains every result::

    history = History()                        # stamps with the running loop's clock
    h = history.record_call(client_id=1, kind="put", key="x", value="a")
    await kv.put("x", "a")
    history.record_return(h)
    ...
    result = check(history, timeout=60)
    assert result.ok, result.explain()

`KvModel` (get/put/append registers, one per key) is the default model; any
object that follows the `Model` protocol checks another kind of service. See
docs/linearizability.md for the data model, the algorithm and its costs.
"""

from raftio.testing.lincheck import (
    UNKNOWN,
    CallHandle,
    CheckResult,
    Explainer,
    History,
    KvModel,
    Lookahead,
    Model,
    Operation,
    ReadOnlyAware,
    Violation,
    check,
    timeline,
)

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
