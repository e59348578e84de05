"""`raftio` and `python -m raftio`: the command line. See docs/cli.md.

Owns argument parsing and each command's console output and exit code;
the work itself lives in raftio.kv (the service, the client, local process
clusters and the demo). Commands:

    raftio node --id I --peers ... --client-peers ... --data DIR (--secret-file F | --insecure)
    raftio demo [-n 3] [--dir D] [--writes N]       a cluster survives a SIGKILLed leader
    raftio cluster up -n N --dir D [--base-port P]  N detached nodes; `cluster down --dir D`
    raftio kv (--dir D | --peers ...) get|put|append KEY [VALUE]
    raftio status (--dir D | --peers ...)
    raftio bench [OPTIONS]      runs `python -m benchmarks OPTIONS` (a checkout only)
    raftio logview [FILE|-] [--peers 0,2] [--topics role,vote] [--from T] [--to T]

An ordinary mistake (a malformed address, an unusable directory or secret
file, a node that dies at start-up) is one line on stderr and a non-zero
exit code, never a traceback: usage errors exit 2, failures 1, a closed
stdout (`| head`) 141 without a word. `node`, `demo` and `cluster up` run
on uvloop where it is installed (`--loop asyncio` opts out).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import raftio
from raftio import _loop, logview
from raftio.kv.client import KVClient, KVRequestError, KVUnavailableError
from raftio.kv.demo import Demo, DemoResult
from raftio.kv.display import LiveView, metrics_table, status_table
from raftio.kv.local import (
    ClusterSpec,
    LocalCluster,
    SecretFileError,
    read_secret,
    running_detached,
    stop_detached,
)
from raftio.kv.protocol import UNAUTHORIZED
from raftio.kv.service import KVNode
from raftio.node import parse_address
from raftio.storage.base import StorageError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("raftio.cli")

_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_UP_WAIT = 15.0  # seconds `cluster up` waits for every node to answer and one to lead
_KV_NOTE_AFTER = 1.0  # seconds `raftio kv` waits silently before saying it is retrying
_SIGPIPE_EXIT = 128 + signal.SIGPIPE  # what a shell reports for a process killed by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except CommandError as exc:
        print(f"{_prog(args)}: {exc}", file=sys.stderr)
        return exc.code
    except BrokenPipeError:
        if not _stdout_closed():
            raise  # a socket's, not ours: a bug to see
        return _SIGPIPE_EXIT
    return code


class CommandError(Exception):
    """A command cannot run as asked; main() prints it as one line and exits `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _prog(args: argparse.Namespace) -> str:
    action = getattr(args, "action", None)
    return " ".join(["raftio", args.command, *([action] if action else [])])


def _stdout_closed() -> bool:
    """Whether stdout's reader went away; if so, point stdout at /dev/null for a quiet exit."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False
    # The write end of a pipe whose reader has gone polls as an error (Linux, BSDs).
    if not any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail again
    os.close(devnull)
    return True


def _os_reason(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _secret(path: str) -> bytes:
    try:
        return read_secret(path)
    except SecretFileError as exc:
        raise CommandError(str(exc)) from None


def _loop_choice(choice: str | None) -> str:
    """The event loop to run on: --loop if given, else uvloop where installed."""
    if choice is None:
        return _loop.default_loop()
    if choice == "uvloop" and _loop.default_loop() != "uvloop":
        raise CommandError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    return choice


def _load_spec(directory: str | Path) -> ClusterSpec:
    try:
        return ClusterSpec.load(directory)
    except FileNotFoundError:
        raise CommandError(f"no cluster in {directory} (no cluster.json)") from None
    except NotADirectoryError:
        raise CommandError(f"cannot use {directory}: not a directory (a file in its way)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read {directory}/cluster.json: {exc}") from None


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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


def _address(text: str) -> str:
    address = text.strip()
    _, sep, port = address.rpartition(":")
    if sep and port.isdigit() and not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{address!r}: port {port} is out of range (1-65535)")
    try:
        parse_address(address)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{address!r} is not host:port (e.g. 127.0.0.1:7100)"
        ) from None
    return address


def _addresses(text: str) -> list[str]:
    addresses = [_address(a) for a in text.split(",") if a.strip()]
    if not addresses:
        raise argparse.ArgumentTypeError("expected host:port[,host:port...]")
    return addresses


def _add_loop(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--loop", choices=_loop.LOOPS,
                   help=f"event loop of {what} (default: uvloop where installed)")  # fmt: skip


def _add_node(commands: Any) -> None:
    p = commands.add_parser("node", help="run one KV node until SIGTERM or SIGINT")
    p.add_argument("--id", type=int, required=True, help="this node's index in --peers")
    p.add_argument("--peers", type=_addresses, required=True, help="every node's Raft host:port")
    p.add_argument("--client-peers", type=_addresses, required=True,
                   help="every node's client host:port, in the same order")  # fmt: skip
    p.add_argument("--data", required=True, help="this node's data directory")
    p.add_argument("--cluster-id", default="raftio", help="peers of other clusters are refused")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--secret-file", help="file holding the cluster's shared secret (mode 600)")
    auth.add_argument("--insecure", action="store_true",
                      help="no secret: whoever reaches the ports is trusted")  # fmt: skip
    p.add_argument("--snapshot-bytes", type=int, default=8 << 20,
                   help="snapshot once the log passes this many bytes")  # fmt: skip
    p.add_argument("--parent-pid", type=int, help="exit when this process is no longer the parent")
    p.add_argument("--log-level", default="INFO", type=str.upper,
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")  # fmt: skip
    _add_loop(p, "this node")
    p.set_defaults(run=cmd_node)


def _add_demo(commands: Any) -> None:
    p = commands.add_parser("demo", help="a KV cluster of processes survives a SIGKILLed leader")
    p.add_argument("-n", type=int, default=3, help="nodes (default 3)")
    p.add_argument("--dir", help="keep the cluster's files here (default: a temporary directory)")
    p.add_argument("--writes", type=int, default=100, help="writes before the kill (default 100)")
    p.add_argument("--timeout", type=float, default=50.0, help="give up after this many seconds")
    _add_loop(p, "the demo and its nodes")
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
    _add_loop(up, "the nodes")
    up.set_defaults(run=cmd_cluster_up)
    down = actions.add_parser("down", help="stop the nodes of --dir")
    down.add_argument("--dir", required=True, help="cluster directory")
    down.set_defaults(run=cmd_cluster_down)


def _add_target(p: argparse.ArgumentParser) -> None:
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dir", help="cluster directory made by `raftio cluster up`")
    target.add_argument("--peers", type=_addresses, help="the nodes' client host:port list")
    p.add_argument("--secret-file",
                   help="the cluster's shared secret (default with --dir: DIR/secret)")  # fmt: skip


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


def _add_bench(commands: Any) -> None:
    p = commands.add_parser(
        "bench",
        help="run `python -m benchmarks` (a source checkout's harness; docs/benchmarks.md)",
        add_help=False,  # --help too is the harness's
        prefix_chars="+",  # so that every option reaches OPTIONS unparsed
    )
    p.add_argument("options", nargs="*", metavar="OPTIONS", help="the harness's options")
    p.set_defaults(run=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    """`python -m benchmarks OPTIONS` in a child process, from the checkout raftio came from."""
    checkout = Path(raftio.__file__).resolve().parent.parent
    if not (checkout / "benchmarks" / "__main__.py").is_file():
        raise CommandError(
            "the benchmark harness is not installed with raftio: it lives in benchmarks/ of "
            "a source checkout; there run python -m benchmarks (see docs/benchmarks.md)"
        )
    env = dict(os.environ)  # the child finds benchmarks/ where this raftio came from
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(checkout), env.get("PYTHONPATH")) if p)
    return _wait_forwarding_signals([sys.executable, "-m", "benchmarks", *args.options], env)


def _wait_forwarding_signals(argv: list[str], env: dict[str, str]) -> int:
    """Run `argv` to its end; SIGTERM is passed on, Ctrl-C reaches it by itself."""
    with subprocess.Popen(argv, env=env) as child:
        previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
        try:
            while True:
                try:
                    code = child.wait()
                    return code if code >= 0 else 128 - code  # killed by signal -code
                except KeyboardInterrupt:
                    continue  # the child got the same Ctrl-C; it stops and writes what it has
        finally:
            signal.signal(signal.SIGTERM, previous)


def _target(args: argparse.Namespace) -> tuple[list[str], bytes | None]:
    """The client addresses and the secret (token) of `kv` / `status`."""
    if args.peers:
        addresses = list(args.peers)
        token = _secret(args.secret_file) if args.secret_file else None
        return addresses, token
    spec = _load_spec(args.dir)
    if args.secret_file:
        return spec.client_peers, _secret(args.secret_file)
    try:
        return spec.client_peers, spec.secret()
    except SecretFileError as exc:
        raise CommandError(str(exc)) from None


def _client(addresses: list[str], token: bytes | None, **options: Any) -> KVClient:
    return KVClient(addresses, token=token, **options)


# --------------------------------------------------------------------------- node


def cmd_node(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format=_LOG_FORMAT)
    if not 0 <= args.id < len(args.peers) or len(args.client_peers) != len(args.peers):
        raise CommandError("--id must index --peers; --client-peers must match it")
    if args.secret_file is None and not args.insecure:
        raise CommandError(
            "give --secret-file FILE (the cluster's shared secret), or --insecure to run "
            "without authenticating peers and clients"
        )
    secret = _secret(args.secret_file) if args.secret_file else None
    loop = _loop_choice(args.loop)
    if secret is None:
        logger.warning("node %d runs --insecure: whoever reaches its ports is trusted", args.id)
    kv = KVNode(args.id, args.peers, args.client_peers, args.data, cluster_id=args.cluster_id,
                secret=secret, snapshot_bytes=args.snapshot_bytes)  # fmt: skip
    try:
        failure = _loop.run(_serve_node(kv, args.data, args.parent_pid), loop)
    except (OSError, StorageError) as exc:
        logger.error("node %d cannot run: %s", args.id, exc)
        return 1
    return 0 if failure is None else 1  # a fail-stopped node exits non-zero


async def _serve_node(kv: KVNode, data: str, parent_pid: int | None) -> str | None:
    """Serve until SIGTERM/SIGINT or a fail-stop; returns the failure, if any."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with kv:
        node = kv.node
        logger.info("node %d ready: raft %s, clients %s, data %s, loop %s", node.node_id,
                    node.address, kv.server.client_addresses[node.node_id], data,
                    _loop.loop_name(loop))  # fmt: skip
        watcher = loop.create_task(_watch_parent(parent_pid, stop), name="parent-watcher")
        watcher.add_done_callback(_log_failure)
        failed = loop.create_task(node.wait_failed(), name="failure-watcher")
        failed.add_done_callback(lambda _: stop.set())
        try:
            await stop.wait()
        finally:
            watcher.cancel()
            failed.cancel()
            await asyncio.gather(watcher, failed, return_exceptions=True)
        logger.info("node %d stopping", node.node_id)
    logger.info("node %d stopped", node.node_id)
    return node.failure


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
        raise CommandError("-n must be at least 3 (a majority must survive the kill)")
    loop = _loop_choice(args.loop)
    with tempfile.TemporaryDirectory(prefix="raftio-demo-") as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp)
        _check_empty(directory)
        spec = ClusterSpec.create(directory, args.n)
        _prepare(spec)
        print(f"raftio demo: {args.n} node processes on 127.0.0.1 ({loop}), files in {directory}")
        result = _loop.run(_demo(spec, args.writes, args.timeout, loop), loop)
        _print_demo_result(spec, result)
    return 0 if result.passed else 1


def _check_empty(directory: Path) -> None:
    try:
        if directory.exists() and any(directory.iterdir()):
            raise CommandError(f"{directory} is not empty")
    except OSError as exc:
        raise CommandError(f"cannot use {directory}: {_os_reason(exc)}") from None


def _prepare(spec: ClusterSpec) -> None:
    """Write cluster.json and the secret, or fail in one line."""
    try:
        spec.save()
        spec.ensure_secret()
    except OSError as exc:
        raise CommandError(
            f"cannot write the cluster directory {spec.directory}: {_os_reason(exc)}"
        ) from None


async def _demo(spec: ClusterSpec, writes: int, timeout: float, loop: str) -> DemoResult:
    view = LiveView(sys.stdout, live=sys.stdout.isatty())
    demo = Demo(spec, view, writes=writes, loop=loop)
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
    if args.n is not None and args.n < 1:
        raise CommandError("-n must be at least 1")
    if args.base_port is not None and not 0 < args.base_port <= 65536 - 2 * (args.n or 3):
        raise CommandError(f"--base-port {args.base_port}: the ports must lie in 1-65535")
    loop = _loop_choice(args.loop)
    nodes_loop = args.loop  # None: each node picks its own default
    return _loop.run(_cluster_up(Path(args.dir), args.n, args.base_port, nodes_loop), loop)


async def _cluster_up(
    directory: Path, n: int | None, base_port: int | None, loop: str | None
) -> int:
    spec = _open_cluster(directory, n, base_port)
    token = _secret(str(spec.secret_path))
    running = running_detached(spec)
    cluster = LocalCluster(spec, detached=True, loop=loop)
    try:
        for i in range(spec.n):
            if i not in running:
                cluster.start(i)
    except OSError as exc:
        cluster.kill_all_now()
        raise CommandError(f"cannot start the nodes in {directory}: {_os_reason(exc)}") from None
    try:
        statuses = await _wait_for_cluster(cluster, token, running)
    except KVRequestError as exc:  # a node left running from before it had a secret, say
        raise _refused(exc, token) from None
    finally:
        started = sorted(cluster.procs)
        cluster.release()  # they run on, whatever happened; `cluster down` stops them
    print(f"cluster of {spec.n} in {directory}: started {started or 'none'}, "
          f"already running {sorted(running) or 'none'}")  # fmt: skip
    _print_table(statuses, running_detached(spec))
    return 0


def _open_cluster(directory: Path, n: int | None, base_port: int | None) -> ClusterSpec:
    """The cluster in `directory`, made (cluster.json and secret) if there is none."""
    try:
        spec = ClusterSpec.load(directory)
    except FileNotFoundError:
        spec = ClusterSpec.create(directory, n or 3, base_port=base_port)
    except (OSError, ValueError, TypeError):
        spec = _load_spec(directory)  # raises its one-line error
    if n is not None and n != spec.n:
        raise CommandError(f"{directory} holds a cluster of {spec.n}, not {n}")
    _prepare(spec)
    return spec


async def _wait_for_cluster(
    cluster: LocalCluster, token: bytes | None, running: dict[int, int]
) -> list[dict[str, Any] | None]:
    """Statuses once every node answers and one leads; CommandError (exit 1) as soon as a node
    this command started has exited, or after _UP_WAIT seconds."""
    spec = cluster.spec
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _UP_WAIT
    async with _client(spec.client_peers, token) as client:
        while True:
            _raise_if_exited(cluster, running)
            statuses = await _statuses(client, spec.client_peers)
            if all(statuses) and any(s["role"] == "leader" for s in statuses if s):
                return statuses
            if loop.time() >= deadline:
                raise CommandError(_not_ready(spec, statuses), code=1)
            await asyncio.sleep(0.1)


def _raise_if_exited(cluster: LocalCluster, running: dict[int, int]) -> None:
    exited = cluster.exited()
    if not exited:
        return
    spec, first = cluster.spec, min(exited)
    others = sorted(exited)[1:]
    also = f" (nodes {_ids(others)} exited too)" if others else ""
    alive = sorted({*running, *cluster.procs} - exited.keys())
    for i in exited:
        spec.pid_path(i).unlink(missing_ok=True)
    rest = f"; nodes {_ids(alive)} run on: raftio cluster down --dir {spec.directory} stops them"
    raise CommandError(
        f"node {first} exited at start-up (exit code {exited[first]}): "
        f"{cluster.exit_cause(first)}{also}; log: {spec.log_path(first)}{rest if alive else ''}",
        code=1,
    )


def _not_ready(spec: ClusterSpec, statuses: list[dict[str, Any] | None]) -> str:
    silent = [i for i, s in enumerate(statuses) if s is None]
    leaders = [i for i, s in enumerate(statuses) if s is not None and s["role"] == "leader"]
    what = (
        f"node {leaders[0]} leads, but nodes {_ids(silent)} do not answer"
        if leaders
        else "no leader"
    )
    return (
        f"{what} within {_UP_WAIT:.0f} s; the nodes run on (logs: {spec.directory}/node-*.log; "
        f"raftio cluster down --dir {spec.directory} stops them)"
    )


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(map(str, ids))


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
        raise CommandError(f"{args.op} takes {'no' if args.op == 'get' else 'a'} VALUE")
    addresses, token = _target(args)
    try:
        value = _loop.run(_kv(addresses, token, args), _loop.default_loop())
    except KVUnavailableError as exc:
        raise CommandError(str(exc), code=1) from None
    except KVRequestError as exc:
        raise _refused(exc, token) from None
    if value is None:
        print("(nil)", file=sys.stderr)
        return 1
    print(value)
    return 0


async def _kv(addresses: list[str], token: bytes | None, args: argparse.Namespace) -> str | None:
    async with _client(addresses, token, deadline=args.timeout) as client:
        request = asyncio.ensure_future(_kv_request(client, args.op, args.key, args.value))
        done, _ = await asyncio.wait({request}, timeout=_KV_NOTE_AFTER)
        if not done:  # say why nothing happens yet (no node up, an election, ...)
            print(f"raftio kv: no node has answered yet; retrying for up to {args.timeout:g} s "
                  "(--timeout)", file=sys.stderr)  # fmt: skip
        return await request


async def _kv_request(client: KVClient, op: str, key: str, value: str | None) -> str | None:
    if op == "get":
        return await client.get(key)
    if value is None:
        raise ValueError(f"{op} needs a value")  # cmd_kv checked it already
    return await (client.put if op == "put" else client.append)(key, value)


def _refused(exc: KVRequestError, token: bytes | None) -> CommandError:
    """A node's refusal as one line; for `unauthorized`, what to do about it."""
    hint = ""
    if exc.error == UNAUTHORIZED:
        hint = ("; give the cluster's secret: --secret-file FILE, or --dir DIR" if token is None
                else "; is this the cluster's secret file?")  # fmt: skip
    return CommandError(f"{exc}{hint}", code=1)


def cmd_status(args: argparse.Namespace) -> int:
    addresses, token = _target(args)
    pids = running_detached(_load_spec(args.dir)) if args.dir else {}
    try:
        statuses = _loop.run(_status(addresses, token), _loop.default_loop())
    except KVRequestError as exc:
        raise _refused(exc, token) from None
    _print_table(statuses, pids)
    if args.metrics:
        print()
        for line in metrics_table(statuses):
            print(line)
    return 0 if any(statuses) else 1


async def _status(addresses: list[str], token: bytes | None) -> list[dict[str, Any] | None]:
    async with _client(addresses, token) as client:
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
