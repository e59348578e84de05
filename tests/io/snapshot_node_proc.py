"""The child process of the snapshot kill -9 tests: one Node, a BulkState, FileStorage, TCP.

    python snapshot_node_proc.py ID ADDRESS,ADDRESS,... DIRECTORY SNAPSHOT_BYTES

Runs node ID of the cluster at the given addresses (127.0.0.1), its data in
DIRECTORY, snapshotting (streamed, in the background) once its log passes
SNAPSHOT_BYTES. It takes requests as JSON lines on stdin and answers each
with one JSON line on stdout, so the parent can drive it and SIGKILL it at
any moment:

    {"id": 1, "op": "status"}                       -> the node's and the state's status
    {"id": 2, "op": "propose", "command": [...], "timeout": 2.0}
    {"id": 3, "op": "read", "timeout": 2.0}         -> a linearizable read of the state

    {"id": 1, "ok": true, "value": ...}
    {"id": 2, "ok": false, "error": "NotLeaderError", "message": "..."}

and reports events, unasked:

    {"event": "restored", "state": {...}}   BulkState.restore_stream completed (at start, the
                                            stored snapshot; later, an installed one)
    {"event": "ready", "pid": ..., "status": {...}}  Node.start() returned
    {"event": "failed", "reason": "..."}    the node fail-stopped; the process exits 3

Node.start() raising (StorageCorruptError, a snapshot that does not
restore) exits 1 with the traceback on stderr. stderr carries raftio's log
at INFO (recovery names every temporary file it deletes). End of stdin
closes the node and exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from raftio.config import RaftConfig
from raftio.node import Node
from raftio.testing.bulk_state import BulkState

SECRET = b"snapshot-kill9-test"
SEED = 7  # every node's BulkState (a snapshot carries it anyway)

# Relaxed timing: three processes streaming tens of MiB on a loaded 2-core
# machine must not lose their leader to a late heartbeat.
CONFIG = RaftConfig(
    heartbeat_interval=0.1,
    election_timeout_min=0.8,
    election_timeout_max=1.6,
    storage_stall_timeout=4.0,
)


logger = logging.getLogger("snapshot_node_proc")


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Recorded(BulkState):
    """A BulkState that reports every completed restore, and logs where it snapshots."""

    node: Node | None = None  # set once the node exists, for the log lines

    async def restore_stream(self, chunks: AsyncIterator[bytes]) -> None:
        await super().restore_stream(chunks)
        logger.info("restored a snapshot: %d bytes, %d applied", self.size, self.applied)
        emit({"event": "restored", "state": self.summary()})

    def snapshot_stream(self) -> AsyncIterator[bytes]:
        where = ""
        if self.node is not None:
            st = self.node.status()
            where = (
                f" at index {st.applied_index} (snapshot {st.snapshot_index}, "
                f"last {st.last_index}, log {st.log_bytes} bytes)"
            )
        logger.info("taking a snapshot: %d bytes, %d applied%s", self.size, self.applied, where)
        return super().snapshot_stream()

    def summary(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "register": self.register,
            "sm_applied": self.applied,
            "restores": self.restores,
        }


def status(node: Node, machine: Recorded) -> dict[str, Any]:
    st = node.status()
    return {
        "role": str(st.role),
        "term": st.term,
        "leader": st.leader_id,
        "commit": st.commit_index,
        "applied_index": st.applied_index,
        "last_index": st.last_index,
        "snapshot_index": st.snapshot_index,
        "failure": st.failure,
        "match": {str(peer): index for peer, index in st.match_index.items()},
        "snapshots_taken": node.metrics()["raftio_node_snapshots_total"],
        **machine.summary(),
    }


async def handle(node: Node, machine: Recorded, request: dict[str, Any]) -> None:
    reply: dict[str, Any] = {"id": request["id"]}
    try:
        op = request["op"]
        if op == "status":
            value: Any = status(node, machine)
        elif op == "propose":
            value = await node.propose(tuple(request["command"]), timeout=request.get("timeout"))
        elif op == "read":
            register = await node.read(timeout=request.get("timeout"))
            # No await since the barrier passed: the state as of the read.
            value = {"register": register, **machine.summary()}
        else:
            raise ValueError(f"unknown op {op!r}")
    except Exception as exc:
        reply.update(ok=False, error=type(exc).__name__, message=str(exc)[:300])
    else:
        reply.update(ok=True, value=value)
    emit(reply)


async def serve_stdin(node: Node, machine: Recorded) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        task = asyncio.create_task(handle(node, machine, json.loads(line)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


async def main(node_id: int, addresses: list[str], directory: str, snapshot_bytes: int) -> int:
    machine = Recorded(seed=SEED)
    node = Node(
        node_id,
        addresses,
        directory,
        machine,
        secret=SECRET,
        snapshot_bytes=snapshot_bytes,
        config=CONFIG,
    )
    machine.node = node
    await node.start()  # raises on a directory that does not open or restore
    ready = status(node, machine)
    logger.info("ready: %s", {k: v for k, v in ready.items() if k != "register"})
    emit({"event": "ready", "pid": os.getpid(), "status": ready})
    failed = asyncio.create_task(node.wait_failed())
    commands = asyncio.create_task(serve_stdin(node, machine))
    done, _ = await asyncio.wait({failed, commands}, return_when=asyncio.FIRST_COMPLETED)
    if failed in done:
        emit({"event": "failed", "reason": failed.result()})
        logger.error("fail-stopped: %s", failed.result())
        return 3
    failed.cancel()
    await node.close(transfer=False)
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s pid {os.getpid()} %(levelname)s %(name)s: %(message)s",
    )
    node_id, addresses, directory, snapshot_bytes = sys.argv[1:5]
    code = asyncio.run(main(int(node_id), addresses.split(","), directory, int(snapshot_bytes)))
    sys.stdout.flush()
    os._exit(code)  # no slow interpreter teardown; the node is closed or has fail-stopped
