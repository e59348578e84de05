"""`raftio logview`: RAFTIO_DEBUG trace lines as one column per peer, colored by topic.

Reads the tab-separated lines `raftio.debug` writes (a test's, a cluster
node's, or a simulation's `--trace-file`)::

    <loop time>  S<peer>  T<term>  <role>  <topic>  <text>

and prints each event in its peer's column, so a conversation between
peers reads down the page. Lines of the simulation itself (peer ``-``)
span every column. Filters: peers, topics and a time window; a file that
holds several runs (RAFTIO_DEBUG appends, and loop time restarts at each
test) is split where time goes backwards, and `--run` picks one.

Owns parsing, filtering and rendering; plain ANSI escapes, no dependency.
Never imports the rest of raftio, so it also reads traces of other versions.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "KNOWN_TOPICS",
    "TOPIC_COLORS",
    "TraceFilter",
    "TraceLine",
    "add_parser",
    "main",
    "parse_line",
    "render",
    "split_runs",
]

# ANSI SGR codes per topic; a topic not listed is printed uncolored.
TOPIC_COLORS: dict[str, str] = {
    "role": "1;35",  # bold magenta: elections won and lost stand out
    "vote": "33",  # yellow
    "append": "36",  # cyan: log conflicts and rejections
    "snap": "34",  # blue
    "send": "2",  # dim: the bulk of any trace
    "recv": "2",
    "apply": "32",  # green
    "storage": "34",
    "config": "1;36",  # bold cyan: membership changes
    "error": "1;37;41",  # bold white on red
}
# Topics raftio writes (peers' lines, then the simulator's own); --topics accepts
# these and any other topic found in the input (a trace of another version).
KNOWN_TOPICS = frozenset(TOPIC_COLORS) | {"refuse", "nemesis", "sim", "liveness", "violation"}
_ROLE_LETTERS = {"follower": "F", "pre-candidate": "P", "candidate": "C", "leader": "L"}
_TIME_WIDTH = 10
_SEPARATOR = " | "
_DESCRIPTION = "Show RAFTIO_DEBUG trace lines as one column per peer, colored by topic."


@dataclass(frozen=True, slots=True)
class TraceLine:
    """One parsed trace line; `peer` and `term` are None on the simulation's own lines."""

    time: float
    peer: int | None
    term: int | None
    role: str
    topic: str
    text: str


def parse_line(line: str) -> TraceLine | None:
    """Parse one RAFTIO_DEBUG line; None if it is not one (a log or pytest line)."""
    fields = line.rstrip("\r\n").split("\t", 5)
    if len(fields) != 6:
        return None
    time_text, who, term_text, role, topic, text = fields
    try:
        time = float(time_text)
        peer = None if who == "-" else _number(who, "S")
        term = None if term_text == "-" else _number(term_text, "T")
    except ValueError:
        return None
    return TraceLine(time, peer, term, role, topic, text)


def _number(text: str, prefix: str) -> int:
    if not text.startswith(prefix) or not text[1:].isdigit():
        raise ValueError(text)
    return int(text[1:])


def split_runs(lines: Iterable[str]) -> tuple[list[list[TraceLine]], int]:
    """Parse `lines` into runs (a new run starts where loop time goes backwards).

    Returns the runs and the number of lines that were not trace lines.
    """
    runs: list[list[TraceLine]] = []
    skipped = 0
    last = float("inf")
    for line in lines:
        event = parse_line(line)
        if event is None:
            skipped += line.strip() != ""
            continue
        if event.time < last:
            runs.append([])
        runs[-1].append(event)
        last = event.time
    return runs, skipped


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which events to show; None means no restriction."""

    peers: frozenset[int] | None = None
    topics: frozenset[str] | None = None
    start: float | None = None
    end: float | None = None

    def keep(self, event: TraceLine) -> bool:
        if self.start is not None and event.time < self.start:
            return False
        if self.end is not None and event.time > self.end:
            return False
        if self.topics is not None and event.topic not in self.topics:
            return False
        # The simulation's own lines (partitions, crashes) are context for every peer.
        return self.peers is None or event.peer is None or event.peer in self.peers


def render(
    events: Sequence[TraceLine], peers: Sequence[int], width: int, color: bool
) -> Iterator[str]:
    """Lines of output: a header, then each event wrapped in its peer's column."""
    peers = list(peers)
    if not peers:
        peers = [0]
    column = max(12, (width - _TIME_WIDTH - len(_SEPARATOR) * len(peers)) // len(peers))
    index = {peer: i for i, peer in enumerate(peers)}
    header = [_paint(f"S{p}".ljust(column), "1", color) for p in peers]
    yield "time".rjust(_TIME_WIDTH) + _SEPARATOR + _SEPARATOR.join(header).rstrip()
    full = column * len(peers) + len(_SEPARATOR) * (len(peers) - 1)
    for event in events:
        code = TOPIC_COLORS.get(event.topic, "")
        stamp = f"{event.time:.4f}".rjust(_TIME_WIDTH)
        if event.peer is None or event.peer not in index:
            for n, chunk in enumerate(_wrap(f"== {event.topic}: {event.text}", full)):
                yield (
                    (stamp if n == 0 else " " * _TIME_WIDTH)
                    + _SEPARATOR
                    + _paint(chunk, code, color)
                )
            continue
        cells = [""] * len(peers)
        chunks = _wrap(_cell_text(event), column)
        last = index[event.peer] == len(peers) - 1  # no padding after the last column
        for n, chunk in enumerate(chunks):
            cells[index[event.peer]] = _paint(chunk if last else chunk.ljust(column), code, color)
            padded = [c if c else " " * column for c in cells]
            left = stamp if n == 0 else " " * _TIME_WIDTH
            yield (left + _SEPARATOR + _SEPARATOR.join(padded)).rstrip()


def _cell_text(event: TraceLine) -> str:
    term = "T-" if event.term is None else f"T{event.term}"
    role = _ROLE_LETTERS.get(event.role, event.role[:1].upper() or "?")
    return f"{term} {role} {event.topic}: {event.text}"


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_on_hyphens=False, subsequent_indent="  ") or [""]


