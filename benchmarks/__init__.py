"""The benchmark harness, `python -m benchmarks` (docs/benchmarks.md).

raftio side by side with PySyncObj and etcd on one machine: 3-process
clusters on 127.0.0.1, closed-loop load at several concurrencies and
payloads, the leader's costs per committed entry, and the probes that bound
a single client (fdatasync latency, loopback RTT).

    cli.py          the command line: options, checks before a run
    runner.py       the run: series, points, repeats, probes, profile, outputs
    workloads.py    the series and clusters; how one point is measured
    raftio_node.py  a raftio peer process with a control channel (embedded load)
    kv_client.py    end-to-end load processes (raftio KV protocol, etcd HTTP)
    peers/          PySyncObj peer processes, etcd members
    probes.py       fdatasync latency, loopback RTT, machine facts
    report.py       results.json -> results.md, plots, targets
    profiles.py     cProfile and py-spy summaries of the leader (--profile)
    control.py      JSON-line control channel (child side); procs.py the harness side
    loadgen.py, stats.py, counters.py, progress.py   shared pieces

It ships in the source checkout, not in the wheel: run it from a checkout
with `python -m benchmarks` (or its alias `raftio bench`). `storage_bench.py` and
`tcp_rtt.py` are older stand-alone scripts.
"""
