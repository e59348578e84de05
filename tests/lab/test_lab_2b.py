"""Lab 2B: log replication (test_test.go TestBasicAgree2B ... TestCount2B)."""

from __future__ import annotations

import asyncio

import raftio

from .harness import RAFT_ELECTION_TIMEOUT, Lab


def test_basic_agree_2b(lab: Lab) -> None:
    lab.run(basic_agree_2b)


async def basic_agree_2b(lab: Lab) -> None:
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): basic agreement")

    iters = 3
    for index in range(1, iters + 1):
        nd, _ = cfg.n_committed(index)
        if nd > 0:
            lab.fatal("some have committed before Start()")

        xindex = await cfg.one(index * 100, servers, retry=False)
        if xindex != index:
            lab.fatal(f"got index {xindex} but expected {index}")

    cfg.end()


def test_rpc_bytes_2b(lab: Lab) -> None:
    lab.run(rpc_bytes_2b)


async def rpc_bytes_2b(lab: Lab) -> None:
    """Check, based on counting bytes of RPCs, that each command is sent to each peer just once."""
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): RPC byte count")

    await cfg.one(99, servers, retry=False)
    bytes0 = cfg.bytes_total()

    iters = 10
    sent = 0
    for index in range(2, iters + 2):
        cmd = cfg.randstring(5000)
        xindex = await cfg.one(cmd, servers, retry=False)
        if xindex != index:
            lab.fatal(f"got index {xindex} but expected {index}")
        sent += len(cmd)

    bytes1 = cfg.bytes_total()
    got = bytes1 - bytes0
    expected = servers * sent
    if got > expected + 50000:
        lab.fatal(f"too many RPC bytes; got {got}, expected {expected}")

    cfg.end()


def test_follower_failure_2b(lab: Lab) -> None:
    lab.run(follower_failure_2b)


async def follower_failure_2b(lab: Lab) -> None:
    """Test just failure of followers."""
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): test progressive failure of followers")

    await cfg.one(101, servers, retry=False)

    # disconnect one follower from the network.
    leader1 = await cfg.check_one_leader()
    cfg.disconnect((leader1 + 1) % servers)

    # the leader and remaining follower should be
    # able to agree despite the disconnected follower.
    await cfg.one(102, servers - 1, retry=False)
    await asyncio.sleep(RAFT_ELECTION_TIMEOUT)
    await cfg.one(103, servers - 1, retry=False)

    # disconnect the remaining follower
    leader2 = await cfg.check_one_leader()
    cfg.disconnect((leader2 + 1) % servers)
    cfg.disconnect((leader2 + 2) % servers)

    # submit a command.
    rf = cfg.rafts[leader2]
    assert rf is not None
    index, _, ok = rf.start(104)
    if not ok:
        lab.fatal("leader rejected Start()")
    if index != 4:
        lab.fatal(f"expected index 4, got {index}")

    await asyncio.sleep(2 * RAFT_ELECTION_TIMEOUT)

    # check that command 104 did not commit.
    n, _ = cfg.n_committed(index)
    if n > 0:
        lab.fatal(f"{n} committed but no majority")

    cfg.end()


def test_leader_failure_2b(lab: Lab) -> None:
    lab.run(leader_failure_2b)


async def leader_failure_2b(lab: Lab) -> None:
    """Test just failure of leaders."""
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): test failure of leaders")

    await cfg.one(101, servers, retry=False)

    # disconnect the first leader.
    leader1 = await cfg.check_one_leader()
    cfg.disconnect(leader1)

    # the remaining followers should elect a new leader.
    await cfg.one(102, servers - 1, retry=False)
    await asyncio.sleep(RAFT_ELECTION_TIMEOUT)
    await cfg.one(103, servers - 1, retry=False)

    # disconnect the new leader.
    leader2 = await cfg.check_one_leader()
    cfg.disconnect(leader2)

    # submit a command to each server.
    for rf in cfg.rafts:
        assert rf is not None
        rf.start(104)

    await asyncio.sleep(2 * RAFT_ELECTION_TIMEOUT)

    # check that command 104 did not commit.
    n, _ = cfg.n_committed(4)
    if n > 0:
        lab.fatal(f"{n} committed but no majority")

    cfg.end()


def test_fail_agree_2b(lab: Lab) -> None:
    lab.run(fail_agree_2b)


