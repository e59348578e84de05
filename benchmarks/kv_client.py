"""End-to-end load: `python -m benchmarks.kv_client --protocol raftio|etcd --target H:P ...`.

One process holds `--connections` connections to one server and keeps one
put outstanding on each (closed loop). Two protocols:

* `raftio`: the KV client protocol (`raftio.kv.protocol`): a length-prefixed
  msgpack put with its own session (registered at connect time) and seq per
  connection, as `KVClient` sends it. `KVClient` itself serializes its callers behind one lock and
  retries on its own; thousands of them cost the load generator more CPU
  than the server it measures, so this is a lean client of the same frames.
* `etcd`: etcd's HTTP/JSON gateway, `POST /v3/kv/put` with base64 key and
  value, HTTP/1.1 keep-alive.

With `--op get` (the read series) it first puts one key, `<name>-read`, then
keeps one linearizable get of it outstanding per connection: a KV `get`
(served through `Node.read`), or `POST /v3/kv/range` (etcd's default,
`serializable: false`); a reply without the value put is an error.

Control lines (stdin/stdout, `benchmarks.control`): after connecting it
writes `{"ok": true, "ready": true}`; then `{"cmd": "run", "start": T0,
"end": T1}` (perf_counter seconds) runs the load and answers with the
samples completed inside the window; `{"cmd": "quit"}` ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import secrets
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.control import die_with_parent, reply_line, run_loop, serve_stdin
from benchmarks.counters import raise_fd_limit
from benchmarks.loadgen import Window, closed_loop, random_values
from raftio.codec import unpack
from raftio.kv.protocol import encode_frame
from raftio.node import parse_address

__all__ = [
    "Connection",
    "OpError",
    "etcd_put_request",
    "etcd_range_request",
    "main",
    "parse_etcd",
    "parse_etcd_body",
    "parse_raftio",
]

_HEADER = struct.Struct(">I")
_CONNECT_BATCH = 64  # connects in flight at once: a listen backlog is ~100
Parser = Callable[[bytearray], tuple[Any, int] | None]


class OpError(Exception):
    """The server answered with an error (its code is the message)."""


def parse_raftio(buf: bytearray) -> tuple[Any, int] | None:
    """(reply, bytes used) for the first whole KV frame in buf, or None."""
    if len(buf) < 4:
        return None
    (size,) = _HEADER.unpack_from(buf)
    if len(buf) < 4 + size:
        return None
    return unpack(bytes(buf[4 : 4 + size])), 4 + size


def parse_etcd(buf: bytearray) -> tuple[Any, int] | None:
    """(status code, bytes used) for the first whole HTTP/1.1 response in buf, or None."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buf[:head_end]).decode("latin-1").split("\r\n")
    length = None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise OpError("response without Content-Length")
    total = head_end + 4 + length
    if len(buf) < total:
        return None
    return int(head[0].split()[1]), total


