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

__all__ = ["LiveView", "metrics_table", "status_table"]

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
)  # fmt: skip


def status_table(
    statuses: Sequence[Mapping[str, Any] | None],
    *,
    pids: Mapping[int, int | None] | None = None,
    states: Mapping[int, str] | None = None,
) -> list[str]:
    """One header line and one line per node; a node without a status shows its state only."""
    rows = [[title for title, _ in _COLUMNS]]
    for i, status in enumerate(statuses):
        cells = dict(status or {})
        cells["node"] = i
        cells["pid"] = (pids or {}).get(i) or "-"
        cells["state"] = (states or {}).get(i) or ("up" if status else "down")
        rows.append([_cell(cells.get(key)) for _, key in _COLUMNS])
    widths = [max(len(row[c]) for row in rows) for c in range(len(_COLUMNS))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]  # fmt: skip


def _cell(value: Any) -> str:
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


def metrics_table(statuses: Sequence[Mapping[str, Any] | None]) -> list[str]:
    """One line per node: its event loop, main counters, mean sync and AppendEntries latency."""
    header = ["node", "loop", *(name for name, _ in _METRIC_COLUMNS), "sync_ms", "ae_rtt_ms"]
    rows = [header]
    for i, status in enumerate(statuses):
        metrics: Mapping[str, float] = (status or {}).get("metrics") or {}
        row = [str(i), _cell((status or {}).get("loop"))]
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
