"""Costs read from the kernel: process CPU time and bytes on a process's TCP sockets.

Nothing here touches raftio: CPU comes from `time.process_time()` (all threads
of this process) or /proc/PID/stat (another process), bytes from each
socket's TCP_INFO (`tcpi_bytes_acked` sent, `tcpi_bytes_received` received:
payload bytes, without TCP/IP headers), so counting costs the measured code
nothing between two readings. Linux only.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["WireBytes", "cpu_seconds_of", "open_fds", "raise_fd_limit", "wire_bytes"]

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked and tcpi_bytes_received are
# the two u64 at offsets 120 and 128 (since Linux 4.1/4.2).
_BYTES_ACKED = struct.Struct("=QQ")
_BYTES_OFFSET = 120
_TCP_INFO_LEN = 256
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True, slots=True)
class WireBytes:
    sent: int = 0
    received: int = 0
    sockets: int = 0


def _tcp_bytes(sock: socket.socket) -> tuple[int, int] | None:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    if len(info) < _BYTES_OFFSET + _BYTES_ACKED.size:
        return None
    acked, received = _BYTES_ACKED.unpack_from(info, _BYTES_OFFSET)
    return acked, received


def open_fds() -> list[int]:
    """This process's open file descriptors."""
    fds = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(ValueError):
            fds.append(int(name))
    return fds


def _socket_bytes(
    fd: int, local_ports: Collection[int], remote_ports: Collection[int]
) -> tuple[int, int] | None:
    """(sent, received) of fd if it is a TCP socket on one of the ports, else None."""
    try:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
            return None
        dup = os.dup(fd)
    except OSError:
        return None  # closed meanwhile
    try:
        sock = socket.socket(fileno=dup)  # owns dup from here on
    except OSError:
        os.close(dup)
        return None
    with sock:
        if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        try:
            local, remote = sock.getsockname()[1], sock.getpeername()[1]
            if local not in local_ports and remote not in remote_ports:
                return None
            return _tcp_bytes(sock)
        except OSError:
            return None  # a listening socket has no peer; a socket may close meanwhile


def wire_bytes(local_ports: Collection[int], remote_ports: Collection[int]) -> WireBytes:
    """Bytes sent and received on this process's TCP sockets that either listen-side
    serve one of `local_ports` or are connected to one of `remote_ports`."""
    sent = received = count = 0
    for fd in open_fds():
        got = _socket_bytes(fd, local_ports, remote_ports)
        if got is not None:
            sent, received, count = sent + got[0], received + got[1], count + 1
    return WireBytes(sent, received, count)


def cpu_seconds_of(pid: int) -> float:
    """User plus system CPU seconds of process `pid`, all threads (clock-tick resolution)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    # After the command: state is field 3; utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (thousands of client
    connections need it); returns the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
    return soft
