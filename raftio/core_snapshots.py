"""Snapshots: compaction and chunked InstallSnapshot (Raft §7, Figure 13).

A mixin of `RaftCore` (raftio/core.py), pure like it. The core never holds
a snapshot's bytes: it knows the current one by `SnapshotInfo` (index,
term, size, crc32), tells the shell which chunk to send (an
InstallSnapshotArgs whose `data` the shell fills from storage), and
answers a received chunk with `StoreChunk` (the shell writes it, then
calls back `chunk_stored`, or `install_staged` after the last one). The
protocol itself is described in raftio/snapshot_transfer.py.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from raftio.config import RaftConfig
from raftio.log import Log
from raftio.membership import ConfigHistory
from raftio.messages import (
    AppendEntriesArgs,
    AppendLog,
    ApplySnapshot,
    InstallSnapshotArgs,
    InstallSnapshotReply,
    SaveSnapshot,
    Send,
    SnapshotInfo,
    StagedSnapshot,
    StorageEffect,
)
from raftio.progress import Progress, Replication, Role
from raftio.snapshot_transfer import Incoming, Outgoing, StoreChunk, TransferKey
from raftio.validate import check_install_snapshot, check_reply_term


class Snapshots:
    """Compaction, and both ends of InstallSnapshot, as methods of `RaftCore`."""

    # The core's state these rules use (RaftCore.__init__ sets it).
    me: int
    config: RaftConfig
    role: Role
    current_term: int
    leader_id: int | None
    commit_index: int
    applied_index: int
    durable_index: int
    log: Log
    progress: dict[int, Progress]
    configs: ConfigHistory
    snapshot_info: SnapshotInfo
    refused: dict[str, int]
    _election_elapsed: int
    _leader_commit_heard: tuple[int, int]
    _transfer_serial: int
    _incoming: Incoming | None
    _installed: ApplySnapshot | None
    _storage_ops: list[StorageEffect]
    _outbox: list[Send]

    if TYPE_CHECKING:  # the core's own methods these rules call

        def _become_follower(self, term: int, leader_id: int | None) -> None: ...
        def _follow(self, term: int, leader_id: int) -> bool: ...
        def _refuse(self, reason: str | None) -> bool: ...
        def _config_changed(self) -> None: ...
        def _maybe_commit(self) -> None: ...
        def _send_append(self, peer: int) -> None: ...
        def _post_append(self, peer: int, pr: Progress, args: AppendEntriesArgs) -> None: ...
        def _debug(self, topic: str, text: str) -> None: ...

    # ------------------------------------------------------------------ compaction

    def compact(self, index: int, data: bytes | StagedSnapshot) -> bool:
        """The service snapshotted everything through `index`: discard that prefix.

        `data` is the snapshot's bytes, or a snapshot the shell staged in
        storage. Returns False (and does nothing) if `index` is at or below
        the current snapshot.
        """
        if index <= self.log.snapshot_index:
            return False
        if index > self.applied_index:
            raise ValueError(
                f"snapshot index {index} is past the last index handed to the "
                f"service ({self.applied_index})"
            )
        term = self.log.term_at(index)
        assert term is not None
        if isinstance(data, StagedSnapshot):
            if (data.index, data.term) != (index, term):
                raise ValueError(
                    f"a snapshot staged as {data.index}@T{data.term} saved as {index}@T{term}"
                )
            self.snapshot_info = data.info
        else:
            self.snapshot_info = SnapshotInfo(index, term, len(data), zlib.crc32(data))
        self.log.compact(index, term)
        config = self.configs.at(index)
        self.configs.compact(index)
        self._storage_ops.append(SaveSnapshot(index, term, data, config))
        self._debug("snap", f"compacted through {index}@T{term}")
        # A transfer that has delivered nothing yet switches to the newer snapshot.
        for peer, pr in self.progress.items():
            out = pr.outgoing
            if out is not None and out.acked == 0 and out.inflight == 0:
                self._send_snapshot(peer, pr)
        return True

    # ------------------------------------------------------------------ leader side

    def _send_snapshot(self, peer: int, pr: Progress) -> None:
        """Start a transfer of the current snapshot to `peer`."""
        pr.state = Replication.SNAPSHOT
        pr.paused = True
        pr.wait_ticks = 0
        # Our commit index first, every time (an earlier one may have been lost): a
        # follower refuses a snapshot past the highest commit index we told it.
        self._post_append(peer, pr, self._snapshot_heartbeat())
        info = self.snapshot_info
        self._transfer_serial += 1
        pr.outgoing = Outgoing(self._transfer_serial, info, self.configs.at(info.index))
        self._send_chunks(peer, pr.outgoing)

    def _send_chunks(self, peer: int, out: Outgoing) -> None:
        """Fill the window: the shell reads each chunk's data from storage."""
        size, chunk = out.info.size, self.config.snapshot_chunk_bytes
        while out.inflight < self.config.snapshot_chunks_inflight and (
            out.sent < size or (size == 0 and out.inflight == 0 and out.acked == 0)
        ):
            n = min(chunk, size - out.sent)
            args = InstallSnapshotArgs(
                self.current_term,
                self.me,
                out.info.index,
                out.info.term,
                b"",  # the shell reads `chunk_length(args)` bytes at `offset`
                out.config,
                out.sent,
                out.sent + n == size,
                out.transfer,
                size,
                out.info.checksum,
            )
            self._outbox.append(Send(peer, args))
            out.sent += n
            out.inflight += 1
            if size == 0:
                break

    def chunk_length(self, args: InstallSnapshotArgs) -> int:
        """How many bytes the shell puts in the chunk `_send_chunks` made."""
        return min(self.config.snapshot_chunk_bytes, args.total_size - args.offset)

    def _snapshot_heartbeat(self) -> AppendEntriesArgs:
        """An empty AppendEntries anchored at our snapshot, carrying our commit index."""
        log = self.log
        return AppendEntriesArgs(
            self.current_term, self.me, log.snapshot_index, log.snapshot_term, [], self.commit_index
        )

    def _resume_snapshot(self, peer: int, pr: Progress) -> None:
        """On a heartbeat: resend from the follower's offset if nothing is in flight.

        Chunks in flight are waited for, however long: every RPC ends, answered
        or failed (a transport times it out), and a second window sent while
        the first is still held by the transport would double the memory a
        transfer may take.
        """
        out = pr.outgoing
        if out is None or out.inflight:
            return
        if out.acked == 0 and out.info != self.snapshot_info:
            self._send_snapshot(peer, pr)  # nothing delivered: send the newer snapshot instead
            return
        out.sent = out.acked
        self._send_chunks(peer, out)

    def on_install_snapshot_reply(
        self, peer: int, args: InstallSnapshotArgs, reply: InstallSnapshotReply | None
    ) -> None:
        if reply is not None and self._refuse(check_reply_term(reply.term)):
            reply = None
        if reply is not None and reply.term > self.current_term:
            self._become_follower(reply.term, None)
            return
        if self.role is not Role.LEADER or args.term != self.current_term:
            return
        pr = self.progress.get(peer)
        out = pr.outgoing if pr is not None else None
        if pr is None or out is None or pr.state is not Replication.SNAPSHOT:
            return
        if args.transfer != out.transfer or args.last_included_index != out.info.index:
            return  # about a transfer we gave up
        out.inflight = max(0, out.inflight - 1)
        if reply is None:
            out.sent = min(out.sent, out.acked)  # lost, or the connection dropped: go back
            return  # the next heartbeat resends once nothing is in flight
        size = out.info.size
        if reply.next_offset < 0 or reply.next_offset > size:
            self._refuse("snapshot_offset")
            return
        reply_next = reply.next_offset
        pr.recent_active = True
        pr.wait_ticks = 0
        if reply_next == size:  # installed, or the follower had committed it already
            self._snapshot_delivered(peer, pr, out)
            return
        end = args.offset + self.chunk_length(args)
        if reply_next >= end:
            out.acked = max(out.acked, reply_next)  # this chunk (or a later one) arrived
        else:
            # The follower is elsewhere (a chunk before this one was lost or
            # reordered, or it restarted): continue from where it is.
            out.acked = reply_next
            out.sent = min(out.sent, reply_next)
        self._send_chunks(peer, out)

    def _snapshot_delivered(self, peer: int, pr: Progress, out: Outgoing) -> None:
        pr.match_index = max(pr.match_index, out.info.index)
        pr.become_probe()
        self._maybe_commit()
        if peer in self.progress:
            self._send_append(peer)

    # ------------------------------------------------------------------ follower side

    def handle_install_snapshot(
        self, args: InstallSnapshotArgs
    ) -> InstallSnapshotReply | StoreChunk | None:
        """§7 receiver rules, per chunk; None (no answer) for a request no honest leader sends.

        Returns a reply, or `StoreChunk` for a chunk the shell must write
        (then `chunk_stored`, or for the last one `install_staged`).
        """
        if args.term < self.current_term:
            stale = -1 if args.transfer == 0 else 0
            return InstallSnapshotReply(self.current_term, stale, args.transfer)
        heard_term, heard = self._leader_commit_heard
        known_commit = max(self.commit_index, heard if heard_term == args.term else 0)
        checked = check_install_snapshot(args, self.me, self.current_term, known_commit)
        if self._refuse(checked):
            return None
        if not self._follow(args.term, args.leader_id):  # chunks keep us from campaigning
            return None
        size = args.total_size
        if args.last_included_index <= self.commit_index:
            return self._chunk_reply(args, size)  # nothing new to us: the transfer is over
        key = TransferKey(
            args.term,
            args.leader_id,
            args.transfer,
            args.last_included_index,
            args.last_included_term,
            size,
            args.checksum,
        )
        inc = self._incoming
        if inc is None or inc.key != key:
            old = inc.key if inc is not None else None
            if (
                old is not None
                and (old.term, old.leader_id) == (key.term, key.leader_id)
                and key.transfer < old.transfer
            ):
                self._refuse("snapshot_superseded")  # a newer transfer is under way
                return None
            if args.offset != 0:
                return self._chunk_reply(args, 0)  # not a transfer we know: from the start
            inc = self._incoming = Incoming(key, args.config)
        if args.offset != inc.next_offset:
            if inc.next_offset == size:
                return None  # all accepted, being installed: that install answers
            return self._chunk_reply(args, inc.next_offset)  # a duplicate, or one went missing
        inc.next_offset += len(args.data)
        return StoreChunk(key, args.offset, args.data, args.done)

    def chunk_stored(self, key: TransferKey, end: int) -> InstallSnapshotReply | None:
        """The shell wrote a chunk of `key` up to `end`: tell the leader to go on."""
        inc = self._incoming
        if inc is None or inc.key != key or key.term != self.current_term:
            return None  # superseded while it was written
        return InstallSnapshotReply(self.current_term, max(end, 0), key.transfer)

    def drop_incoming(self, key: TransferKey, reason: str) -> None:
        """The received snapshot failed a check (size, checksum, the service's): forget it.

        No answer: the leader takes the last chunk as lost and starts again at
        heartbeat pace (the next chunk of this transfer is answered with 0), so
        a snapshot the service cannot restore costs a retry per heartbeat, not
        a busy loop.
        """
        inc = self._incoming
        if inc is not None and inc.key == key:
            self._incoming = None
            self._refuse(reason)

    def install_staged(
        self, key: TransferKey, staged: StagedSnapshot
    ) -> InstallSnapshotReply | None:
        """Every chunk of `key` is written and verified, as `staged`: install it (§7)."""
        inc = self._incoming
        if inc is None or inc.key != key or key.term != self.current_term:
            return None  # superseded while it was written; the shell discards it
        self._incoming = None
        index, term = key.index, key.snapshot_term
        done = InstallSnapshotReply(
            self.current_term, -1 if key.transfer == 0 else key.size, key.transfer
        )
        if index <= self.commit_index:
            return done
        # §7: keep the log after the snapshot if it agrees with it, else drop it all.
        keeps_suffix = self.log.term_at(index) == term
        self.log.compact(index, term)
        self.snapshot_info = staged.info
        config = inc.config or self.configs.at(index)
        if keeps_suffix:
            self.configs.compact(index)
        else:
            self.configs.reset(index, config)
        self._config_changed()
        self._storage_ops.append(SaveSnapshot(index, term, staged, config))
        if not keeps_suffix:
            self._storage_ops.append(AppendLog(index + 1, []))
            self.durable_index = min(self.durable_index, index)
        self.commit_index = index
        self.applied_index = index
        self._installed = ApplySnapshot(index, term)
        self._debug("snap", f"installed {index}@T{term} from S{key.leader_id}")
        return done

    def _chunk_reply(self, args: InstallSnapshotArgs, next_offset: int) -> InstallSnapshotReply:
        if args.transfer == 0 and next_offset == args.total_size:
            next_offset = -1  # the older form: an older leader understands only that
        return InstallSnapshotReply(self.current_term, next_offset, args.transfer)
