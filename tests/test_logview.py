"""`raftio logview` on a real trace: a 3-peer run on the virtual clock with RAFTIO_DEBUG set."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raftio import cli
from raftio.logview import TraceFilter, TraceLine, parse_line, render, split_runs

Trace = tuple[Path, int, int]  # the trace file, the first leader, the second leader

# Three peers on the memory network and the virtual clock, all seeded: the first
# leader is elected, commits two commands and is killed; a second leader follows.
TRACED_RUN = textwrap.dedent(
    """
    import asyncio, random
    import raftio
    from raftio.testing import run
    from raftio.transport.memory import Network

    async def leader(peers):
        while True:
            alive = [p for p in peers if p.get_state()[1]]
            if alive:
                return alive[0]
            await asyncio.sleep(0.05)

    async def main():
        net = Network(seed=3)
        queues = [asyncio.Queue() for _ in range(3)]
        peers = []
        for i in range(3):
            ends = []
            for j in range(3):
                ends.append(net.make_end((i, j)))
                net.connect((i, j), j)
                net.enable((i, j), True)
            peers.append(raftio.make(ends, i, raftio.MemoryStorage(), queues[i],
                                     rng=random.Random(i)))
            net.add_server(i, peers[i])
        first = await leader(peers)
        first.start("x")
        first.start("y")
        await asyncio.sleep(0.5)
        first.kill()
        second = await leader([p for p in peers if p is not first])
        second.start("z")
        await asyncio.sleep(0.5)
        for p in peers:
            p.kill()
        net.cleanup()
        print(first.me, second.me)

    run(main(), "virtual")
    """
)


@pytest.fixture(scope="module")
def trace(tmp_path_factory: pytest.TempPathFactory) -> Trace:
    """(trace file, first leader, second leader) of one real traced run."""
    path = tmp_path_factory.mktemp("trace") / "t.log"
    env = {**_environ(), "RAFTIO_DEBUG": str(path)}
    done = subprocess.run(
        [sys.executable, "-c", TRACED_RUN],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    first, second = map(int, done.stdout.split())
    return path, first, second


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "RAFTIO_DEBUG"}


def logview(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = cli.main(["logview", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def column_of(header: str, line: str, text: str) -> int:
    """Which peer column of `header` holds `text` in `line` (by character offset)."""
    offset = line.index(text)
    starts = [m.start() for m in re.finditer(r"S\d+", header)]
    return max(i for i, start in enumerate(starts) if start <= offset)


def test_the_trace_is_parsed_whole(trace: Trace) -> None:
    path, first, second = trace

    runs, skipped = split_runs(path.read_text().splitlines())

    assert skipped == 0
    assert len(runs) == 1
    events = runs[0]
    assert {e.peer for e in events} == {0, 1, 2}
    assert [e.time for e in events] == sorted(e.time for e in events)
    leaders = [(e.peer, e.term) for e in events if e.text.startswith("became leader")]
    assert [peer for peer, _ in leaders] == [first, second]
    assert leaders[0][1] < leaders[1][1]  # type: ignore[operator]
    assert {"role", "vote", "send", "recv"} <= {e.topic for e in events}


def test_each_event_is_in_its_peers_column(
    trace: Trace, capsys: pytest.CaptureFixture[str]
) -> None:
    path, first, second = trace

    code, lines, err = logview(capsys, str(path), "--no-color", "--width", "150")

    assert code == 0, err
    header = lines[0]
    assert header.split() == ["time", "|", "S0", "|", "S1", "|", "S2"]
    became = [line for line in lines if "role: became leader" in line]
    assert [column_of(header, line, "became leader") for line in became] == [first, second]
    assert not any("\x1b[" in line for line in lines)


def test_topics_peers_and_window_filter(trace: Trace, capsys: pytest.CaptureFixture[str]) -> None:
    path, first, _ = trace
    events = split_runs(path.read_text().splitlines())[0][0]
    elected = next(e.time for e in events if e.text.startswith("became leader"))

    _, by_topic, _ = logview(capsys, str(path), "--no-color", "--width", "200",
                             "--topics", "role,vote")  # fmt: skip
    _, by_peer, _ = logview(capsys, str(path), "--no-color", "--width", "200",
                            "--peers", str(first), "--topics", "role")  # fmt: skip
    _, window, _ = logview(capsys, str(path), "--no-color", "--width", "200",
                           "--from", str(elected), "--to", str(elected + 0.2))  # fmt: skip

    topics = {m.group(1) for line in by_topic[1:] for m in [re.search(r" (\w+): ", line)] if m}
    assert topics == {"role", "vote"}
    expected = sum(e.topic in ("role", "vote") for e in events)
    assert len([line for line in by_topic[1:] if line.split()[0] != "|"]) == expected
    assert by_peer[0].split() == ["time", "|", f"S{first}"]
    assert len(by_peer) - 1 == sum(e.peer == first and e.topic == "role" for e in events)
    stamps = [float(line.split()[0]) for line in window[1:] if line.split()[0] != "|"]
    assert stamps
    assert min(stamps) == elected
    assert max(stamps) <= elected + 0.2


def test_colors_follow_the_topic(trace: Trace, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = trace

    _, lines, _ = logview(capsys, str(path), "--color", "--width", "150")

    assert any("\x1b[1;35mT1 L role: became leader" in line for line in lines)
    assert any("\x1b[33m" in line and "vote:" in line for line in lines)
    assert all(line.count("\x1b[") % 2 == 0 for line in lines)  # every color is reset


def test_runs_are_split_where_time_goes_back(
    trace: Trace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = trace
    text = path.read_text()
    twice = tmp_path / "twice.log"
    twice.write_text(text + "pytest noise\n" + text)
    events = split_runs(text.splitlines())[0][0]
    roles = sum(e.topic == "role" for e in events)

    code, lines, err = logview(capsys, str(twice), "--no-color", "--topics", "role")
    _, last, _ = logview(capsys, str(twice), "--no-color", "--topics", "role", "--run", "-1")
    bad, _, complaint = logview(capsys, str(twice), "--run", "3")

    assert code == 0
    assert [line for line in lines if line.startswith("== run")] == [
        f"== run 1: {roles} of {len(events)} lines",
        f"== run 2: {roles} of {len(events)} lines",
    ]
    assert "skipped 1 line(s)" in err
    assert not any(line.startswith("== run") for line in last)
    assert len(last) == (len(lines) - 2) // 2  # one run, without its '== run' line
    assert bad == 2
    assert "holds 2 run(s)" in complaint


def test_stdin_and_empty_input(
    trace: Trace,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path, _, _ = trace

    monkeypatch.setattr(sys, "stdin", io.StringIO(path.read_text()))
    code, from_stdin, _ = logview(capsys, "-", "--no-color", "--width", "150")
    monkeypatch.setattr(sys, "stdin", io.StringIO("not a trace line\n"))
    empty, nothing, err = logview(capsys, "--no-color")
    missing, _, why = logview(capsys, str(path) + ".missing")

    assert code == 0
    _, from_file, _ = logview(capsys, str(path), "--no-color", "--width", "150")
    assert from_stdin == from_file
    assert empty == 1
    assert nothing == []
    assert "no trace lines" in err
    assert missing == 2
    assert "No such file" in why


def test_simulation_lines_span_every_column() -> None:
    lines = [
        "1.0000\tS0\tT1\tleader\trole\tbecame leader (last=0)",
        "1.5000\t-\t-\t-\tnemesis\tcrash S0 (lose unsynced)",
        "2.0000\tS2\tT2\tcandidate\tvote\tS1 granted",
    ]
    events = [parse_line(line) for line in lines]

    assert events[1] == TraceLine(1.5, None, None, "-", "nemesis", "crash S0 (lose unsynced)")
    shown = [e for e in events if e is not None and TraceFilter(peers=frozenset({2})).keep(e)]
    out = list(render(shown, [0, 1, 2], 120, color=False))
    assert [e.time for e in shown] == [1.5, 2.0]
    assert out[1] == "    1.5000 | == nemesis: crash S0 (lose unsynced)"
    assert out[2].endswith("| T2 C vote: S1 granted")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "2026-11-26 00:43:30,401 INFO raftio.cli: node 0 ready",
        "x\tS0\tT1\tleader\trole\tbecame leader",
        "1.0\tP0\tT1\tleader\trole\tbecame leader",
        "1.0\tS0\t1\tleader\trole\tbecame leader",
        "1.0\tS0\tT1\tleader\trole",
    ],
)
def test_lines_that_are_not_trace_lines(line: str) -> None:
    assert parse_line(line) is None


def test_a_tab_in_the_text_is_kept() -> None:
    event = parse_line("0.5000\tS1\tT3\tfollower\tappend\treject\tprev=4")

    assert event == TraceLine(0.5, 1, 3, "follower", "append", "reject\tprev=4")


def test_the_width_follows_columns(
    trace: Trace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = trace

    monkeypatch.setenv("COLUMNS", "70")
    _, narrow, _ = logview(capsys, str(path), "--no-color")
    monkeypatch.setenv("COLUMNS", "160")
    _, wide, _ = logview(capsys, str(path), "--no-color")

    assert max(map(len, narrow)) <= 70
    assert max(map(len, wide)) <= 160
    assert len(wide) < len(narrow)  # fewer wrapped lines


def test_an_unknown_topic_or_peer_is_an_error_listing_the_valid_ones(
    trace: Trace, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _, _ = trace

    typo, typo_out, typo_err = logview(capsys, str(path), "--topics", "rolee,vote")
    absent, absent_out, absent_err = logview(capsys, str(path), "--peers", "0,7")
    known, _, known_err = logview(capsys, str(path), "--topics", "violation", "--no-color")

    assert (typo, typo_out) == (2, [])
    assert typo_err == (
        "raftio logview: unknown topic rolee; topics: append, apply, config, error, liveness, "
        "nemesis, recv, refuse, role, send, sim, snap, storage, violation, vote\n"
    )
    assert (absent, absent_out) == (2, [])
    assert absent_err == "raftio logview: no S7 in the input; peers: S0, S1, S2\n"
    assert (known, known_err) == (0, "")  # a topic raftio writes, just not in this trace


def test_a_topic_found_only_in_the_input_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other-version.log"
    path.write_text("1.0000\tS0\tT1\tleader\tlease\textended to 2.0\n")

    code, lines, err = logview(capsys, str(path), "--topics", "lease", "--no-color")

    assert (code, err) == (0, "")
    assert lines[1].endswith("T1 L lease: extended to 2.0")
