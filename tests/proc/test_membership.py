"""Membership from the command line: a cluster of `raftio node` processes grows and shrinks
under a write load, a node never restarts empty, and the commands' mistakes are one line.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from raftio.cli import main
from raftio.kv import KVClient
from raftio.kv.local import ClusterSpec, running_detached, settle
from raftio.storage.file import holds_state

from .conftest import ROOT, run_raftio
from .test_failover import Writer
from .test_first_hour import consecutive_free_ports


async def raftio(*args: str, timeout: float = 60.0) -> tuple[int, str, str]:
    """`python -m raftio ARGS` without blocking the event loop: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "raftio", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def agreeing(addresses: list[str], token: bytes | None) -> list[dict[str, Any]]:
    """Every node's status once all answer, one leads, and all applied alike."""
    async with KVClient(addresses, token=token) as client, asyncio.timeout(15):
        while True:
            found = [await client.status(a, timeout=0.5) for a in addresses]
            leaders = [s["role"] for s in found].count("leader")
            if leaders == 1 and len({(s["applied_index"], s["digest"]) for s in found}) == 1:
                return found
            await asyncio.sleep(0.05)


async def test_a_cluster_grows_and_shrinks_under_load_and_loses_no_write(
    cluster_dir: Path,
) -> None:
    d = str(cluster_dir)
    ClusterSpec.create(cluster_dir, 3, snapshot_bytes=4096).save()  # snapshots: a new node
    up = await raftio("cluster", "up", "--dir", d)  # may need InstallSnapshot to catch up
    first = ClusterSpec.load(cluster_dir)
    token = first.secret()
    stop = asyncio.Event()
    async with KVClient(first.client_peers, token=token, deadline=15.0) as client:
        writer = Writer(client)

        async def write_until_stopped() -> None:
            while not stop.is_set():
                await writer.append()

        writes = asyncio.create_task(write_until_stopped())
        await writer.run(0)
        added = await raftio("cluster", "add", "--dir", d)
        grown = ClusterSpec.load(cluster_dir)
        async with KVClient([grown.client_peers[3]], token=token) as through_new:
            via_new = await through_new.put("via-new", "redirected by node 3")
        moved = await raftio("transfer", "--to", "0", "--dir", d)
        removed = await raftio("cluster", "remove", "--dir", d, "0")  # the leader
        await asyncio.sleep(0.3)  # writes after the removal too
        stop.set()
        await writes
        shrunk = ClusterSpec.load(cluster_dir)
        final = await agreeing(shrunk.member_client_peers, token)
        values = {key: await client.get(key) for key in writer.expected}
    listed = await raftio("member", "list", "--dir", d)
    status = await raftio("status", "--dir", d)

    assert up[0] == 0, up[2]
    assert first.bootstrap == []  # every first voter started once: none bootstraps again
    assert added[0] == 0, added[2]
    assert added[1].startswith("node 3 added as a voter")
    assert grown.joined == [3]
    assert via_new == "redirected by node 3"
    assert (moved[0], moved[1]) == (0, "node 0 leads\n"), moved[2]
    assert removed[0] == 0, removed[2]
    assert removed[1].startswith("node 0 removed; stopped its process")
    assert (shrunk.ids, shrunk.removed) == ([1, 2, 3], [0])
    assert sorted(running_detached(shrunk)) == [1, 2, 3]
    assert [s["node_id"] for s in final] == [1, 2, 3]
    assert all(s["voters"] == [1, 2, 3] and s["learners"] == [] for s in final)
    assert writer.wrong == []
    assert len(writer.acks) > 20
    assert values == writer.expected  # every acknowledged write, exactly once
    assert listed[0] == 0
    assert [line.split()[:2] for line in listed[1].splitlines()[2:]] == [
        ["1", "voter"], ["2", "voter"], ["3", "voter"]
    ]  # fmt: skip
    rows = [line.split() for line in status[1].splitlines()[1:]]
    assert [row[0] for row in rows] == ["1", "2", "3"]
    assert all(row[-2:] == ["1,2,3", "-"] for row in rows)  # voters, learners


