"""`raftio` and `python -m raftio`: the command line. See docs/cli.md.

Owns argument parsing and each command's console output and exit code;
the work itself lives in raftio.kv (the service, the client, local process
clusters and the demo). One module a command:

    raftio node --id I --peers ... --client-peers ... --data DIR (--secret-file F | --insecure)
                [--bootstrap | --join]
    raftio demo [-n 3] [--dir D] [--writes N]       a cluster survives a SIGKILLed leader
    raftio cluster up -n N --dir D [--base-port P]  N detached nodes; `cluster down --dir D`
    raftio cluster add --dir D | remove --dir D ID  grow or shrink it by one node
    raftio kv (--dir D | --peers ...) get|put|append KEY [VALUE]
    raftio status (--dir D | --peers ...)
    raftio member list | add ID RAFT CLIENT [--learner] | remove ID   (--dir D | --peers ...)
    raftio transfer [--to ID] (--dir D | --peers ...)
    raftio bench [OPTIONS]      runs `python -m benchmarks OPTIONS` (a checkout only)
    raftio logview [FILE|-] [--peers 0,2] [--topics role,vote] [--from T] [--to T]

    common.py   the one-line error, the parser, shared arguments, secrets, directories
    client.py   asking running nodes (cluster, kv, status, member, transfer)

An ordinary mistake (a malformed address, an unusable directory or secret
file, a node that dies at start-up) is one line on stderr and a non-zero
exit code, never a traceback: usage errors exit 2, failures 1, a closed
stdout (`| head`) 141 without a word. `node`, `demo` and `cluster up` run
on uvloop where it is installed (`--loop asyncio` opts out).
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence

import raftio
from raftio import logview
from raftio.cli import bench, cluster, demo, kv, member, node, status, transfer
from raftio.cli.common import CommandError, Parser

__all__ = ["build_parser", "main"]

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


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="raftio", description="Raft for Python asyncio: a replicated key/value service."
    )
    parser.add_argument("--version", action="version", version=f"raftio {raftio.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    node.add_parser(commands)
    demo.add_parser(commands)
    cluster.add_parser(commands)
    kv.add_parser(commands)
    status.add_parser(commands)
    member.add_parser(commands)
    transfer.add_parser(commands)
    logview.add_parser(commands)
    bench.add_parser(commands)
    return parser


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
