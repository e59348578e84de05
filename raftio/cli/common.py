"""What the commands share: their one-line error, the parser, address and
target arguments, secrets, the cluster directory and the event loop choice.

Never imports a command module (raftio.cli.node, .demo, ...): they import this.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from raftio import _loop
from raftio.kv.local import ClusterSpec, SecretFileError, read_secret, settle
from raftio.kv.protocol import ProtocolError, check_address
from raftio.membership import MAX_NODE_ID
from raftio.node import parse_address

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CommandError(Exception):
    """A command cannot run as asked; main() prints it as one line and exits `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, not usage plus message."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


# --------------------------------------------------------------------------- arguments


def address(text: str) -> str:
    """An argument type: host:port, checked."""
    host_port = text.strip()
    _, sep, port = host_port.rpartition(":")
    if sep and port.isdigit() and not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{host_port!r}: port {port} is out of range (1-65535)")
    try:
        parse_address(host_port)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{host_port!r} is not host:port (e.g. 127.0.0.1:7100)"
        ) from None
    return host_port


def addresses(text: str) -> list[str]:
    """An argument type: host:port[,host:port...]."""
    found = [address(a) for a in text.split(",") if a.strip()]
    if not found:
        raise argparse.ArgumentTypeError("expected host:port[,host:port...]")
    return found


def node_id(text: str) -> int:
    """An argument type: a node id, a non-negative integer."""
    value = text.strip()
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_NODE_ID:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a node id (an integer in 0..{MAX_NODE_ID})"
        )
    return int(value)


def peer_map(text: str) -> dict[int, str]:
    """An argument type: host:port,... (node ids 0, 1, ...) or ID=host:port,... (any ids)."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected host:port[,...] or ID=host:port[,...]")
    named = ["=" in item for item in items]
    if not any(named):
        return dict(enumerate(address(item) for item in items))
    if not all(named):
        raise argparse.ArgumentTypeError(
            f"{text!r}: name every node (ID=host:port,...) or none (host:port,...)"
        )
    found: dict[int, str] = {}
    for item in items:
        key, _, where = item.partition("=")
        i = node_id(key)
        if i in found:
            raise argparse.ArgumentTypeError(f"{text!r} names node {i} twice")
        found[i] = address(where)
    return found


def seconds(text: str) -> float:
    """An argument type: a positive, finite number of seconds."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def member_address(text: str) -> str:
    """An argument type: the host:port of a new member, checked as the cluster checks it."""
    try:
        return check_address(text.strip())
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("address ")) from None


def add_loop(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--loop", choices=_loop.LOOPS,
                   help=f"event loop of {what} (default: uvloop where installed)")  # fmt: skip


def add_target(p: argparse.ArgumentParser) -> None:
    """--dir or --peers, and --secret-file: which running cluster `kv` / `status` ask."""
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--dir", help="cluster directory made by `raftio cluster up`")
    target.add_argument("--peers", type=addresses, help="the nodes' client host:port list")
    p.add_argument("--secret-file",
                   help="the cluster's shared secret (default with --dir: DIR/secret)")  # fmt: skip


def target(args: argparse.Namespace) -> tuple[list[str], bytes | None]:
    """The client addresses (of the members) and the secret (token) of `kv` / `status` / ..."""
    if args.peers:
        token = secret(args.secret_file) if args.secret_file else None
        return list(args.peers), token
    spec = load_spec(args.dir)
    return spec.member_client_peers, spec_secret(spec, args.secret_file)


def spec_secret(spec: ClusterSpec, secret_file: str | None = None) -> bytes | None:
    """The secret of the cluster in a directory (or `secret_file`'s), else a one-line error."""
    if secret_file:
        return secret(secret_file)
    try:
        return spec.secret()
    except SecretFileError as exc:
        raise CommandError(str(exc)) from None


# --------------------------------------------------------------------------- files, loop


def os_reason(exc: OSError) -> str:
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def secret(path: str) -> bytes:
    try:
        return read_secret(path)
    except SecretFileError as exc:
        raise CommandError(str(exc)) from None


def load_spec(directory: str | Path) -> ClusterSpec:
    try:
        return ClusterSpec.load(directory)
    except FileNotFoundError:
        raise CommandError(f"no cluster in {directory} (no cluster.json)") from None
    except NotADirectoryError:
        raise CommandError(f"cannot use {directory}: not a directory (a file in its way)") from None
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot read {directory}/cluster.json: {exc}") from None


def settled(spec: ClusterSpec) -> ClusterSpec:
    """`settle(spec)` (cluster.json's bootstrap list made current), or a one-line error."""
    try:
        return settle(spec)
    except OSError as exc:
        where = spec.directory / "cluster.json"
        raise CommandError(f"cannot update {where}: {os_reason(exc)}") from None
    except (ValueError, TypeError) as exc:
        raise CommandError(f"cannot read {spec.directory}/cluster.json: {exc}") from None


def prepare(spec: ClusterSpec) -> None:
    """Write cluster.json and the secret, or fail in one line."""
    try:
        spec.save()
        spec.ensure_secret()
    except OSError as exc:
        raise CommandError(
            f"cannot write the cluster directory {spec.directory}: {os_reason(exc)}"
        ) from None


def loop_choice(choice: str | None) -> str:
    """The event loop to run on: --loop if given, else uvloop where installed."""
    if choice is None:
        return _loop.default_loop()
    if choice == "uvloop" and _loop.default_loop() != "uvloop":
        raise CommandError("--loop uvloop: uvloop is not installed (pip install uvloop)")
    return choice
