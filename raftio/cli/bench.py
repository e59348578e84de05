"""`raftio bench OPTIONS`: a thin alias of `python -m benchmarks OPTIONS`.

The harness lives in benchmarks/ of a source checkout, not in the wheel,
and owns its command line. This alias runs it in a child process from the
checkout raftio was installed from (`pip install -e`), passing every
option, SIGTERM and the exit code through. Never imports `benchmarks` and
never edits sys.path: only the child's PYTHONPATH names the checkout.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import raftio
from raftio.cli.common import CommandError


def add_parser(commands: Any) -> None:
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
