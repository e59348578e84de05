"""RaftConfig: validation and the tick counts the core runs on (§5.2 timing, §9.3).

The core never reads a clock: the shell ticks it every `tick_interval`
seconds, and the heartbeat and election timeouts are whole numbers of ticks
derived here. §5.2/§9.3: broadcastTime << electionTimeout, with timeouts
randomized over a range.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from raftio.config import RaftConfig

from .helpers import PROPERTY

NAN = float("nan")


def test_defaults_are_valid() -> None:
    """§9.3: the defaults heartbeat 10x per second and time out in 0.3-0.6 s."""
    config = RaftConfig()

    config.validate()

    assert (config.heartbeat_ticks, config.election_ticks) == (10, (30, 60))
    assert (config.max_inflight, config.pre_vote, config.check_quorum) == (4, True, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # the clock must move forward
        ({"tick_interval": 0}, "tick_interval must be positive"),
        ({"tick_interval": -0.01}, "tick_interval must be positive"),
        ({"tick_interval": NAN}, "tick_interval must be positive"),
        # a heartbeat is at least one tick
        ({"heartbeat_interval": 0.005}, "heartbeat_interval must be at least one tick"),
        ({"heartbeat_interval": 0}, "heartbeat_interval must be at least one tick"),
        # §5.2: followers must hear heartbeats well before they time out
        ({"heartbeat_interval": 0.3}, "election_timeout_min must exceed heartbeat_interval"),
        ({"heartbeat_interval": 0.5}, "election_timeout_min must exceed heartbeat_interval"),
        ({"heartbeat_interval": NAN}, "election_timeout_min must exceed heartbeat_interval"),
        # §5.2: timeouts are randomized over a non-empty range
        ({"election_timeout_max": 0.3}, "election_timeout_max must exceed election_timeout_min"),
        ({"election_timeout_max": 0.2}, "election_timeout_max must exceed election_timeout_min"),
        ({"election_timeout_max": NAN}, "election_timeout_max must exceed election_timeout_min"),
        # sizes
        ({"max_inflight": 0}, "max_inflight must be at least 1"),
        ({"max_batch_bytes": 0}, "max_batch_bytes must be positive"),
        ({"max_apply_batch": 0}, "max_apply_batch must be at least 1"),
        ({"storage_stall_timeout": 0}, "storage_stall_timeout must be positive"),
        ({"storage_stall_timeout": NAN}, "storage_stall_timeout must be positive"),
    ],
)
def test_validate_rejects(changes: dict[str, Any], message: str) -> None:
    """§5.2: settings that cannot work together are refused at construction."""
    with pytest.raises(ValueError, match=message):
        RaftConfig(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        # boundaries that are allowed
        {"heartbeat_interval": 0.01},
        {"election_timeout_min": 0.11, "election_timeout_max": 0.12},
        {"max_inflight": 1, "max_batch_bytes": 1, "max_apply_batch": 1},
    ],
)
def test_validate_accepts(changes: dict[str, Any]) -> None:
    """§5.2: the tightest settings that still satisfy the timing requirement are fine."""
    RaftConfig(**changes).validate()


@pytest.mark.parametrize(
    ("changes", "heartbeat", "election"),
    [
        # exact multiples of the tick
        ({}, 10, (30, 60)),
        ({"election_timeout_min": 0.2, "election_timeout_max": 0.3}, 10, (20, 30)),
        ({"election_timeout_max": 0.7}, 10, (30, 70)),
        (
            {"tick_interval": 0.1, "heartbeat_interval": 0.1, "election_timeout_max": 0.6},
            1,
            (3, 6),
        ),
        ({"tick_interval": 0.05, "election_timeout_max": 1.2}, 2, (6, 24)),
        # the heartbeat rounds to the nearest tick
        ({"tick_interval": 0.03}, 3, (10, 20)),
        # the election range is clamped: above one heartbeat, at least two values
        (
            {
                "tick_interval": 0.1,
                "heartbeat_interval": 0.1,
                "election_timeout_min": 0.14,
                "election_timeout_max": 0.15,
            },
            1,
            (2, 3),
        ),
    ],
)
def test_tick_counts(changes: dict[str, Any], heartbeat: int, election: tuple[int, int]) -> None:
    """§5.2: seconds become whole ticks; a whole number of ticks in seconds stays exact."""
    config = RaftConfig(**changes)

    assert (config.heartbeat_ticks, config.election_ticks) == (heartbeat, election)


@PROPERTY
@example(tick=0.01, heartbeat=1, low=27, spread=1)  # 0.29 / 0.01 == 28.999999999999996
@example(tick=0.1, heartbeat=1, low=2, spread=40)  # 4.3 / 0.1 == 42.99999999999999
@given(
    st.sampled_from([0.001, 0.005, 0.01, 0.02, 0.05, 0.1]),
    st.integers(1, 20),
    st.integers(1, 50),
    st.integers(1, 50),
)
def test_tick_counts_property(tick: float, heartbeat: int, low: int, spread: int) -> None:
    """§5.2: heartbeat < min timeout < max timeout in ticks, each as configured in seconds."""
    config = RaftConfig(
        tick_interval=tick,
        heartbeat_interval=heartbeat * tick,
        election_timeout_min=(heartbeat + low) * tick,
        election_timeout_max=(heartbeat + low + spread) * tick,
    )

    assert config.heartbeat_ticks == heartbeat
    assert config.election_ticks == (heartbeat + low, heartbeat + low + spread)