async def fail_agree_2b(lab: Lab) -> None:
    """Test that a follower participates after disconnect and re-connect."""
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): agreement after follower reconnects")

    await cfg.one(101, servers, retry=False)

    # disconnect one follower from the network.
    leader = await cfg.check_one_leader()
    cfg.disconnect((leader + 1) % servers)

    # the leader and remaining follower should be
    # able to agree despite the disconnected follower.
    await cfg.one(102, servers - 1, retry=False)
    await cfg.one(103, servers - 1, retry=False)
    await asyncio.sleep(RAFT_ELECTION_TIMEOUT)
    await cfg.one(104, servers - 1, retry=False)
    await cfg.one(105, servers - 1, retry=False)

    # re-connect
    cfg.connect((leader + 1) % servers)

    # the full set of servers should preserve
    # previous agreements, and be able to agree
    # on new commands.
    await cfg.one(106, servers, retry=True)
    await asyncio.sleep(RAFT_ELECTION_TIMEOUT)
    await cfg.one(107, servers, retry=True)

    cfg.end()


def test_fail_no_agree_2b(lab: Lab) -> None:
    lab.run(fail_no_agree_2b)


async def fail_no_agree_2b(lab: Lab) -> None:
    servers = 5
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): no agreement if too many followers disconnect")

    await cfg.one(10, servers, retry=False)

    # 3 of 5 followers disconnect
    leader = await cfg.check_one_leader()
    cfg.disconnect((leader + 1) % servers)
    cfg.disconnect((leader + 2) % servers)
    cfg.disconnect((leader + 3) % servers)

    rf = cfg.rafts[leader]
    assert rf is not None
    index, _, ok = rf.start(20)
    if not ok:
        lab.fatal("leader rejected Start()")
    if index != 2:
        lab.fatal(f"expected index 2, got {index}")

    await asyncio.sleep(2 * RAFT_ELECTION_TIMEOUT)

    n, _ = cfg.n_committed(index)
    if n > 0:
        lab.fatal(f"{n} committed but no majority")

    # repair
    cfg.connect((leader + 1) % servers)
    cfg.connect((leader + 2) % servers)
    cfg.connect((leader + 3) % servers)

    # the disconnected majority may have chosen a leader from
    # among their own ranks, forgetting index 2.
    leader2 = await cfg.check_one_leader()
    rf2 = cfg.rafts[leader2]
    assert rf2 is not None
    index2, _, ok2 = rf2.start(30)
    if not ok2:
        lab.fatal("leader2 rejected Start()")
    if index2 < 2 or index2 > 3:
        lab.fatal(f"unexpected index {index2}")

    await cfg.one(1000, servers, retry=True)

    cfg.end()


def test_concurrent_starts_2b(lab: Lab) -> None:
    lab.run(concurrent_starts_2b)


async def concurrent_starts_2b(lab: Lab) -> None:
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): concurrent Start()s")

    success = False
    for attempt in range(5):
        if attempt > 0:
            # give solution some time to settle
            await asyncio.sleep(3)

        leader = await cfg.check_one_leader()
        rf = cfg.rafts[leader]
        assert rf is not None
        _, term, ok = rf.start(1)
        if not ok:
            # leader moved on really quickly
            continue

        iters = 5
        indexes: list[int] = []

        async def starter(rf: raftio.Raft, term: int, i: int, indexes: list[int]) -> None:
            index, term1, ok = rf.start(100 + i)
            if term1 != term or not ok:
                return
            indexes.append(index)

        starters = [lab.spawn(starter(rf, term, ii, indexes)) for ii in range(iters)]
        await asyncio.gather(*starters)

        if any(r is not None and r.get_state()[0] != term for r in cfg.rafts):
            # term changed -- can't expect low RPC counts
            continue

        failed = False
        cmds: list[int] = []
        for index in indexes:
            cmd = await cfg.wait(index, servers, term)
            if not isinstance(cmd, int):
                lab.fatal(f"value {cmd!r} is not an int")
            if cmd == -1:
                # peers have moved on to later terms
                # so we can't expect all Start()s to
                # have succeeded
                failed = True
                break
            cmds.append(cmd)

        if failed:
            continue

        for ii in range(iters):
            x = 100 + ii
            if x not in cmds:
                lab.fatal(f"cmd {x} missing in {cmds}")

        success = True
        break

    if not success:
        lab.fatal("term changed too often")

    cfg.end()


def test_rejoin_2b(lab: Lab) -> None:
    lab.run(rejoin_2b)


async def rejoin_2b(lab: Lab) -> None:
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): rejoin of partitioned leader")

    await cfg.one(101, servers, retry=True)

    # leader network failure
    leader1 = await cfg.check_one_leader()
    cfg.disconnect(leader1)

    # make old leader try to agree on some entries
    rf1 = cfg.rafts[leader1]
    assert rf1 is not None
    rf1.start(102)
    rf1.start(103)
    rf1.start(104)

    # new leader commits, also for index=2
    await cfg.one(103, 2, retry=True)

    # new leader network failure
    leader2 = await cfg.check_one_leader()
    cfg.disconnect(leader2)

    # old leader connected again
    cfg.connect(leader1)

    await cfg.one(104, 2, retry=True)

    # all together now
    cfg.connect(leader2)

    await cfg.one(105, servers, retry=True)

    cfg.end()