def _paint(text: str, code: str, color: bool) -> str:
    if not color or not code:
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


# --------------------------------------------------------------------------- command


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `logview` subcommand to the `raftio` parser's subcommands."""
    p: argparse.ArgumentParser = commands.add_parser(
        "logview",
        help="RAFTIO_DEBUG trace lines as one column per peer",
        description=_DESCRIPTION,
    )
    configure_parser(p)
    p.set_defaults(run=run)
    return p


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", default="-", help="a trace file, or - for stdin (default)")
    p.add_argument("--peers", type=_int_list, help="only these peers, e.g. 0,2")
    p.add_argument("--topics", type=_word_list, help="only these topics, e.g. role,vote")
    p.add_argument("--from", dest="start", type=float, metavar="T", help="from loop time T (s)")
    p.add_argument("--to", dest="end", type=float, metavar="T", help="up to loop time T (s)")
    p.add_argument("--run", dest="run_number", type=int, metavar="N",
                   help="only run N of a file holding several (1 = first, -1 = last)")  # fmt: skip
    p.add_argument("--width", type=int, help="output width (default: the terminal's)")
    colors = p.add_mutually_exclusive_group()
    colors.add_argument(
        "--no-color",
        dest="color",
        action="store_false",
        default=None,
        help="never color (default: on a terminal, unless NO_COLOR is set)",
    )
    colors.add_argument(
        "--color", dest="color", action="store_true", help="always color, e.g. for less -R"
    )


def _int_list(text: str) -> frozenset[int]:
    try:
        values = frozenset(int(part.strip().removeprefix("S")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected peer numbers like 0,2, not {text!r}") from None
    return values


def _word_list(text: str) -> frozenset[str]:
    words = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not words:
        raise argparse.ArgumentTypeError("expected topics like role,vote")
    return words


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run `raftio logview` with parsed arguments; returns the exit code."""
    out = stdout if stdout is not None else sys.stdout
    try:
        runs, skipped = _read(args.file)
    except OSError as exc:
        print(f"raftio logview: {exc}", file=sys.stderr)
        return 2
    number = args.run_number  # (args.run is the command, as for every raftio subcommand)
    if number is not None:
        if not -len(runs) <= number <= len(runs) or number == 0:
            print(f"raftio logview: --run {number}: the input holds {len(runs)} run(s)",
                  file=sys.stderr)  # fmt: skip
            return 2
        chosen = [runs[number - 1 if number > 0 else number]]
    else:
        chosen = runs
    unknown = _unknown_filters(runs, args.peers, args.topics)
    if unknown:
        print(f"raftio logview: {unknown}", file=sys.stderr)
        return 2
    keep = TraceFilter(args.peers, args.topics, args.start, args.end).keep
    color = _use_color(args.color, out)
    width = args.width or _terminal_width()
    try:
        _show(chosen, keep, args.peers, width, color, out)
    except BrokenPipeError:  # `| head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return 0
    if skipped:
        print(f"raftio logview: skipped {skipped} line(s) that are not trace lines",
              file=sys.stderr)  # fmt: skip
    if not runs:
        print("raftio logview: no trace lines in the input", file=sys.stderr)
        return 1
    return 0


def _unknown_filters(
    runs: list[list[TraceLine]], peers: frozenset[int] | None, topics: frozenset[str] | None
) -> str | None:
    """Why --topics or --peers names something the input cannot hold (a typo), or None."""
    events = [event for run in runs for event in run]
    if topics is not None:
        valid = KNOWN_TOPICS | {event.topic for event in events}
        unknown = sorted(topics - valid)
        if unknown:
            return f"unknown topic {', '.join(unknown)}; topics: {', '.join(sorted(valid))}"
    if peers is not None and events:
        present = {event.peer for event in events if event.peer is not None}
        absent = sorted(peers - present)
        if absent:
            listed = ", ".join(f"S{peer}" for peer in sorted(present)) or "none"
            return f"no {', '.join(f'S{peer}' for peer in absent)} in the input; peers: {listed}"
    return None


def _read(path: str) -> tuple[list[list[TraceLine]], int]:
    if path == "-":
        return split_runs(sys.stdin)
    with open(path, encoding="utf-8", errors="replace") as f:
        return split_runs(f)


def _show(
    runs: list[list[TraceLine]],
    keep: Callable[[TraceLine], bool],
    peers: frozenset[int] | None,
    width: int,
    color: bool,
    out: TextIO,
) -> None:
    for number, events in enumerate(runs, 1):
        shown = [e for e in events if keep(e)]
        columns = sorted(peers or {e.peer for e in events if e.peer is not None})
        if len(runs) > 1:
            print(f"== run {number}: {len(shown)} of {len(events)} lines", file=out)
        for line in render(shown, columns, width, color):
            print(line, file=out)


def _terminal_width() -> int:
    """$COLUMNS, else the terminal's width (stderr's too: `| less` keeps it), else 120."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    for fd in (1, 2, 0):
        try:
            return os.get_terminal_size(fd).columns
        except OSError:
            continue
    return 120


def _use_color(choice: bool | None, out: TextIO) -> bool:
    if choice is not None:
        return choice
    return out.isatty() and not os.environ.get("NO_COLOR")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m raftio.logview`: the same as `raftio logview`."""
    parser = argparse.ArgumentParser(prog="raftio logview", description=_DESCRIPTION)
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
