"""`raftio demo`: a KV cluster of processes survives a SIGKILLed leader,
checked end to end (the work is raftio.kv.demo; this is its console)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from raftio import _loop
from raftio.cli.common import LOG_FORMAT, CommandError, add_loop, loop_choice, os_reason, prepare
from raftio.kv.demo import Demo, DemoResult
from raftio.kv.display import LiveView
from raftio.kv.local import ClusterSpec, LocalCluster


def add_parser(commands: Any) -> None:
    p = commands.add_parser("demo", help="a KV cluster of processes survives a SIGKILLed leader")
    p.add_argument("-n", type=int, default=3, help="nodes (default 3)")
    p.add_argument("--dir", help="keep the cluster's files here (default: a temporary directory)")
    p.add_argument("--writes", type=int, default=100, help="writes before the kill (default 100)")
    p.add_argument("--timeout", type=float, default=50.0, help="give up after this many seconds")
    add_loop(p, "the demo and its nodes")
    p.set_defaults(run=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    if args.n < 3:
        raise CommandError("-n must be at least 3 (a majority must survive the kill)")
    loop = loop_choice(args.loop)
    with tempfile.TemporaryDirectory(prefix="raftio-demo-") as tmp:
        directory = Path(args.dir) if args.dir else Path(tmp)
        _check_empty(directory)
        spec = ClusterSpec.create(directory, args.n)
        prepare(spec)
        print(f"raftio demo: {args.n} node processes on 127.0.0.1 ({loop}), files in {directory}")
        result = _loop.run(_demo(spec, args.writes, args.timeout, loop), loop)
        _print_demo_result(spec, result)
    return 0 if result.passed else 1


def _check_empty(directory: Path) -> None:
    try:
        if directory.exists() and any(directory.iterdir()):
            raise CommandError(f"{directory} is not empty")
    except OSError as exc:
        raise CommandError(f"cannot use {directory}: {os_reason(exc)}") from None


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
