"""results.json -> results.md and the PNG plots; the targets, met or not.

Pure functions of the results dict the runner builds (see runner.py), so a
report can be rebuilt from a saved results.json:

    python -m benchmarks.report results/20260101-120000/results.json

The targets (docs/benchmarks.md):

1. raftio embedded, C=256, 16 B, fsync on >= 2x PySyncObj's best in-memory
   throughput (16 B, any C);
2. raftio embedded single client (C=1, 16 B) p50 <= 2 x (fdatasync p50 + RTT p50);
3. raftio KV end to end, C=256, 16 B: throughput >= etcd's;
4. raftio KV end to end, C=1, 16 B: p50 below etcd's;
5. raftio leader CPU per committed entry, embedded C=256 16 B: < 40 us.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "evaluate_targets",
    "find",
    "main",
    "markdown",
    "read_rows",
    "reads_table",
    "target_lines",
    "write_plots",
]

TARGET_C = 256
TARGET_PAYLOAD = 16
CPU_LIMIT_US = 40.0
COLUMNS = (
    "raftio-embedded",
    "raftio-embedded-nofsync",
    "pysyncobj",
    "pysyncobj-journal",
    "raftio-e2e",
    "etcd",
)
RATIOS = (
    ("raftio-embedded", "pysyncobj", "embedded / PySyncObj"),
    ("raftio-embedded-nofsync", "pysyncobj", "fsync off / PySyncObj"),
    ("raftio-e2e", "etcd", "e2e / etcd"),
)


def find(
    results: dict[str, Any], series: str, concurrency: int, payload: int
) -> dict[str, Any] | None:
    for point in results.get("points", ()):
        if (point["series"], point["concurrency"], point["payload"]) == (
            series,
            concurrency,
            payload,
        ):
            result: dict[str, Any] = point
            return result
    return None


def _p50_ms(point: dict[str, Any] | None) -> float | None:
    if point is None or "p50_us" not in point["latency"]:
        return None
    return float(point["latency"]["p50_us"]) / 1e3


def _throughput(point: dict[str, Any] | None) -> float | None:
    return None if point is None else float(point["throughput"])


def _target(
    key: str,
    description: str,
    raftio: float | None,
    reference: float | None,
    limit: str,
    check: Callable[[float, float], bool],
    unit: str,
    missing: str = "",
) -> dict[str, Any]:
    met = None if raftio is None or reference is None else check(raftio, reference)
    ratio = None
    if raftio is not None and reference is not None and reference > 0:
        ratio = raftio / reference
    return {
        "key": key,
        "description": description,
        "raftio": raftio,
        "reference": reference,
        "limit": limit,
        "ratio": ratio,
        "met": met,
        "unit": unit,
        "missing": missing if met is None else "",
    }


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The five targets, each met (True), not met (False) or not measured (None)."""
    c, p = TARGET_C, TARGET_PAYLOAD
    embedded = find(results, "raftio-embedded", c, p)
    pysyncobj = [
        pt for pt in results.get("points", ()) if pt["series"] == "pysyncobj" and pt["payload"] == p
    ]
    best_pso = max((pt["throughput"] for pt in pysyncobj), default=None)
    single = find(results, "raftio-embedded", 1, p)
    probes = results.get("probes", {})
    bound = None
    if "p50_us" in probes.get("fdatasync", {}) and "p50_us" in probes.get("rtt", {}):
        bound = 2 * (probes["fdatasync"]["p50_us"] + probes["rtt"]["p50_us"]) / 1e3
    e2e, etcd = find(results, "raftio-e2e", c, p), find(results, "etcd", c, p)
    e2e1, etcd1 = find(results, "raftio-e2e", 1, p), find(results, "etcd", 1, p)
    cpu = embedded["leader"].get("cpu_us_per_entry") if embedded else None
    return [
        _target(
            "embedded-vs-pysyncobj",
            f"embedded C={c} {p} B fsync on >= 2x PySyncObj's best in-memory throughput",
            _throughput(embedded),
            best_pso,
            ">= 2x",
            lambda a, b: a >= 2 * b,
            "ops/s",
            "needs raftio-embedded C=256 16 B and pysyncobj 16 B",
        ),
        _target(
            "single-client-latency",
            f"embedded C=1 {p} B p50 <= 2 x (fdatasync p50 + loopback RTT p50)",
            _p50_ms(single),
            bound,
            "<= bound",
            lambda a, b: a <= b,
            "ms",
            "needs raftio-embedded C=1 16 B",
        ),
        _target(
            "e2e-throughput-vs-etcd",
            f"KV end to end C={c} {p} B throughput >= etcd's",
            _throughput(e2e),
            _throughput(etcd),
            ">= 1x",
            lambda a, b: a >= b,
            "ops/s",
            "needs raftio-e2e and etcd at C=256 16 B",
        ),
        _target(
            "e2e-latency-vs-etcd",
            f"KV end to end single client ({p} B) p50 < etcd's",
            _p50_ms(e2e1),
            _p50_ms(etcd1),
            "< 1x",
            lambda a, b: a < b,
            "ms",
            "needs raftio-e2e and etcd at C=1 16 B",
        ),
        _target(
            "leader-cpu",
            f"leader CPU per committed entry, embedded C={c} {p} B < 40 us",
            cpu,
            CPU_LIMIT_US,
            "< 40 us",
            lambda a, b: a < b,
            "us",
            "needs raftio-embedded C=256 16 B",
        ),
    ]


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def _num(value: float | None, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "ops/s" or abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def target_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for t in results.get("targets") or evaluate_targets(results):
        ratio = f" (ratio {t['ratio']:.2f})" if t["ratio"] is not None else ""
        lines.append(
            f"target {t['key']}: {_verdict(t['met'])}: raftio {_num(t['raftio'])} "
            f"{t['unit']} vs {_num(t['reference'])} {t['unit']}{ratio}"
        )
    return lines


# --------------------------------------------------------------------------- markdown


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _present(results: dict[str, Any]) -> list[str]:
    keys = {pt["series"] for pt in results.get("points", ())}
    return [key for key in COLUMNS if key in keys]


def _grid(results: dict[str, Any]) -> list[tuple[int, int]]:
    pairs = {(pt["payload"], pt["concurrency"]) for pt in results.get("points", ())}
    return sorted(pairs)


def _label(results: dict[str, Any], key: str) -> str:
    return str(results.get("series", {}).get(key, {}).get("label", key))


def _throughput_table(results: dict[str, Any]) -> list[str]:
    present = _present(results)
    ratios = [r for r in RATIOS if r[0] in present and r[1] in present]
    header = ["payload", "C", *(_label(results, k) for k in present), *(r[2] for r in ratios)]
    rows = []
    for payload, c in _grid(results):
        row = [f"{payload} B", str(c)]
        for key in present:
            point = find(results, key, c, payload)
            row.append(_num(_throughput(point), "ops/s"))
        for a, b, _ in ratios:
            pa, pb = find(results, a, c, payload), find(results, b, c, payload)
            ok = pa is not None and pb is not None and pb["throughput"] > 0
            row.append(f"{pa['throughput'] / pb['throughput']:.2f}x" if ok else "-")  # type: ignore[index]
        rows.append(row)
    return _table(header, rows)


def _latency_cell(point: dict[str, Any] | None) -> str:
    if point is None or "p50_us" not in point["latency"]:
        return "-"
    lat = point["latency"]
    return " / ".join(_num(lat[k] / 1e3) for k in ("p50_us", "p99_us", "p999_us"))


def _latency_table(results: dict[str, Any]) -> list[str]:
    present = _present(results)
    header = ["payload", "C", *(_label(results, k) for k in present)]
    rows = []
    for payload, c in _grid(results):
        row = [f"{payload} B", str(c)]
        row += [_latency_cell(find(results, key, c, payload)) for key in present]
        rows.append(row)
    return _table(header, rows)


def _percent(value: float | None) -> str:
    return f"{value * 100:.0f}%" if value is not None else "-"


def _spread(point: dict[str, Any]) -> str:
    """Every run's throughput and the load average after it: how noisy the point was."""
    runs = point.get("runs") or [point["throughput"]]
    loads = point.get("loadavg") or []
    loads = loads if isinstance(loads, list) else [loads]
    text = " / ".join(_num(r, "ops/s") for r in runs)
    if loads:
        text += f" (load {min(loads):.1f}-{max(loads):.1f})"
    return text


def _costs_table(results: dict[str, Any]) -> list[str]:
    header = ["series", "payload", "C", "leader CPU us/entry", "leader CPU", "RPCs/entry",
              "bytes/entry", "fsyncs/entry", "cluster CPU us/entry", "cluster CPU",
              "client CPU", "runs: ops/s, load avg", "errors"]  # fmt: skip
    rows = []
    for key in _present(results):
        for payload, c in _grid(results):
            point = find(results, key, c, payload)
            if point is None:
                continue
            leader = point["leader"]
            errors = str(sum(point["errors"].values()) or "")
            if leader.get("leader_changed"):
                errors += " (leader changed)"
            rows.append(
                [
                    _label(results, key),
                    f"{payload} B",
                    str(c),
                    _num(leader.get("cpu_us_per_entry")),
                    _percent(leader.get("cpu_utilization")),
                    _num(leader.get("rpcs_per_entry")),
                    _num(leader.get("bytes_per_entry")),
                    _num(leader.get("fsyncs_per_entry")),
                    _num(leader.get("cluster_cpu_us_per_entry")),
                    _percent(leader.get("cluster_cpu_utilization")),
                    _percent(leader.get("client_cpu_utilization")),
                    _spread(point),
                    errors,
                ]
            )
    return _table(header, rows)


def _targets_table(results: dict[str, Any]) -> list[str]:
    rows = []
    for t in results.get("targets") or evaluate_targets(results):
        ratio = f"{t['ratio']:.2f}" if t["ratio"] is not None else "-"
        verdict = _verdict(t["met"]) + (f" ({t['missing']})" if t["missing"] else "")
        rows.append(
            [
                t["description"],
                f"{_num(t['raftio'])} {t['unit']}",
                f"{_num(t['reference'])} {t['unit']}",
                f"{ratio} (want {t['limit']})",
                f"**{verdict}**",
            ]
        )
    return _table(["target", "raftio", "reference", "ratio", "verdict"], rows)


def _machine(results: dict[str, Any]) -> list[str]:
    m = results.get("machine", {})
    pr = results.get("probes", {})
    fs, rtt = pr.get("fdatasync", {}), pr.get("rtt", {})
    lines = [
        f"- CPU: {m.get('cpu_model')} x {m.get('nproc')} (nproc), {m.get('memory_gib')} GiB, "
        f"Linux {m.get('kernel')}",
        f"- Python {m.get('python')}, uvloop {m.get('uvloop')}, msgpack {m.get('msgpack')}, "
        f"raftio {m.get('raftio')} ({m.get('raftio_commit')}), PySyncObj {m.get('pysyncobj')}, "
        f"etcd {m.get('etcd')}",
    ]
    if "p50_us" in fs and "p50_us" in rtt:
        bound = 2 * (fs["p50_us"] + rtt["p50_us"])
        lines.append(
            f"- fdatasync of a 64 B append: p50 {fs['p50_us']:.0f} us, p99 {fs['p99_us']:.0f} us; "
            f"loopback RTT (uvloop streams echo, 64 B): p50 {rtt['p50_us']:.0f} us, "
            f"p99 {rtt['p99_us']:.0f} us; single-client bound 2 x (fdatasync + RTT) = "
            f"{bound / 1e3:.2f} ms"
        )
    floor = pr.get("commit_floor", {})
    if "p50_us" in floor:
        lines.append(
            f"- commit floor (one C=1 commit's I/O with raftio's threads, no Raft: "
            f"benchmarks/commit_floor.py): p50 {floor['p50_us']:.0f} us, "
            f"p99 {floor['p99_us']:.0f} us"
        )
    return lines


def _tables(results: dict[str, Any], level: str, targets_title: str) -> list[str]:
    """The targets, throughput, latency and costs tables under `level` headings (the
    last three if a write series ran), then the reads table if reads ran."""
    targets = [f"{level} {targets_title}", "", *_targets_table(results), ""]
    if not _present(results):
        return [*targets, *_reads_section(results, level)]
    return [
        *targets,
        f"{level} Throughput (ops/s)",
        "",
        *_throughput_table(results),
        "",
        f"{level} Latency p50 / p99 / p99.9 (ms)",
        "",
        *_latency_table(results),
        "",
        f"{level} Leader costs per committed entry",
        "",
        "Leader CPU is the leader process's, all threads (embedded series: with the load",
        "generator in it); cluster CPU adds the two followers; CPU columns in % are cores",
        "busy (100% = one core of the 2). Client CPU is the end-to-end load processes'.",
        "Bytes are TCP payload on the leader's peer connections, both directions; etcd's",
        "bytes and fsyncs come from its /metrics, PySyncObj counts no RPCs or fsyncs.",
        "",
        *_costs_table(results),
        "",
        *_reads_section(results, level),
    ]


def markdown(results: dict[str, Any]) -> str:
    s = results.get("settings", {})
    lines = [
        "# raftio bench results",
        "",
        f"`{results.get('command') or 'raftio bench'}` - started {results.get('started')}, "
        f"finished {results.get('finished')}"
        + (" (**interrupted**)" if results.get("interrupted") else ""),
        "",
        f"3 processes on 127.0.0.1 per cluster; {s.get('warmup')} s warm-up, "
        f"{s.get('duration')} s measured per point, median of {s.get('repeat')} run(s); "
        f"event loop {s.get('loop')}. Throughput is applied operations per second; "
        "latency from issue to applied result, `time.perf_counter` in the load generator.",
        "",
        *_machine(results),
        "",
        *_tables(results, "##", "Targets"),
    ]
    for key, why in {**results.get("skipped", {}), **results.get("failed", {})}.items():
        lines.append(f"- {_label(results, key)}: {why.splitlines()[0]}")
    plots = results.get("plots")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in plots]
    elif results.get("plots_skipped"):
        lines += ["", f"Plots skipped: {results['plots_skipped']}"]
    profile = results.get("profile")
    if profile:
        lines += [
            "",
            f"## Profile of the leader (embedded C={profile['concurrency']}, "
            f"{profile['payload']} B, fsync on)",
            "",
        ]
        for run in profile["runs"]:
            what = {"wall": "cProfile, wall clock", "cpu": "cProfile, event-loop thread CPU",
                    "py-spy": "py-spy, every thread sampled"}[run["timer"]]  # fmt: skip
            lines.append(
                f"- {what}: {run['throughput_under_profiler']:,.0f} ops/s while "
                f"profiled; top 25 by own and cumulative time in `{run['summary_file']}`, "
                f"stats in `{run['file']}`"
            )
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- reads