def test_a_node_refuses_an_empty_data_directory_without_bootstrap_or_join(
    tmp_path: Path,
) -> None:
    node = ["node", "--id", "0", "--peers", "127.0.0.1:7100", "--client-peers",
            "127.0.0.1:7101", "--insecure"]  # fmt: skip
    (tmp_path / "empty").mkdir()

    missing = run_raftio(*node, "--data", str(tmp_path / "missing"))
    empty = run_raftio(*node, "--data", str(tmp_path / "empty"))

    for done in (missing, empty):
        assert done.returncode == 2
        assert len(done.stderr.splitlines()) == 1, done.stderr
        assert done.stderr.startswith("raftio node: node 0: the data directory ")
        assert 'docs/operations.md, "Replace a failed node"' in done.stderr
    assert not (tmp_path / "missing").exists()  # refused before touching anything
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_first_start_that_failed_can_be_retried_once_the_cause_is_fixed(
    cluster_dir: Path,
) -> None:
    # Node 1 opened its data directory, then could not bind its port: it holds
    # (empty) state, so the next `cluster up` starts it without --bootstrap.
    d, base = str(cluster_dir), consecutive_free_ports(6)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 1))  # node 1's Raft port
        squatter.listen()
        failed = run_raftio("cluster", "up", "-n", "3", "--dir", d, "--base-port", str(base))
        spec = ClusterSpec.load(cluster_dir)
    # Nodes 0 and 2 run on after the failure and may open their data only now:
    # stop them, then settle as the next `cluster up` does before it starts any.
    down = run_raftio("cluster", "down", "--dir", d)
    next_start = settle(ClusterSpec.load(cluster_dir))
    again = run_raftio("cluster", "up", "--dir", d)

    assert failed.returncode == 1
    assert down.returncode == 0, down.stderr
    # A node that opened its data never bootstraps again; one the failure stopped
    # before it got that far (a loaded machine) still may, its directory empty.
    assert 1 not in spec.bootstrap
    assert all(not holds_state(next_start.data_dir(i)) for i in next_start.bootstrap)
    assert again.returncode == 0, again.stderr


# --------------------------------------------------------------------------- mistakes

PEERS = ["--peers", "127.0.0.1:7103"]
NODE = ["node", "--client-peers", "127.0.0.1:7101", "--data", "/nonexistent/n", "--insecure"]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["member", "add", "x", "127.0.0.1:1", "127.0.0.1:2", *PEERS],
         "raftio member add: argument id: 'x' is not a node id"),
        (["member", "add", "1", "localhost", "127.0.0.1:2", *PEERS],
         "raftio member add: argument RAFT_ADDRESS: 'localhost' is not host:port"),
        (["member", "add", "1", "127.0.0.1:1", "127.0.0.1:70000", *PEERS],
         "raftio member add: argument CLIENT_ADDRESS: '127.0.0.1:70000': port 70000 is out"),
        (["member", "add", "1", "127.0.0.1:1", *PEERS],
         "raftio member add: the following arguments are required: CLIENT_ADDRESS"),
        (["member", "remove", *PEERS], "raftio member remove: the following arguments are"),
        (["member", "list"], "raftio member list: one of the arguments --dir --peers is required"),
        (["member", "drop", "1", *PEERS], "raftio member: argument ACTION: invalid choice"),
        (["transfer", "--to", "leader", *PEERS],
         "raftio transfer: argument --to: 'leader' is not a node id"),
        (["transfer", "--timeout", "-1", *PEERS],
         "raftio transfer: argument --timeout: '-1' is not a positive number of seconds"),
        (["cluster", "add", "--dir", "/nonexistent/c", "--timeout", "nan"],
         "raftio cluster add: argument --timeout: 'nan' is not a positive number of seconds"),
        (["cluster", "remove", "--dir", "/nonexistent/c"],
         "raftio cluster remove: the following arguments are required: id"),
        ([*NODE, "--id", "0", "--peers", "0=127.0.0.1:7100,127.0.0.1:7102"],
         "raftio node: argument --peers: '0=127.0.0.1:7100,127.0.0.1:7102': name every node"),
        ([*NODE, "--id", "0", "--peers", "0=127.0.0.1:7100,0=127.0.0.1:7102"],
         "raftio node: argument --peers: '0=127.0.0.1:7100,0=127.0.0.1:7102' names node 0 twice"),
        ([*NODE, "--id", "0", "--peers", "x=127.0.0.1:7100"],
         "raftio node: argument --peers: 'x' is not a node id"),
        ([*NODE, "--id", "0", *PEERS, "--bootstrap", "--join"],
         "raftio node: argument --join: not allowed with argument --bootstrap"),
    ],
)  # fmt: skip
def test_a_usage_mistake_is_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err

    assert info.value.code == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith(expected), err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([*NODE, "--id", "5", "--peers", "127.0.0.1:7100"],
         "raftio node: --id must name a node of --peers; --client-peers the same nodes"),
        ([*NODE, "--id", "3", "--peers", "3=127.0.0.1:7100"],
         "raftio node: --id must name a node of --peers; --client-peers the same nodes"),
        (["member", "list", "--dir", "/nonexistent/c"],
         "raftio member list: no cluster in /nonexistent/c"),
        (["cluster", "add", "--dir", "/nonexistent/c"],
         "raftio cluster add: no cluster in /nonexistent/c"),
    ],
)  # fmt: skip
def test_a_command_that_cannot_run_as_asked_is_one_line_and_exit_2(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv)
    err = capsys.readouterr().err

    assert code == 2
    assert err.splitlines() == [err.strip()]
    assert err.startswith(expected), err


def test_cluster_remove_refuses_an_id_that_is_not_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ClusterSpec.create(tmp_path, 3).save()

    code = main(["cluster", "remove", "--dir", str(tmp_path), "7"])

    assert code == 2
    assert capsys.readouterr().err == (
        f"raftio cluster remove: node 7 is not a node of the cluster in {tmp_path} "
        "(its nodes: 0, 1, 2)\n"
    )
