"""Terminal output for the CLI: node status tables and a live view redrawn in place.

Owns formatting only; it never talks to nodes. The live view uses plain
ANSI escapes (cursor up, clear to end of screen): event lines scroll above,
the status table stays at the bottom. When the output is not a terminal,
events are printed as they happen and tables only when asked.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from raftio.kv.protocol import Members

__all__ = ["LiveView", "members_table", "metrics_table", "status_table"]

# (column, metric sample) shown by `raftio status --metrics`
_METRIC_COLUMNS = (
    ("elections", "raftio_elections_total"),
    ("led", "raftio_terms_led_total"),
    ("ae_sent", 'raftio_rpc_sent_total{method="append_entries"}'),
    ("ae_failed", 'raftio_rpc_failed_total{method="append_entries"}'),
    ("ae_recv", 'raftio_rpc_received_total{method="append_entries"}'),
    ("syncs", "raftio_storage_sync_seconds_count"),
    ("snapshots", "raftio_node_snapshots_total"),
    ("log_bytes", "raftio_node_log_bytes"),
)

_COLUMNS = (
    ("node", "node"), ("pid", "pid"), ("state", "state"), ("role", "role"),
    ("term", "term"), ("leader", "leader_id"), ("commit", "commit_index"),
    ("applied", "applied_index"), ("last", "last_index"), ("snap", "snapshot_index"),
    ("keys", "keys"), ("digest", "digest"), ("client", "client_address"),
    ("voters", "voters"), ("learners", "learners"),
)  # fmt: skip
# What a node is in its own configuration, shown instead of its Raft role (a follower).
_NOT_VOTING = frozenset({"learner", "joining", "removed"})


def status_table(
    statuses: Sequence[Mapping[str, Any] | None],
    *,
    pids: Mapping[int, int | None] | None = None,
    states: Mapping[int, str] | None = None,
    ids: Sequence[int] | None = None,
) -> list[str]:
    """One header line and one line per node; a node without a status shows its state only.

    `ids` names the node of each status where it does not answer (default
    0, 1, 2, ...; a status names its own). `role` shows
    `learner` for a learner, `joining` for a node waiting to be added and
    `removed` for one that was, instead of their Raft role.
    """
    rows = [[title for title, _ in _COLUMNS]]
    for k, status in enumerate(statuses):
        i = ids[k] if ids is not None else k
        cells = dict(status or {})
        cells["node"] = cells.get("node_id", i)  # a node that answers says who it is
        cells["pid"] = (pids or {}).get(i) or "-"
        cells["state"] = (states or {}).get(i) or ("up" if status else "down")
        if cells.get("member") in _NOT_VOTING:
            cells["role"] = cells["member"]
        rows.append([_cell(cells.get(key)) for _, key in _COLUMNS])
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def _cell(value: Any) -> str:
    if isinstance(value, list):  # node ids: voters, learners
        return ",".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


class LiveView:
    """Event lines above a status table; redrawn in place when `live`."""

    def __init__(self, out: TextIO, *, live: bool) -> None:
        self.out, self.live = out, live
        self._pending: list[str] = []  # events not yet written
        self._table: list[str] = []
        self._drawn = 0  # table lines currently on screen, under the cursor

    def event(self, line: str) -> None:
        self._pending.append(line)
        if self.live:
            self._redraw()
        else:
            self._flush_events()

    def update(self, table: list[str]) -> None:
        """Replace the table; redraws at once when live."""
        self._table = table
        if self.live:
            self._redraw()

    def show_table(self) -> None:
        """Print the current table (for output that is not live)."""
        if not self.live:
            self._flush_events()
            self.out.write("".join(f"  {line}\n" for line in self._table))
            self.out.flush()

    def _flush_events(self) -> None:
        self.out.write("".join(f"{line}\n" for line in self._pending))
        self._pending.clear()
        self.out.flush()

    def _redraw(self) -> None:
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        events = "".join(f"{line}\n" for line in self._pending)
        # A wrapped line would break the cursor arithmetic: cut lines to the width.
        width = shutil.get_terminal_size().columns - 1
        table = "".join(f"  {line}"[:width] + "\n" for line in self._table)
        self.out.write(erase + events + table)
        self.out.flush()
        self._pending.clear()
        self._drawn = len(self._table)


def metrics_table(
    statuses: Sequence[Mapping[str, Any] | None], *, ids: Sequence[int] | None = None
) -> list[str]:
    """One line per node: its event loop, main counters, mean sync and AppendEntries latency."""
    header = ["node", "loop", *(name for name, _ in _METRIC_COLUMNS), "sync_ms", "ae_rtt_ms"]
    rows = [header]
    for k, status in enumerate(statuses):
        metrics: Mapping[str, float] = (status or {}).get("metrics") or {}
        row = [str(ids[k] if ids is not None else k), _cell((status or {}).get("loop"))]
        row += [_cell(int(metrics[key])) if key in metrics else "-" for _, key in _METRIC_COLUMNS]
        row.append(_mean_ms(metrics, "raftio_storage_sync_seconds", ""))
        row.append(_mean_ms(metrics, "raftio_rpc_latency_seconds", '{method="append_entries"}'))
        rows.append(row)
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]


def _mean_ms(metrics: Mapping[str, float], name: str, labels: str) -> str:
    count = metrics.get(f"{name}_count{labels}", 0)
    if not count:
        return "-"
    return f"{1000 * metrics[f'{name}_sum{labels}'] / count:.2f}"


def members_table(members: Members) -> list[str]:
    """A line on the configuration, then one line per member: id, role, addresses."""
    state = "committed" if members.committed else "not committed yet"
    leader = "-" if members.leader is None else f"node {members.leader}"
    rows = [["id", "role", "raft", "client"]]
    for role, listed in (("voter", members.voters), ("learner", members.learners)):
        rows += [[str(m.node_id), role, m.raft_address, _cell(m.client_address)] for m in listed]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return [f"configuration at index {members.index} ({state}), leader {leader}", *lines]
