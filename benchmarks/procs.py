"""The harness side of child processes: start, talk to (control lines), stop, always.

`ProcessGroup` owns every process a run starts. Leaving it (normally, on an
exception, on Ctrl-C or SIGTERM, which the runner turns into cancellation)
ends them all: stdin closed, SIGTERM, then SIGKILL after a grace period.
`kill_now()` is the synchronous last resort for `atexit`. The children
themselves die with the harness (PR_SET_PDEATHSIG), even under `kill -9`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Child", "ChildError", "ProcessGroup", "child_env"]

_GRACE = 5.0  # seconds a child gets to exit after stdin closes / SIGTERM
_REPLY_LIMIT = 64 << 20  # longest control reply line (latency samples travel in them)


class ChildError(RuntimeError):
    """A child exited, failed a command, or did not answer in time."""


def _pdeathsig() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


def child_env(package_root: Path) -> dict[str, str]:
    """This environment, with the checkout holding `benchmarks/` first on PYTHONPATH."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(package_root), path) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class Child:
    """One process; with `control=True` it speaks JSON lines on stdin/stdout."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        control: bool = True,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.control = control
        self.proc: asyncio.subprocess.Process | None = None
        self._log: TextIO | None = None
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        self._log = self.log_path.open("a")  # closed by stop() / kill_now()
        pipe = subprocess.PIPE if self.control else subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=pipe,
            stdout=pipe if self.control else self._log,
            stderr=self._log,
            env=self.env,
            limit=_REPLY_LIMIT,
            preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
        )

    async def read_reply(self, timeout: float = 60.0) -> dict[str, Any]:
        """The next control line the child writes unasked (e.g. its "ready" line)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            raise ChildError(f"{self.name} has no control channel")
        try:
            async with asyncio.timeout(timeout):
                line = await proc.stdout.readline()
        except TimeoutError:
            raise ChildError(
                f"{self.name} said nothing for {timeout:.0f} s{self._tail()}"
            ) from None
        if not line:
            raise ChildError(f"{self.name} exited{self._tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok", False):
            raise ChildError(f"{self.name}: {reply.get('error')}{self._tail()}")
        return reply

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def request(self, command: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        """Send one control command; its reply (raises ChildError if it failed)."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise ChildError(f"{self.name} has no control channel")
        async with self._lock:
            try:
                proc.stdin.write(json.dumps(command).encode() + b"\n")
                await proc.stdin.drain()
                async with asyncio.timeout(timeout):
                    line = await proc.stdout.readline()
            except (ConnectionError, TimeoutError) as exc:
                what = f"{self.name}: {command['cmd']} failed: {exc!r}{self._tail()}"
                raise ChildError(what) from exc
            if not line:
                raise ChildError(f"{self.name} exited during {command['cmd']}{self._tail()}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok", False):
            trace = reply.get("trace", "")
            raise ChildError(f"{self.name}: {command['cmd']}: {reply.get('error')}\n{trace}")
        return reply

    def _tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n--- " + self.name + " log ---\n" + "\n".join(text)

    async def stop(self) -> None:
        """End the process: close stdin (children exit at EOF), SIGTERM, then SIGKILL."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(Exception):
                    proc.stdin.close()
            if not self.control:
                proc.terminate()
            if not await self._wait(_GRACE):
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                if not await self._wait(_GRACE):
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
        await self._drain_pipes()
        self._close_log()

    async def _wait(self, timeout: float) -> bool:
        assert self.proc is not None
        try:
            async with asyncio.timeout(timeout):
                await self.proc.wait()
        except TimeoutError:
            return False
        return True

    async def _drain_pipes(self) -> None:
        # Let the transports see EOF, so no pipe is left open (ResourceWarning).
        proc = self.proc
        if proc is not None and proc.stdout is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.stdout.read(), 1.0)

    def kill_now(self) -> None:
        """SIGKILL without waiting on the event loop (atexit)."""
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ProcessGroup:
    """Every child of a run; `async with` stops them all on the way out."""

    def __init__(self) -> None:
        self.children: list[Child] = []

    async def start(self, child: Child) -> Child:
        self.children.append(child)
        await child.start()
        return child

    async def stop(self, children: Sequence[Child]) -> None:
        await asyncio.gather(*(child.stop() for child in children))
        for child in children:
            if child in self.children:
                self.children.remove(child)

    async def close(self) -> None:
        try:
            await self.stop(list(self.children))
        finally:
            self.kill_now()  # also when cancelled while waiting

    def kill_now(self) -> None:
        for child in self.children:
            child.kill_now()
        self.children.clear()

    async def __aenter__(self) -> ProcessGroup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
