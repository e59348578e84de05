"""`raftio` and `python -m raftio`: the command line. See docs/cli.md.

Owns argument parsing and each command's console output and exit code;
the work itself lives in raftio.kv (the service, the client, local process
clusters and the demo). Commands:

    raftio node --id I --peers ... --client-peers ... --data DIR   one KV node, until SIGTERM
    raftio demo [-n 3] [--dir D] [--writes N]       a cluster survives a SIGKILLed leader
    raftio cluster up -n N --dir D [--base-port P]  N detached nodes; `cluster down --dir D`
    raftio kv (--dir D | --peers ...) get|put|append KEY [VALUE]
    raftio status (--dir D | --peers ...)
    raftio bench [--quick] [--out DIR] [--only SYSTEM] ...   benchmarks/ (a checkout only)
    raftio logview [FILE|-] [--peers 0,2] [--topics role,vote] [--from T] [--to T]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import raftio
from raftio import logview
from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.demo import Demo, DemoResult
from raftio.kv.display import LiveView, metrics_table, status_table
from raftio.kv.local import ClusterSpec, LocalCluster, running_detached, stop_detached
from raftio.kv.service import KVNode
from raftio.storage.base import StorageError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("raftio.cli")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CommandError as exc:
        print(f"raftio {args.command}: {exc}", file=sys.stderr)
        return 2
    return code


class CommandError(Exception):
    """A command cannot run as asked; main() prints it and exits 2."""


def _load_spec(directory: str | Path) -> ClusterSpec:
    try:
        return ClusterSpec.load(directory)
    except FileNotFoundError:
        raise CommandError(f"no cluster in {directory} (no cluster.json)") from None


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftio", description="Raft for Python asyncio: a replicated key/value service."
    )
    parser.add_argument("--version", action="version", version=f"raftio {raftio.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_node(commands)
    _add_demo(commands)
    _add_cluster(commands)
    _add_kv(commands)
    _add_status(commands)
    logview.add_parser(commands)
    _add_bench(commands)
    return parser


def _addresses(text: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    if not addresses:
        raise argparse.ArgumentTypeError("expected host:port[,host:port...]")
    return addresses


def _add_node(commands: Any) -> None:
    p = commands.add_parser("node", help="run one KV node until SIGTERM or SIGINT")
    p.add_argument("--id", type=int, required=True, help="this node's index in --peers")
    p.add_argument("--peers", type=_addresses, required=True, help="every node's Raft host:port")
    p.add_argument("--client-peers", type=_addresses, required=True,
                   help="every node's client host:port, in the same order")  # fmt: skip
    p.add_argument("--data", required=True, help="this node's data directory")
    p.add_argument("--cluster-id", default="raftio", help="peers of other clusters are refused")
    p.add_argument("--secret-file", help="file holding the cluster's shared secret")
    p.add_argument("--snapshot-bytes", type=int, default=8 << 20,
                   help="snapshot once the log passes this many bytes")  # fmt: skip
    p.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")  # fmt: skip
    p.set_defaults(run=cmd_node)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser("demo", help="a KV cluster of processes survives a SIGKILLed leader")
    p.add_argument("-n", type=int, default=3, help="nodes (default 3)")
    p.add_argument("--dir", help="keep the cluster's files here (default: a temporary directory)")
    p.add_argument("--writes", type=int, default=100, help="writes before the kill (default 100)")
    p.add_argument("--timeout", type=float, default=50.0, help="give up after this many seconds")
    p.set_defaults(run=cmd_demo)


def _add_cluster(commands: Any) -> None:
    p = commands.add_parser("cluster", help="start or stop detached node processes")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the nodes of --dir in the background")
    up.add_argument("-n", type=int, help="nodes of a new cluster (default 3)")
    up.add_argument("--dir", required=True, help="cluster directory (cluster.json, data, logs)")
    up.add_argument(
        "--base-port",
        type=int,
        help="Raft ports P..P+n-1, client ports P+n..P+2n-1 (default: free ports)",
    )
    up.set_defaults(run=cmd_cluster_up)  # fmt: skip
    down = actions.add_parser("down", help="stop the nodes of --dir")
    down.add_argument("--dir", required=True, help="cluster directory")
    down.set_defaults(run=cmd_cluster_down)


def _add_target(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dir", help="cluster directory made by `raftio cluster up`")
    target.add_argument("--peers", type=_addresses, help="the nodes' client host:port list")


def _add_kv(commands: Any) -> None:
    p = commands.add_parser("kv", help="get, put or append through the cluster's leader")
    _add_target(p)
    p.add_argument("--timeout", type=float, default=10.0, help="give up after this many seconds")
    p.add_argument("op", choices=["get", "put", "append"])
    p.add_argument("key")
    p.add_argument("value", nargs="?", help="for put and append")
    p.set_defaults(run=cmd_kv)


def _add_status(commands: Any) -> None:
    p = commands.add_parser("status", help="a table of every node's status")
    _add_target(p)
    p.add_argument("--metrics", action="store_true", help="also a table of each node's metrics")
    p.set_defaults(run=cmd_status)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,16,256, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers like 1,16,256")
    return values


def _add_bench(commands: Any) -> None:
    p = commands.add_parser(
        "bench", help="benchmark raftio against PySyncObj and etcd (docs/benchmarks.md)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="C=1,256, 16 B, 2 s per point (unless given explicitly)",
    )
    p.add_argument("--out", help="results directory (default results/<timestamp>/)")
    p.add_argument("--only", choices=["raftio", "pysyncobj", "etcd"], help="one system only")
    p.add_argument(
        "--series",
        type=lambda t: [s.strip() for s in t.split(",") if s.strip()],
        help="a subset of series, e.g. raftio-embedded,raftio-e2e",
    )
    p.add_argument("--concurrency", type=_int_list, help="default 1,16,256,4096")
    p.add_argument("--payload", type=_int_list, help="payload bytes, default 16,1024")
    p.add_argument("--duration", type=float, help="measured seconds per point (default 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per point (default 1)")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds over every system; each point keeps its median",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="also cProfile the raftio leader under embedded C=256 16 B",
    )
    p.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of every process (default uvloop)",
    )
    p.add_argument(
        "--docs",
        metavar="PAGE",
        help="also write the results into PAGE's generated block, e.g. docs/benchmarks.md",
    )
    p.set_defaults(run=cmd_bench)


def _bench_runner() -> Any:
    """benchmarks.runner, from the checkout this raftio was installed from (editable)."""
    import importlib

    try:
        return importlib.import_module("benchmarks.runner")
    except ImportError:
        checkout = Path(raftio.__file__).resolve().parent.parent
        if not (checkout / "benchmarks" / "runner.py").is_file():
            raise CommandError(
                "the benchmark harness is not installed with raftio: it lives in benchmarks/ of "
                "a source checkout. From a checkout: pip install -e '.[bench]' && raftio bench "
                "(or python -m benchmarks); see docs/benchmarks.md"
            ) from None
        sys.path.insert(0, str(checkout))
        return importlib.import_module("benchmarks.runner")


def cmd_bench(args: argparse.Namespace) -> int:
    runner = _bench_runner()
    settings = runner.Settings(
        quick=args.quick,
        only=args.only,
        series=args.series,
        repeat=args.repeat,
        profile=args.profile,
        loop=args.loop,
    )
    for name, value in (runner.QUICK if args.quick else {}).items():
        setattr(settings, name, value)
    given = {
        "concurrency": args.concurrency,
        "payloads": args.payload,
        "duration": args.duration,
        "warmup": args.warmup,
    }
    for name, value in given.items():
        if value is not None:
            setattr(settings, name, value)
    if args.series:
        unknown = sorted(set(args.series) - set(runner.SERIES))
        if unknown:
            raise CommandError(f"unknown series {unknown}; known: {sorted(runner.SERIES)}")
    if args.repeat < 1 or settings.duration <= 0 or settings.warmup < 0:
        raise CommandError("--repeat must be >= 1, --duration > 0, --warmup >= 0")
    settings.out = Path(args.out) if args.out else None
    if args.docs:
        settings.docs = Path(args.docs)
        text = settings.docs.read_text() if settings.docs.is_file() else ""
        if runner.report.DOCS_BEGIN not in text:  # fail now, not after the run
            raise CommandError(f"{args.docs} has no generated results block to replace")
    settings.command = runner.command_line(settings)
    code: int = runner.run(settings)
    return code


def _client_addresses(args: argparse.Namespace) -> list[str]:
    if args.peers:
        return list(args.peers)
    return _load_spec(args.dir).client_peers


# --------------------------------------------------------------------------- node


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=_LOG_FORMAT)
    if not 0 <= args.id < len(args.peers) or len(args.client_peers) != len(args.peers):
        print("raftio node: --id must index --peers; --client-peers must match it", file=sys.stderr)
        return 2
    secret = _read_secret(args.secret_file) if args.secret_file else None
    kv = KVNode(args.id, args.peers, args.client_peers, args.data, cluster_id=args.cluster_id,
                secret=secret, snapshot_bytes=args.snapshot_bytes)  # fmt: skip
    try:
        asyncio.run(_serve_node(kv, args.data, args.parent_pid))
    except (OSError, StorageError) as exc:
        logger.error("node %d cannot run: %s", args.id, exc)
        return 1
    return 0


def _read_secret(path: str) -> bytes:
    try:
        secret = Path(path).read_bytes().strip()
    except OSError as exc:
        raise CommandError(f"cannot read the secret file: {exc}") from None
    if not secret:
        raise CommandError(f"the secret file {path} is empty")
    return secret


async def _serve_node(kv: KVNode, data: str, parent_pid: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with kv:
        node = kv.node
        logger.info("node %d ready: raft %s, clients %s, data %s", node.node_id, node.address,
                    kv.server.client_addresses[node.node_id], data)  # fmt: skip
        watcher = loop.create_task(_watch_parent(parent_pid, stop), name="parent-watcher")
        watcher.add_done_callback(_log_failure)
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        logger.info("node %d stopping", node.node_id)
    logger.info("node %d stopped", node.node_id)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("task %s failed", task.get_name(), exc_info=task.exception())


async def _watch_parent(parent_pid: int | None, stop: asyncio.Event) -> None:
    """Stop the node once its parent is gone (a demo or test that died without cleaning up)."""
    if parent_pid is None:
        return
    while os.getppid() == parent_pid:
        if stop.is_set():
            return
        await asyncio.sleep(0.5)
    logger.warning("parent %d is gone; stopping", parent_pid)
    stop.set()


# --------------------------------------------------------------------------- demo


def cmd_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=_LOG_FORMAT)
    if args.n < 3:
        print("raftio demo: -n must be at least 3 (a majority must survive the kill)",
              file=sys.stderr)  # fmt: skip
        return 2
    with tempfile.TemporaryDirectory(prefix="raftio-demo-") as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp)
        if directory.exists() and any(directory.iterdir()):
            print(f"raftio demo: {directory} is not empty", file=sys.stderr)
            return 2
        spec = ClusterSpec.create(directory, args.n)
        print(f"raftio demo: {args.n} node processes on 127.0.0.1, files in {directory}")
        result = asyncio.run(_demo(spec, args.writes, args.timeout))
        _print_demo_result(spec, result)
    return 0 if result.passed else 1


async def _demo(spec: ClusterSpec, writes: int, timeout: float) -> DemoResult:
    view = LiveView(sys.stdout, live=sys.stdout.isatty())
    demo = Demo(spec, view, writes=writes)
    try:
        async with asyncio.timeout(timeout):
            return await demo.run()
    except TimeoutError:
        demo.check(False, f"the demo did not finish within {timeout:.0f} s")
        return demo.result


def _print_demo_result(spec: ClusterSpec, result: DemoResult) -> None:
    if result.failover is not None:
        print(f"failover time: {result.failover:.3f} s (SIGKILL of the leader -> "
              "first acknowledged write)")  # fmt: skip
    passed = sum(ok for ok, _ in result.checks)
    verdict = "PASSED" if result.passed else "FAILED"
    print(f"demo {verdict}: {passed}/{len(result.checks)} checks passed")
    if not result.passed:
        for i in range(spec.n):
            tail = LocalCluster(spec).tail(i, 10)
            print(f"--- node {i} log (last lines) ---\n{tail}", file=sys.stderr)


# --------------------------------------------------------------------------- cluster


def cmd_cluster_up(args: argparse.Namespace) -> int:
    return asyncio.run(_cluster_up(Path(args.dir), args.n, args.base_port))


async def _cluster_up(directory: Path, n: int | None, base_port: int | None) -> int:
    try:
        spec = ClusterSpec.load(directory)
    except FileNotFoundError:
        spec = ClusterSpec.create(directory, n or 3, base_port=base_port)
        spec.save()
    if n is not None and n != spec.n:
        raise CommandError(f"{directory} holds a cluster of {spec.n}, not {n}")
    running = running_detached(spec)
    cluster = LocalCluster(spec, detached=True)
    for i in range(spec.n):
        if i not in running:
            cluster.start(i)
    try:
        statuses = await _wait_for_leader(spec.client_peers, 15.0)
    except TimeoutError:
        print("raftio cluster up: no leader within 15 s; stopping", file=sys.stderr)
        for i in cluster.procs:
            print(f"--- node {i} log ---\n{cluster.tail(i)}", file=sys.stderr)
        cluster.kill_all_now()
        return 1
    started = sorted(cluster.procs)
    cluster.release()
    print(f"cluster of {spec.n} in {directory}: started {started or 'none'}, "
          f"already running {sorted(running) or 'none'}")  # fmt: skip
    _print_table(statuses, running_detached(spec))
    return 0


async def _wait_for_leader(addresses: list[str], timeout: float) -> list[dict[str, Any] | None]:
    async with KVClient(addresses) as client, asyncio.timeout(timeout):
        while True:
            statuses = await _statuses(client, addresses)
            if all(statuses) and any(s["role"] == "leader" for s in statuses if s):
                return statuses
            await asyncio.sleep(0.1)


def cmd_cluster_down(args: argparse.Namespace) -> int:
    spec = _load_spec(args.dir)
    stopped = asyncio.run(stop_detached(spec))
    for i, pid in stopped:
        print(f"node {i} (pid {pid}) stopped")
    if not stopped:
        print("no node was running")
    return 0


# --------------------------------------------------------------------------- kv, status


def cmd_kv(args: argparse.Namespace) -> int:
    if (args.op == "get") != (args.value is None):
        print(f"raftio kv: {args.op} takes {'no' if args.op == 'get' else 'a'} VALUE",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        value = asyncio.run(_kv(_client_addresses(args), args.op, args.key, args.value,
                                args.timeout))  # fmt: skip
    except (KVUnavailableError, KVRequestError) as exc:
        print(f"raftio kv: {exc}", file=sys.stderr)
        return 1
    if value is None:
        print("(nil)", file=sys.stderr)
        return 1
    print(value)
    return 0


async def _kv(
    addresses: list[str], op: str, key: str, value: str | None, timeout: float
) -> str | None:
    async with KVClient(addresses, deadline=timeout) as client:
        if op == "get":
            return await client.get(key)
        assert value is not None
        return await (client.put if op == "put" else client.append)(key, value)


def cmd_status(args: argparse.Namespace) -> int:
    addresses = _client_addresses(args)
    pids = running_detached(_load_spec(args.dir)) if args.dir else {}
    statuses = asyncio.run(_status(addresses))
    _print_table(statuses, pids)
    if args.metrics:
        print()
        for line in metrics_table(statuses):
            print(line)
    return 0 if any(statuses) else 1


async def _status(addresses: list[str]) -> list[dict[str, Any] | None]:
    async with KVClient(addresses) as client:
        return await _statuses(client, addresses)


async def _statuses(client: KVClient, addresses: list[str]) -> list[dict[str, Any] | None]:
    statuses: list[dict[str, Any] | None] = []
    for address in addresses:
        try:
            statuses.append(await client.status(address, timeout=1.0))
        except KVUnavailableError:
            statuses.append(None)
    return statuses


def _print_table(statuses: list[dict[str, Any] | None], pids: dict[int, int]) -> None:
    for line in status_table(statuses, pids=dict(pids.items())):
        print(line)