def test_backup_2b(lab: Lab) -> None:
    lab.run(backup_2b)


async def backup_2b(lab: Lab) -> None:
    servers = 5
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): leader backs up quickly over incorrect follower logs")

    await cfg.one(cfg.rand_int(), servers, retry=True)

    # put leader and one follower in a partition
    leader1 = await cfg.check_one_leader()
    cfg.disconnect((leader1 + 2) % servers)
    cfg.disconnect((leader1 + 3) % servers)
    cfg.disconnect((leader1 + 4) % servers)

    # submit lots of commands that won't commit
    rf1 = cfg.rafts[leader1]
    assert rf1 is not None
    for _ in range(50):
        rf1.start(cfg.rand_int())

    await asyncio.sleep(RAFT_ELECTION_TIMEOUT / 2)

    cfg.disconnect((leader1 + 0) % servers)
    cfg.disconnect((leader1 + 1) % servers)

    # allow other partition to recover
    cfg.connect((leader1 + 2) % servers)
    cfg.connect((leader1 + 3) % servers)
    cfg.connect((leader1 + 4) % servers)

    # lots of successful commands to new group.
    for _ in range(50):
        await cfg.one(cfg.rand_int(), 3, retry=True)

    # now another partitioned leader and one follower
    leader2 = await cfg.check_one_leader()
    other = (leader1 + 2) % servers
    if leader2 == other:
        other = (leader2 + 1) % servers
    cfg.disconnect(other)

    # lots more commands that won't commit
    rf2 = cfg.rafts[leader2]
    assert rf2 is not None
    for _ in range(50):
        rf2.start(cfg.rand_int())

    await asyncio.sleep(RAFT_ELECTION_TIMEOUT / 2)

    # bring original leader back to life,
    for i in range(servers):
        cfg.disconnect(i)
    cfg.connect((leader1 + 0) % servers)
    cfg.connect((leader1 + 1) % servers)
    cfg.connect(other)

    # lots of successful commands to new group.
    for _ in range(50):
        await cfg.one(cfg.rand_int(), 3, retry=True)

    # now everyone
    for i in range(servers):
        cfg.connect(i)
    await cfg.one(cfg.rand_int(), servers, retry=True)

    cfg.end()


def test_count_2b(lab: Lab) -> None:
    lab.run(count_2b)


async def count_2b(lab: Lab) -> None:
    servers = 3
    cfg = lab.make_config(servers, unreliable=False, snapshot=False)

    cfg.begin("Test (2B): RPC counts aren't too high")

    def rpcs() -> int:
        return sum(cfg.rpc_count(j) for j in range(servers))

    leader = await cfg.check_one_leader()

    total1 = rpcs()

    if total1 > 30 or total1 < 1:
        lab.fatal(f"too many or few RPCs ({total1}) to elect initial leader")

    total2 = 0
    success = False
    for attempt in range(5):
        if attempt > 0:
            # give solution some time to settle
            await asyncio.sleep(3)

        leader = await cfg.check_one_leader()
        total1 = rpcs()

        iters = 10
        rf = cfg.rafts[leader]
        assert rf is not None
        starti, term, ok = rf.start(1)
        if not ok:
            # leader moved on really quickly
            continue
        cmds: list[int] = []
        term_changed = False
        for i in range(1, iters + 2):
            x = cfg.rand_int31()
            cmds.append(x)
            index1, term1, ok = rf.start(x)
            if term1 != term or not ok:
                # term changed while starting / no longer the leader
                term_changed = True
                break
            if starti + i != index1:
                lab.fatal("Start() failed")
        if term_changed:
            continue

        for i in range(1, iters + 1):
            cmd = await cfg.wait(starti + i, servers, term)
            if cmd != cmds[i - 1]:
                if cmd == -1:
                    # term changed -- try again
                    term_changed = True
                    break
                lab.fatal(f"wrong value {cmd!r} committed for index {starti + i}; expected {cmds}")
        if term_changed:
            continue

        failed = False
        total2 = 0
        for j in range(servers):
            rfj = cfg.rafts[j]
            assert rfj is not None
            if rfj.get_state()[0] != term:
                # term changed -- can't expect low RPC counts
                # need to keep going to update total2
                failed = True
            total2 += cfg.rpc_count(j)

        if failed:
            continue

        if total2 - total1 > (iters + 1 + 3) * 3:
            lab.fatal(f"too many RPCs ({total2 - total1}) for {iters} entries")

        success = True
        break

    if not success:
        lab.fatal("term changed too often")

    await asyncio.sleep(RAFT_ELECTION_TIMEOUT)

    total3 = sum(cfg.rpc_count(j) for j in range(servers))

    if total3 - total2 > 3 * 20:
        lab.fatal(f"too many RPCs ({total3 - total2}) for 1 second of idleness")

    cfg.end()