def parse_etcd_body(buf: bytearray) -> tuple[Any, int] | None:
    """((status code, body), bytes used) for the first whole HTTP/1.1 response, or None."""
    got = parse_etcd(buf)
    if got is None:
        return None
    status, used = got
    return (status, bytes(buf[buf.find(b"\r\n\r\n") + 4 : used])), used


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _etcd_post(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def etcd_put_request(host: str, port: int, key: str, value: str) -> bytes:
    body = json.dumps({"key": _b64(key), "value": _b64(value)}).encode()
    return _etcd_post(host, port, "/v3/kv/put", body)


def etcd_range_request(host: str, port: int, key: str) -> bytes:
    """A get of one key; no `serializable`: etcd's default, a linearizable read."""
    return _etcd_post(host, port, "/v3/kv/range", json.dumps({"key": _b64(key)}).encode())


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, parse: Parser) -> None:
        self._parse = parse
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buf += data
        got = self._parse(self._buf)
        if got is None:
            return
        reply, used = got
        del self._buf[:used]
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("closed by the server")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(self._lost)

    def request(self, data: bytes) -> asyncio.Future[Any]:
        if self._lost is not None or self._transport is None:
            raise ConnectionError(f"connection lost: {self._lost!r}")
        waiter = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        self._transport.write(data)
        return waiter

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class LoadClient:
    def __init__(self, options: argparse.Namespace) -> None:
        self.protocol: str = options.protocol
        self.op: str = options.op
        self.host, self.port = parse_address(options.target)
        self.connections: int = options.connections
        self.values = random_values(options.payload)
        self.name: str = options.name
        self.conns: list[Connection] = []
        self.sessions: list[str] = []  # per connection, registered before the run
        self.token = secrets.token_hex(4)
        self.read_key = f"{self.name}-read"  # --op get: put once, then read
        self.read_value = ""

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        parse = parse_raftio if self.protocol == "raftio" else parse_etcd
        if self.protocol == "etcd" and self.op == "get":
            parse = parse_etcd_body  # a get's value is in the body
        for first in range(0, self.connections, _CONNECT_BATCH):
            count = min(_CONNECT_BATCH, self.connections - first)
            made = await asyncio.gather(
                *(
                    loop.create_connection(lambda: Connection(parse), self.host, self.port)
                    for _ in range(count)
                )
            )
            self.conns.extend(conn for _, conn in made)
        if self.op == "get":
            await self._preload()
        elif self.protocol == "raftio":
            register = encode_frame({"op": "register"})
            for first in range(0, self.connections, _CONNECT_BATCH):
                batch = self.conns[first : first + _CONNECT_BATCH]
                replies = await asyncio.gather(*(conn.request(register) for conn in batch))
                for reply in replies:
                    if not reply["ok"]:
                        raise OpError(f"register: {reply['error']}")
                    self.sessions.append(reply["value"])

    async def _preload(self) -> None:
        """Put the key the gets read (one session, one put, on the first connection)."""
        conn, self.read_value = self.conns[0], next(self.values)
        if self.protocol == "etcd":
            request = etcd_put_request(self.host, self.port, self.read_key, self.read_value)
            status, _ = await conn.request(request)
            if status != 200:
                raise OpError(f"put: HTTP {status}")
            return
        reply = await conn.request(encode_frame({"op": "register"}))
        if not reply["ok"]:
            raise OpError(f"register: {reply['error']}")
        put = {"op": "put", "key": self.read_key, "value": self.read_value,
               "session": reply["value"], "seq": 1}  # fmt: skip
        reply = await conn.request(encode_frame(put))
        if not reply["ok"]:
            raise OpError(f"put: {reply['error']}")

    def make_get(self, i: int) -> Callable[[], Awaitable[Any]]:
        """Worker i's get of the preloaded key; its request bytes never change."""
        conn, value = self.conns[i], self.read_value
        if self.protocol == "etcd":
            request = etcd_range_request(self.host, self.port, self.read_key)
            expected = f'"value":"{_b64(value)}"'.encode()

            async def etcd_get() -> None:
                status, body = await conn.request(request)
                if status != 200 or expected not in body:
                    raise OpError(f"HTTP {status}: {body[:60]!r}")

            return etcd_get
        frame = encode_frame({"op": "get", "key": self.read_key})

        async def raftio_get() -> None:
            reply = await conn.request(frame)
            if not reply["ok"]:
                raise OpError(str(reply["error"]))
            if reply["value"] != value:
                raise OpError(f"read {reply['value']!r:.40}, not the value put")

        return raftio_get

    def make_op(self, i: int) -> Callable[[], Awaitable[Any]]:
        if self.op == "get":
            return self.make_get(i)
        conn = self.conns[i]
        key = f"{self.name}-{i}"
        if self.protocol == "etcd":
            host, port, values = self.host, self.port, self.values

            async def etcd_put() -> None:
                status = await conn.request(etcd_put_request(host, port, key, next(values)))
                if status != 200:
                    raise OpError(f"HTTP {status}")

            return etcd_put
        seq = 0
        values = self.values
        session = self.sessions[i]

        async def raftio_put() -> None:
            nonlocal seq
            seq += 1
            frame = encode_frame(
                {"op": "put", "key": key, "value": next(values), "session": session, "seq": seq}
            )
            reply = await conn.request(frame)
            if not reply["ok"]:
                raise OpError(str(reply["error"]))

        return raftio_put

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        if request["cmd"] == "run":
            window = Window(float(request["start"]), float(request["end"]))
            result = await closed_loop(self.make_op, self.connections, window)
            return {"ok": True, **result.to_json(window)}
        if request["cmd"] == "quit":
            return {"ok": True}
        raise ValueError(f"unknown command {request['cmd']!r}")

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


async def amain(options: argparse.Namespace) -> None:
    client = LoadClient(options)
    try:
        await client.connect()
        reply_line({"ok": True, "ready": True, "pid": os.getpid()})
        await serve_stdin(client.handle)
    finally:
        client.close()
        await asyncio.sleep(0)  # let the transports close


def main() -> None:
    parser = argparse.ArgumentParser(description="closed-loop put or get load for `raftio bench`")
    parser.add_argument("--protocol", choices=["raftio", "etcd"], required=True)
    parser.add_argument("--target", required=True, help="the server's client host:port")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--payload", type=int, required=True, help="value bytes")
    parser.add_argument("--name", default="c0", help="prefix of keys and client ids")
    parser.add_argument("--op", choices=["put", "get"], default="put",
                        help="get: linearizable reads of one key put first")  # fmt: skip
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--parent-pid", type=int)
    options = parser.parse_args()
    die_with_parent(options.parent_pid)
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    run_loop(amain(options), options.loop)


if __name__ == "__main__":
    main()
