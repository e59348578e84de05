"""Test support shipped with raftio: event loops with a virtual clock, and `run()`.

The in-memory fault-injecting network lives in `raftio.transport.memory`.
"""

from raftio.testing.clock import LOOP_KINDS, LoopKind, VirtualClockEventLoop, new_event_loop, run

__all__ = ["LOOP_KINDS", "LoopKind", "VirtualClockEventLoop", "new_event_loop", "run"]
