"""ClusterSpec: who bootstraps, who joins, who is gone, and what cluster.json holds.

No processes: command lines are built and parsed by the real CLI parser,
and a data directory "holds state" once a FileStorage has opened it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftio.cli import build_parser
from raftio.kv.local import settle
from raftio.kv.spec import ClusterSpec
from raftio.storage.file import FileStorage, holds_state


def opened(spec: ClusterSpec, i: int) -> None:
    """Node i opens its data directory, as a starting node does."""
    FileStorage(spec.data_dir(i)).close()


def parsed(spec: ClusterSpec, i: int, *, bootstrap: bool = False) -> dict[str, object]:
    argv = spec.node_argv(i, bootstrap=bootstrap)
    args = build_parser().parse_args(argv[argv.index("node") :])
    return {"peers": args.peers, "clients": args.client_peers, "bootstrap": args.bootstrap,
            "join": args.join}  # fmt: skip


def test_holds_state_once_a_file_storage_opened_the_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "lock-only").mkdir()
    (tmp_path / "lock-only" / "LOCK").write_text("123\n")

    FileStorage(tmp_path / "used").close()

    assert not holds_state(tmp_path / "missing")
    assert not holds_state(tmp_path / "empty")
    assert not holds_state(tmp_path / "lock-only")
    assert holds_state(tmp_path / "used")


def test_a_new_cluster_bootstraps_each_first_voter_until_it_opened_its_data(
    tmp_path: Path,
) -> None:
    spec = ClusterSpec.create(tmp_path, 3)
    spec.save()

    before = [spec.needs_bootstrap(i) for i in spec.ids]
    opened(spec, 0)
    opened(spec, 2)
    after = settle(spec)

    assert before == [True, True, True]
    assert after.bootstrap == [1]
    assert ClusterSpec.load(tmp_path).bootstrap == [1]  # recorded in cluster.json
    assert parsed(after, 1, bootstrap=True)["bootstrap"] is True
    assert parsed(after, 0)["bootstrap"] is False
    assert parsed(after, 0)["peers"] == dict(enumerate(spec.peers))  # the old positional form


def test_a_wiped_first_voter_does_not_bootstrap_again(tmp_path: Path) -> None:
    spec = ClusterSpec.create(tmp_path, 3)
    for i in spec.ids:
        opened(spec, i)
    spec = spec.settled()

    for path in spec.data_dir(1).iterdir():
        path.unlink()  # its disk is lost

    assert spec.bootstrap == []
    assert not spec.needs_bootstrap(1)


def test_added_nodes_join_with_the_members_and_first_voters_keep_the_first_list(
    tmp_path: Path,
) -> None:
    spec = ClusterSpec.create(tmp_path, 3).settled()
    grown, new = spec.with_new_node()
    shrunk = grown.without_node(1)

    joining = parsed(shrunk, new)
    first = parsed(shrunk, 0)

    assert (new, grown.joined, grown.n) == (3, [3], 4)
    assert (shrunk.ids, shrunk.n, shrunk.removed) == ([0, 2, 3], 3, [1])
    assert shrunk.member_client_peers == [grown.client_peers[i] for i in (0, 2, 3)]
    assert joining["join"] is True
    assert joining["peers"] == {i: grown.peers[i] for i in (0, 2, 3)}
    assert joining["clients"] == {i: grown.client_peers[i] for i in (0, 2, 3)}
    assert first["peers"] == dict(enumerate(spec.peers))  # its first configuration, as it was
    assert first["join"] is False
    with pytest.raises(ValueError, match="not a member"):
        shrunk.without_node(1)


def test_cluster_json_keeps_the_old_shape_until_membership_changes(tmp_path: Path) -> None:
    spec = ClusterSpec.create(tmp_path, 3)
    for i in spec.ids:
        opened(spec, i)
    spec = spec.settled()
    spec.save()
    plain = json.loads((tmp_path / "cluster.json").read_text())
    grown, _ = spec.with_new_node()
    grown.without_node(0).save()
    changed = json.loads((tmp_path / "cluster.json").read_text())

    assert set(plain) == {"peers", "client_peers", "cluster_id", "snapshot_bytes", "extra_args"}
    assert (changed["joined"], changed["removed"]) == ([3], [0])
    assert ClusterSpec.load(tmp_path) == grown.without_node(0)


@pytest.mark.parametrize(
    "raw",
    [
        {"joined": [7]},
        {"removed": ["0"]},
        {"bootstrap": "all"},
        {"joined": [0]},  # a first voter cannot have joined
        {"client_peers": ["127.0.0.1:1"]},
    ],
    ids=["unknown-id", "str-id", "not-a-list", "first-voter-joined", "short-clients"],
)
def test_a_cluster_json_that_contradicts_itself_is_refused(
    tmp_path: Path, raw: dict[str, object]
) -> None:
    spec = ClusterSpec.create(tmp_path, 3)
    spec.save()
    data = json.loads((tmp_path / "cluster.json").read_text())
    data.update(raw)
    (tmp_path / "cluster.json").write_text(json.dumps(data))

    with pytest.raises(ValueError, match="must"):
        ClusterSpec.load(tmp_path)
