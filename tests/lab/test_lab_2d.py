"""Lab 2D: log compaction (test_test.go TestSnapshotBasic2D ... TestSnapshotInit2D)."""

from __future__ import annotations

from .harness import MAX_LOG_SIZE, SNAPSHOT_INTERVAL, Lab


async def snapcommon(lab: Lab, name: str, disconnect: bool, reliable: bool, crash: bool) -> None:
    iters = 30
    servers = 3
    cfg = lab.make_config(servers, unreliable=not reliable, snapshot=True)

    cfg.begin(name)

    await cfg.one(cfg.rand_int(), servers, retry=True)
    leader1 = await cfg.check_one_leader()

    for i in range(iters):
        victim = (leader1 + 1) % servers
        sender = leader1
        if i % 3 == 1:
            sender = (leader1 + 1) % servers
            victim = leader1

        if disconnect:
            cfg.disconnect(victim)
            await cfg.one(cfg.rand_int(), servers - 1, retry=True)
        if crash:
            cfg.crash1(victim)
            await cfg.one(cfg.rand_int(), servers - 1, retry=True)

        # perhaps send enough to get a snapshot
        nn = (SNAPSHOT_INTERVAL // 2) + (cfg.rand_int() % SNAPSHOT_INTERVAL)
        for _ in range(nn):
            rf = cfg.rafts[sender]
            assert rf is not None
            rf.start(cfg.rand_int())

        # let applier threads catch up with the Start()'s
        if not disconnect and not crash:
            # make sure all followers have caught up, so that
            # an InstallSnapshot RPC isn't required for
            # TestSnapshotBasic2D().
            await cfg.one(cfg.rand_int(), servers, retry=True)
        else:
            await cfg.one(cfg.rand_int(), servers - 1, retry=True)

        if cfg.log_size() >= MAX_LOG_SIZE:
            lab.fatal("Log size too large")
        if disconnect:
            # reconnect a follower, who maybe behind and
            # needs to receive a snapshot to catch up.
            cfg.connect(victim)
            await cfg.one(cfg.rand_int(), servers, retry=True)
            leader1 = await cfg.check_one_leader()
        if crash:
            cfg.start1(victim, cfg.applier_snap)
            cfg.connect(victim)
            await cfg.one(cfg.rand_int(), servers, retry=True)
            leader1 = await cfg.check_one_leader()
    cfg.end()


def test_snapshot_basic_2d(lab: Lab) -> None:
    lab.run(snapshot_basic_2d)


async def snapshot_basic_2d(lab: Lab) -> None:
    await snapcommon(lab, "Test (2D): snapshots basic", False, True, False)


def test_snapshot_install_2d(lab: Lab) -> None:
    lab.run(snapshot_install_2d)


async def snapshot_install_2d(lab: Lab) -> None:
    await snapcommon(lab, "Test (2D): install snapshots (disconnect)", True, True, False)


def test_snapshot_install_unreliable_2d(lab: Lab) -> None:
    lab.run(snapshot_install_unreliable_2d)


async def snapshot_install_unreliable_2d(lab: Lab) -> None:
    await snapcommon(
        lab, "Test (2D): install snapshots (disconnect+unreliable)", True, False, False
    )


def test_snapshot_install_crash_2d(lab: Lab) -> None:
    lab.run(snapshot_install_crash_2d)


async def snapshot_install_crash_2d(lab: Lab) -> None:
    await snapcommon(lab, "Test (2D): install snapshots (crash)", False, True, True)


def test_snapshot_install_unreliable_crash_2d(lab: Lab) -> None:
    lab.run(snapshot_install_unreliable_crash_2d)


async def snapshot_install_unreliable_crash_2d(lab: Lab) -> None:
    await snapcommon(lab, "Test (2D): install snapshots (unreliable+crash)", False, False, True)


def test_snapshot_all_crash_2d(lab: Lab) -> None:
    lab.run(snapshot_all_crash_2d)


async def snapshot_all_crash_2d(lab: Lab) -> None:
    """Do the servers persist the snapshots, and restart using snapshot along with the tail?"""
    servers = 3
    iters = 5
    cfg = lab.make_config(servers, unreliable=False, snapshot=True)

    cfg.begin("Test (2D): crash and restart all servers")

    await cfg.one(cfg.rand_int(), servers, retry=True)

    for _ in range(iters):
        # perhaps enough to get a snapshot
        nn = (SNAPSHOT_INTERVAL // 2) + (cfg.rand_int() % SNAPSHOT_INTERVAL)
        for _ in range(nn):
            await cfg.one(cfg.rand_int(), servers, retry=True)

        index1 = await cfg.one(cfg.rand_int(), servers, retry=True)

        # crash all
        for i in range(servers):
            cfg.crash1(i)

        # revive all
        for i in range(servers):
            cfg.start1(i, cfg.applier_snap)
            cfg.connect(i)

        index2 = await cfg.one(cfg.rand_int(), servers, retry=True)
        if index2 < index1 + 1:
            lab.fatal(f"index decreased from {index1} to {index2}")
    cfg.end()


def test_snapshot_init_2d(lab: Lab) -> None:
    lab.run(snapshot_init_2d)


async def snapshot_init_2d(lab: Lab) -> None:
    """Do servers initialize their in-memory copy of the snapshot, so later writes keep it?"""
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=True)

    cfg.begin("Test (2D): snapshot initialization after crash")
    await cfg.one(cfg.rand_int(), servers, retry=True)

    # enough ops to make a snapshot
    nn = SNAPSHOT_INTERVAL + 1
    for _ in range(nn):
        await cfg.one(cfg.rand_int(), servers, retry=True)

    # crash all
    for i in range(servers):
        cfg.crash1(i)

    # revive all
    for i in range(servers):
        cfg.start1(i, cfg.applier_snap)
        cfg.connect(i)

    # a single op, to get something to be written back to persistent storage.
    await cfg.one(cfg.rand_int(), servers, retry=True)

    # crash all
    for i in range(servers):
        cfg.crash1(i)

    # revive all
    for i in range(servers):
        cfg.start1(i, cfg.applier_snap)
        cfg.connect(i)

    # do another op to trigger potential bug
    await cfg.one(cfg.rand_int(), servers, retry=True)
    cfg.end()