READ_REFERENCE = "etcd-read"  # the series every read series is compared with


def _read_keys(results: dict[str, Any]) -> list[str]:
    """The read series known to this run, in the harness's order."""
    return [k for k, s in results.get("series", {}).items() if s.get("op") == "read"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def read_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per read point (throughput, p50, p99, ratios to etcd's get at the same
    C and payload in this run, leader costs per read); one per skipped or failed series."""
    keys = _read_keys(results)
    points = [pt for pt in results.get("points", ()) if pt["series"] in keys]
    rows = []
    for payload, c in sorted({(pt["payload"], pt["concurrency"]) for pt in points}):
        etcd = find(results, READ_REFERENCE, c, payload)
        for key in keys:
            point = find(results, key, c, payload)
            if point is None:
                continue
            lat, leader = point["latency"], point["leader"]
            ref = None if key == READ_REFERENCE else etcd  # no ratio of etcd to itself
            rows.append(
                {
                    "series": key,
                    "label": _label(results, key),
                    "payload": payload,
                    "concurrency": c,
                    "throughput": point["throughput"],
                    "p50_us": lat.get("p50_us"),
                    "p99_us": lat.get("p99_us"),
                    "throughput_vs_etcd": _ratio(_throughput(point), _throughput(ref)),
                    "p50_vs_etcd": _ratio(_p50_ms(point), _p50_ms(ref)),
                    "leader_cpu_us_per_read": leader.get("cpu_us_per_entry"),
                    "rpcs_per_read": leader.get("rpcs_per_entry"),
                    "errors": sum(point["errors"].values()),
                    "leader_changed": bool(leader.get("leader_changed")),
                }
            )
    measured = {pt["series"] for pt in points}
    for kind in ("skipped", "failed"):
        for key, why in results.get(kind, {}).items():
            if key in keys and key not in measured:
                rows.append({"series": key, "label": _label(results, key), kind: why})
    return rows


def _times(value: float | None) -> str:
    return f"{_num(value)}x" if value is not None else "-"


def _read_errors(row: dict[str, Any]) -> str:
    return str(row["errors"] or "") + (" (leader changed)" if row.get("leader_changed") else "")


def reads_table(results: dict[str, Any]) -> list[str]:
    """The reads as a markdown table (the run prints it too)."""
    header = ["series", "payload", "C", "reads/s", "p50 ms", "p99 ms", "reads/s vs etcd",
              "p50 vs etcd", "leader CPU us/read", "RPCs/read", "errors"]  # fmt: skip
    rows = []
    for row in results.get("reads") or read_rows(results):
        why = row.get("skipped") or row.get("failed")
        if why is not None:
            kind = "skipped" if "skipped" in row else "failed"
            rows.append([row["label"], f"{kind}: {why.splitlines()[0]}", *["-"] * 9])
            continue
        rows.append(
            [
                row["label"],
                f"{row['payload']} B",
                str(row["concurrency"]),
                _num(row["throughput"], "ops/s"),
                _num(row["p50_us"] / 1e3 if row["p50_us"] is not None else None),
                _num(row["p99_us"] / 1e3 if row["p99_us"] is not None else None),
                _times(row["throughput_vs_etcd"]),
                _times(row["p50_vs_etcd"]),
                _num(row["leader_cpu_us_per_read"]),
                _num(row["rpcs_per_read"]),
                _read_errors(row),
            ]
        )
    return _table(header, rows)


def _reads_section(results: dict[str, Any], level: str) -> list[str]:
    if not (results.get("reads") or read_rows(results)):
        return []
    return [
        f"{level} Reads (linearizable)",
        "",
        "Closed-loop reads of one key written before the window; ratios are to etcd's",
        "get at the same C and payload in this run (reads/s: higher is better, p50:",
        "lower). Leader CPU and RPCs are per read (embedded: the load generator included).",
        "",
        *reads_table(results),
        "",
    ]


# --------------------------------------------------------------------------- docs

DOCS_BEGIN = "<!-- raftio bench: results begin (generated by raftio bench --docs) -->"
DOCS_END = "<!-- raftio bench: results end -->"


def docs_block(results: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks.md: the run, the machine and the tables."""
    s = results.get("settings", {})
    lines = [
        DOCS_BEGIN,
        "",
        f"`{results.get('command') or 'raftio bench'}`: started {results.get('started')}, "
        f"finished {results.get('finished')}; {s.get('warmup')} s warm-up and "
        f"{s.get('duration')} s measured per point, median of {s.get('repeat')} run(s), "
        f"event loop {s.get('loop')}, on:",
        "",
        *_machine(results),
        "",
        *_tables(results, "###", "Targets, met or not"),
        DOCS_END,
    ]
    return "\n".join(lines)


def update_docs(path: Path, results: dict[str, Any]) -> None:
    """Replace the generated block of a docs page (between the markers) with this run's."""
    text = path.read_text()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{path} has no generated results block ({DOCS_BEGIN!r} ... {DOCS_END!r})")
    path.write_text(text[:begin] + docs_block(results) + text[end + len(DOCS_END) :])


# --------------------------------------------------------------------------- plots


def write_plots(results: dict[str, Any], out: Path) -> list[str]:
    """Throughput vs concurrency and latency CDFs as PNGs; their file names."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results["plots_skipped"] = "matplotlib is not installed (pip install 'raftio[bench]')"
        return []
    present = _present(results)
    payloads = sorted({pt["payload"] for pt in results.get("points", ())})
    if not present or not payloads:
        results["plots_skipped"] = "no write series were measured (reads are not plotted)"
        return []
    names = [_throughput_plot(plt, results, present, payloads, out)]
    names.append(_cdf_plot(plt, results, present, payloads[0], out))
    return names


def _throughput_plot(
    plt: Any, results: dict[str, Any], present: list[str], payloads: list[int], out: Path
) -> str:
    fig, axes = plt.subplots(1, len(payloads), figsize=(6.5 * len(payloads), 4.5), squeeze=False)
    for ax, payload in zip(axes[0], payloads, strict=True):
        for key in present:
            pts = sorted(
                (pt["concurrency"], pt["throughput"])
                for pt in results["points"]
                if pt["series"] == key and pt["payload"] == payload
            )
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=_label(results, key))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrency C (outstanding requests)")
        ax.set_ylabel("applied ops/s")
        ax.set_title(f"throughput vs concurrency, {payload} B")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "throughput_vs_concurrency.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _cdf_plot(
    plt: Any, results: dict[str, Any], present: list[str], payload: int, out: Path
) -> str:
    levels = sorted({pt["concurrency"] for pt in results["points"] if pt["payload"] == payload})
    chosen = [c for c in (1, TARGET_C) if c in levels] or levels[:1]
    fig, axes = plt.subplots(1, len(chosen), figsize=(6.5 * len(chosen), 4.5), squeeze=False)
    for ax, c in zip(axes[0], chosen, strict=True):
        for key in present:
            point = find(results, key, c, payload)
            cdf = point["latency"].get("cdf") if point else None
            if cdf:
                ax.plot([x / 1e3 for x, _ in cdf], [q for _, q in cdf], label=_label(results, key))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("fraction of operations")
        ax.set_title(f"latency CDF, C={c}, {payload} B")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "latency_cdf.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def main(argv: list[str] | None = None) -> int:
    """Rebuild results.md and the plots from a results.json (and a docs page's block)."""
    args = list(sys.argv[1:] if argv is None else argv)
    docs = None
    if len(args) == 3 and args[1] == "--docs":
        docs = Path(args.pop(2))
        args.pop(1)
    if len(args) != 1:
        print("usage: python -m benchmarks.report RESULTS.json [--docs PAGE.md]", file=sys.stderr)
        return 2
    path = Path(args[0])
    results = json.loads(path.read_text())
    results["targets"] = evaluate_targets(results)
    results["reads"] = read_rows(results)
    results["plots"] = write_plots(results, path.parent)
    (path.parent / "results.md").write_text(markdown(results))
    if docs is not None:
        update_docs(docs, results)
        print(f"updated the results block of {docs}")
    print("\n".join(target_lines(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
