"""Tables, a chart and the docs section from one results file of ``bench.peers.run``.

``python -m bench.peers.report bench/results/peers-DATE.json`` writes ``docs/peers.png``,
replaces the generated section of ``docs/benchmarks.md`` and the peers line of the
README's Benchmarks section (both between ``<!-- peers:begin -->`` and
``<!-- peers:end -->``), and prints the tables. Every figure comes from the file; a
range is the minimum and maximum over the valid rounds.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peers.procs import ROOT

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
RATES = (1000, 5000, 10000)
CHART = "docs/peers.png"
TITLE = "Conveyor and its peers, one run (`make bench-peers`)"
ANCHOR = "conveyor-and-its-peers-one-run-make-bench-peers"


class Results:
    """A results file, indexed by system and workload.

    Args:
        data: the parsed file.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.systems = list(dict.fromkeys(r["system"] for r in data["rows"]))

    def rows(self, system: str, workload: str) -> list[dict[str, Any]]:
        return [r for r in self.data["rows"] if r["system"] == system and r["workload"] == workload]

    def values(self, system: str, workload: str, figure: str) -> list[float]:
        """The figure from each valid round."""
        rows = self.rows(system, workload)
        return [float(r["figures"][figure]) for r in rows if r["valid"] and figure in r["figures"]]

    def typical(self, system: str, workload: str, figure: str) -> float | None:
        """The median over valid rounds (None when no round was valid)."""
        values = self.values(system, workload, figure)
        return statistics.median(values) if values else None

    def invalid(self, system: str, workload: str) -> str | None:
        """What went wrong in the first invalid round, if any."""
        bad = [r["check"] for r in self.rows(system, workload) if not r["valid"]]
        return bad[0] if bad else None

    def kept_up_rounds(self, system: str, workload: str) -> tuple[int, int]:
        """In how many of its valid rounds a steady run kept up, of how many."""
        rows = [r for r in self.rows(system, workload) if r["valid"]]
        return sum(1 for r in rows if r["figures"].get("kept_up")), len(rows)

    def kept_up(self, system: str, workload: str) -> bool:
        """Whether a steady run kept up in every valid round (and had one)."""
        kept, rounds = self.kept_up_rounds(system, workload)
        return rounds > 0 and kept == rounds


def number(value: float, digits: int = 0) -> str:
    if value >= 100 or digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def span(values: list[float], digits: int = 0) -> str:
    """``a–b`` (or ``a`` when both ends agree) for a table cell."""
    if not values:
        return "—"
    low, high = number(min(values), digits), number(max(values), digits)
    return low if low == high else f"{low}–{high}"


def cell(res: Results, system: str, workload: str, figure: str, digits: int = 0) -> str:
    values = res.values(system, workload, figure)
    rows = res.rows(system, workload)
    if values:
        # A round that did not count is listed under the tables.
        return span(values, digits) + (" \\*" if len(values) < len(rows) else "")
    partial = [float(r["figures"][figure]) for r in rows if r["figures"].get("partial")]
    if partial and len(partial) == len(rows):
        return f"{span(partial, digits)} (timed out)"
    return "invalid" if res.invalid(system, workload) else "—"


def header(*columns: str) -> list[str]:
    """A markdown table's first two lines."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def throughput_table(res: Results) -> list[str]:
    out = header(
        "system",
        "version",
        "bulk enqueue",
        "enqueue one at a time",
        "drain",
        "IO, concurrency 100",
        "IO, concurrency 500",
    )
    versions = res.data["versions"]
    for s in res.systems:
        cells = [
            cell(res, s, "enqueue", "jobs_per_s"),
            cell(res, s, "enqueue_one", "jobs_per_s"),
            cell(res, s, "drain", "jobs_per_s"),
            cell(res, s, "io100", "jobs_per_s"),
            cell(res, s, "io500", "jobs_per_s"),
        ]
        out.append(f"| {s} | {versions.get(s, '?')} | " + " | ".join(cells) + " |")
    return out


def payload_table(res: Results) -> list[str]:
    """The drain again with 1 KB arguments and stored 1 KB results."""
    out = header(
        "system",
        "bulk enqueue",
        "drain",
        "Redis memory after (MB)",
        "Redis commands/job: enqueue + drain",
        "worker (results: bench/peers/README.md)",
    )
    for s in res.systems:
        if not res.rows(s, "drain_1k"):
            continue
        config = res.rows(s, "drain_1k")[0]["config"]
        cmds = [
            cell(res, s, "enqueue_1k", "redis_commands_per_job", 1),
            cell(res, s, "drain_1k", "redis_commands_per_job", 1),
        ]
        out.append(
            f"| {s} | {cell(res, s, 'enqueue_1k', 'jobs_per_s')} | "
            f"{cell(res, s, 'drain_1k', 'jobs_per_s')} | "
            f"{cell(res, s, 'drain_1k', 'redis_used_mb')} | {cmds[0]} + {cmds[1]} | {config} |"
        )
    return out if len(out) > 2 else []


def sqlite_table(res: Results) -> list[str]:
    """Conveyor on SQLite against SqliteHuey: fsync on, the same disk, worker in another
    process."""
    out = header(
        "system",
        "enqueue one at a time",
        "sent/s",
        "p50",
        "p95",
        "p99",
        "max",
        "kept up",
        "load avg",
    )
    for s in res.systems:
        if res.rows(s, "sqlite_rate200") or res.rows(s, "sqlite_enqueue_one"):
            one = cell(res, s, "sqlite_enqueue_one", "jobs_per_s")
            out.append(
                f"| {s} | {one} | " + " | ".join(wait_cells(res, s, "sqlite_rate200")) + " |"
            )
    return out if len(out) > 2 else []


def processes_lines(res: Results) -> list[str]:
    """The two-process drain, a row only Conveyor has."""
    rates = res.values("conveyor", "drain2", "jobs_per_s")
    if not rates:
        return []
    rss = span(res.values("conveyor", "drain2", "worker_rss_mb"))
    return [
        f"Conveyor with two worker processes (`conveyor worker --processes 2`, twice the jobs): "
        f"{span(rates)} jobs/s drained; {rss} MB for the supervisor and both workers.",
        "",
    ]


def wait_cells(res: Results, system: str, workload: str) -> list[str]:
    """Sent/s, p50, p95, p99, max, kept up and the load average of one steady run."""
    if not res.values(system, workload, "achieved_per_s"):
        return ["invalid" if res.invalid(system, workload) else "—", "", "", "", "", "", ""]
    rows = [r for r in res.rows(system, workload) if r["valid"]]
    mark = "≥ " if any(r["figures"].get("wait_is_lower_bound") for r in rows) else ""
    waits = [
        mark + cell(res, system, workload, f"wait_{q}_ms", 1) for q in ("p50", "p95", "p99", "max")
    ]
    kept, rounds = res.kept_up_rounds(system, workload)
    said = "yes" if kept == rounds else "**no**" if not kept else f"{kept} of {rounds} rounds"
    loads = [float(r["load"]) for r in res.rows(system, workload) if "load" in r]
    return [cell(res, system, workload, "achieved_per_s"), *waits, said, span(loads, 1)]


def wait_table(res: Results, rate: int) -> list[str]:
    out = header("system", "sent/s", "p50", "p95", "p99", "max", "kept up", "load avg")
    for s in res.systems:
        out.append(f"| {s} | " + " | ".join(wait_cells(res, s, f"rate{rate}")) + " |")
    return out


def resources_table(res: Results) -> list[str]:
    out = header(
        "system",
        "worker peak RSS, drain (MB)",
        "processes",
        "Redis commands/job: enqueue + drain",
        "Redis CPU/job: enqueue + drain (µs)",
    )
    for s in res.systems:
        procs = res.values(s, "drain", "worker_processes")
        cmds = [
            cell(res, s, "enqueue", "redis_commands_per_job", 1),
            cell(res, s, "drain", "redis_commands_per_job", 1),
        ]
        cpu = [
            cell(res, s, "enqueue", "redis_cpu_us_per_job"),
            cell(res, s, "drain", "redis_cpu_us_per_job"),
        ]
        out.append(
            f"| {s} | {cell(res, s, 'drain', 'worker_rss_mb')} | {span(procs)} | "
            f"{cmds[0]} + {cmds[1]} | {cpu[0]} + {cpu[1]} |"
        )
    return out


#: The figures compared between Conveyor and each peer: label, workload, figure, higher is better.
METRICS = (
    ("bulk enqueue", "enqueue", "jobs_per_s", True),
    ("enqueue one at a time", "enqueue_one", "jobs_per_s", True),
    ("drain", "drain", "jobs_per_s", True),
    ("bulk enqueue, 1 KB", "enqueue_1k", "jobs_per_s", True),
    ("drain, 1 KB arguments and results", "drain_1k", "jobs_per_s", True),
    ("IO at concurrency 100", "io100", "jobs_per_s", True),
    ("IO at concurrency 500", "io500", "jobs_per_s", True),
    *((f"p99 queue wait at {r:,}/s", f"rate{r}", "wait_p99_ms", False) for r in RATES),
    ("enqueue one at a time on SQLite", "sqlite_enqueue_one", "jobs_per_s", True),
    ("p99 queue wait at 200/s on SQLite", "sqlite_rate200", "wait_p99_ms", False),
    ("worker peak RSS (drain)", "drain", "worker_rss_mb", False),
    ("Redis CPU per job (drain)", "drain", "redis_cpu_us_per_job", False),
)


def is_steady(workload: str) -> bool:
    return workload.startswith(("rate", "sqlite_rate"))


def best_peer(res: Results, workload: str, figure: str, higher: bool) -> str | None:
    """The peer with the best median for a figure (for steady runs, of those that kept up
    in every round)."""
    found = []
    for s in res.systems:
        value = res.typical(s, workload, figure)
        if (
            s == "conveyor"
            or value is None
            or (is_steady(workload) and not res.kept_up(s, workload))
        ):
            continue
        found.append((s, value))
    if not found:
        return None
    return (max if higher else min)(found, key=lambda sv: sv[1])[0]


@dataclass(frozen=True, slots=True)
class Comparison:
    """Conveyor against the best peer on one figure.

    Args:
        label: the figure, in words.
        mine: Conveyor's median over the rounds.
        peer: the best peer; None where no peer kept up (then ``note`` says Conveyor's).
        theirs: the peer's median.
        standing: "leads" or "trails" where the two ranges over the rounds do not
            overlap, else "even".
        note: for a steady rate no peer held, in how many rounds Conveyor did.
    """

    label: str
    mine: float
    peer: str | None
    theirs: float
    standing: str
    note: str = ""


def standing(mine: list[float], theirs: list[float], higher: bool) -> str:
    """ "leads" or "trails" when the ranges over the rounds do not overlap, else "even"."""
    if not higher:
        mine, theirs = [-v for v in mine], [-v for v in theirs]
    if min(mine) > max(theirs):
        return "leads"
    return "trails" if max(mine) < min(theirs) else "even"


def comparisons(res: Results) -> list[Comparison]:
    """Conveyor against the best peer on each of :data:`METRICS` that it has."""
    out = []
    for label, workload, figure, higher in METRICS:
        mine = res.typical("conveyor", workload, figure)
        if mine is None:
            continue
        peer = best_peer(res, workload, figure, higher)
        if peer is not None:
            theirs = res.values(peer, workload, figure)
            where = standing(res.values("conveyor", workload, figure), theirs, higher)
            out.append(Comparison(label, mine, peer, statistics.median(theirs), where))
            continue
        kept, rounds = res.kept_up_rounds("conveyor", workload)
        if is_steady(workload) and kept:
            note = f"Conveyor kept up in {kept} of {rounds} rounds, no peer in every round"
            out.append(Comparison(label, mine, None, math.nan, "leads", note))
    return out


def unit(label: str, higher: bool) -> str:
    if higher:
        return "jobs/s"
    return "MB" if "RSS" in label else "µs" if "CPU" in label else "ms"


def ratio_text(c: Comparison, higher: bool, res: Results) -> str:
    """One comparison in words, the factor always ≥ 1 and said of the one ahead, then
    both ranges over the rounds."""
    text = _ratio(c, higher)
    if c.peer is None:
        return text
    workload, figure = next((w, f) for label, w, f, _ in METRICS if label == c.label)
    mine = span(res.values("conveyor", workload, figure), 1)
    theirs = span(res.values(c.peer, workload, figure), 1)
    return f"{text}; rounds: Conveyor {mine}, {c.peer} {theirs}"


def _ratio(c: Comparison, higher: bool) -> str:
    u = unit(c.label, higher)
    if c.peer is None:
        return f"{c.label}: {c.note} (Conveyor's p99 {number(c.mine, 1)} ms, median)"
    mine, theirs = number(c.mine, 1), number(c.theirs, 1)
    if higher and c.mine >= c.theirs:
        return (
            f"{c.label}: {c.mine / c.theirs:.1f}× {c.peer}, the best peer ({mine} vs {theirs} {u})"
        )
    if higher:
        return f"{c.label}: {c.peer} {c.theirs / c.mine:.1f}× Conveyor ({theirs} vs {mine} {u})"
    if c.mine <= c.theirs:
        factor = c.theirs / c.mine
        return (
            f"{c.label}: {mine} {u} vs {theirs} for {c.peer}, the best peer ({factor:.1f}× lower)"
        )
    factor = c.mine / c.theirs
    return f"{c.label}: {c.peer} {theirs} {u} vs Conveyor {mine} ({factor:.1f}× lower)"


SAID = {
    "leads": "Conveyor leads",
    "even": "even (the ranges over the rounds overlap)",
    "trails": "**Conveyor does not lead**",
}


def verdict_lines(res: Results) -> list[str]:
    """Where Conveyor leads and where it does not, against the best peer on each figure
    (for queue wait, the best peer that kept up in every round)."""
    higher = {label: h for label, _, _, h in METRICS}
    lines = [
        "Conveyor against the best peer on each figure (medians of the rounds; a lead is",
        "claimed only where the two ranges over the rounds do not overlap; for queue wait,",
        "the best peer that kept up in every round):",
        "",
    ]
    found = comparisons(res)
    for wanted in ("leads", "even", "trails"):
        lines += [
            f"- {SAID[wanted]} — {ratio_text(c, higher[c.label], res)}"
            for c in found
            if c.standing == wanted
        ]
    return lines


def chart(res: Results, path: Path) -> None:
    """Four panels: bulk enqueue, drain, IO at 500, p99 wait per rate (log scales)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    panels = (
        ("bulk enqueue (jobs/s)", "enqueue", "jobs_per_s"),
        ("drain, no-op jobs (jobs/s)", "drain", "jobs_per_s"),
        ("IO 10 ms, concurrency 500 (jobs/s)", "io500", "jobs_per_s"),
    )
    for ax, (title, workload, figure) in zip(axes.flat, panels, strict=False):
        _bars(ax, res, [(workload, figure, "")], title)
    _bars(
        axes.flat[3],
        res,
        [(f"rate{r}", "wait_p99_ms", f"{r:,}/s") for r in RATES],
        "p99 queue wait (ms), hatched: fell behind",
    )
    date, host = res.data["date"][:10], res.data["host"]
    machine = f"{host['cpu']}, {host['cores']} cores"
    fig.suptitle(f"Conveyor and its peers, one worker process each — {date}, {machine}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax: Any, res: Results, series: list[tuple[str, str, str]], title: str) -> None:
    width = 0.8 / len(series)
    for i, (workload, figure, label) in enumerate(series):
        xs, heights, low, high, hatches = [], [], [], [], []
        for x, s in enumerate(res.systems):
            values = res.values(s, workload, figure)
            if not values:
                continue
            mid = statistics.median(values)
            xs.append(x + (i - (len(series) - 1) / 2) * width)
            heights.append(mid)
            low.append(mid - min(values))
            high.append(max(values) - mid)
            hatches.append("//" if is_steady(workload) and not res.kept_up(s, workload) else "")
        bars = ax.bar(xs, heights, width, yerr=[low, high], capsize=2, label=label or None)
        for bar, hatch in zip(bars, hatches, strict=True):
            bar.set_hatch(hatch)
    ax.set_xticks(range(len(res.systems)), res.systems, rotation=30)
    ax.set_yscale("log")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(loc="upper left", fontsize=8)


#: What every reader of the tables should know (details: bench/peers/README.md).
CAVEATS = [
    "Caveats:",
    "",
    "- The producer, the worker and Redis share the host's cores, and the host is shared with",
    "  other work (the load average is recorded per row in the results file); compare",
    "  systems within this run, not with runs of other days.",
    "- Results: the peers store none except in the 1 KB rows (where the system offers that",
    "  choice, it was taken for them); Conveyor always stores each job's record and result.",
    "- RQ runs one job at a time per worker process, so its IO rows cannot pass 100 jobs/s",
    "  and time out by design. Dramatiq's and Taskiq's worker commands are a supervisor",
    "  plus one worker process; both are in their memory figures.",
    "- A queue wait marked ≥ includes jobs still waiting when the run stopped waiting: the",
    "  true figure is higher.",
]


def section(res: Results, source: str) -> list[str]:
    """The generated section of docs/benchmarks.md."""
    d, host, redis = res.data, res.data["host"], res.data["redis"]
    sizes = d["sizes"]
    lines = [
        f"## {TITLE}",
        "",
        f"{d['date'][:10]}, {host['cpu']}, {host['cores']} cores, Python {host['python']}, "
        f"Redis {redis['redis_version']} (AOF, `appendfsync {redis.get('appendfsync', '?')}`) "
        f"on loopback; {d['rounds']} rounds, systems alternating; load average "
        f"{d['load_before'][0]:.2f} before, {d['load_after'][0]:.2f} after; "
        f"{d['seconds'] / 60:.0f} minutes. Results: `{source}`; how each system was "
        "configured and why: [bench/peers/README.md](../bench/peers/README.md).",
        "",
        f"One worker process per system; no-op jobs ({sizes['jobs']:,} for enqueue and drain), "
        f"IO jobs that sleep 10 ms (40 per slot of concurrency, at most {sizes['jobs']:,}), "
        f"steady arrival for {sizes['seconds']:.0f} s per rate. Every task calls the same "
        "completion counter; a row counts only when every timed job completed exactly once. "
        "Ranges are min–max over the rounds.",
        "",
        f"![Conveyor and its peers]({Path(CHART).name})",
        "",
        "Throughput (jobs/s):",
        "",
        *throughput_table(res),
        "",
        "\\* Not every round counted: the rounds that did not are listed at the end.",
        "",
        *processes_lines(res),
    ]
    for rate in RATES:
        lines += [f"Queue wait at a steady {rate:,} jobs/s (ms):", "", *wait_table(res, rate), ""]
    payload = payload_table(res)
    if payload:
        lines += ["1 KB arguments and 1 KB results, stored by each system (jobs/s):", ""]
        lines += [*payload, ""]
    sqlite = sqlite_table(res)
    if sqlite:
        lines += ["On SQLite (fsync on, the same disk; queue wait at a steady 200 jobs/s):", ""]
        lines += [*sqlite, ""]
    lines += ["Resources:", "", *resources_table(res), "", *verdict_lines(res), "", *CAVEATS, ""]
    lines += _invalid_lines(res)
    return lines


def _invalid_lines(res: Results) -> list[str]:
    bad = [
        f"- {r['system']}, {r['workload']}, round {r['round']}: {r['check']}"
        for r in res.data["rows"]
        if not r["valid"]
    ]
    return ["Rows that failed the exactly-once check or did not run:", "", *bad, ""] if bad else []


def short_text(c: Comparison, higher: bool) -> str:
    """One comparison in a few words, for the README."""
    u = unit(c.label, higher)
    if c.peer is None:
        return f"{c.label} ({c.note})"
    mine, theirs = number(c.mine, 1), number(c.theirs, 1)
    if higher:
        if c.mine >= c.theirs:
            return f"{c.label} ({c.mine / c.theirs:.1f}× {c.peer})"
        return f"{c.label} ({c.peer} {c.theirs / c.mine:.1f}× faster)"
    if c.mine <= c.theirs:
        return f"{c.label} ({mine} vs {theirs} {u} for {c.peer})"
    return f"{c.label} ({c.peer} {theirs} vs {mine} {u})"


def readme_lines(res: Results, source: str) -> list[str]:
    """The README's lines: where Conveyor leads its best peer and where it does not."""
    higher = {label: h for label, _, _, h in METRICS}
    parts: dict[str, list[str]] = {"leads": [], "even": [], "trails": []}
    for c in comparisons(res):
        if not c.label.startswith(("worker", "Redis")):
            parts[c.standing].append(short_text(c, higher[c.label]))
    d, host = res.data, res.data["host"]
    text = (
        f"**Against its peers** (`make bench-peers`, {d['date'][:10]}, {host['cpu']}, "
        f"{host['cores']} cores, Python {host['python']}, Redis {d['redis']['redis_version']}; "
        f"one worker process each, medians of {d['rounds']} rounds in `{source}`), against "
        "the best peer on each figure: Conveyor leads on " + "; ".join(parts["leads"]) + "."
    )
    if parts["even"]:
        text += " Even (the rounds overlap) on " + "; ".join(parts["even"]) + "."
    if parts["trails"]:
        text += " It does not lead on " + "; ".join(parts["trails"]) + "."
    return [text + f" Tables and caveats: [docs/benchmarks.md](docs/benchmarks.md#{ANCHOR})."]


def splice(path: Path, lines: list[str], anchor: str | None = None) -> None:
    """Replace the text between the markers; without them, add it after ``anchor``
    (or at the end)."""
    text = path.read_text()
    block = "\n".join([BEGIN, *lines, END])
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    elif anchor and anchor in text:
        text = text.replace(anchor, anchor + "\n\n" + block, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    source = Path(argv[0]).resolve()
    res = Results(json.loads(source.read_text()))
    relative = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(source)
    lines = section(res, relative)
    print("\n".join(lines))
    if "--print" in argv:
        return
    chart(res, ROOT / CHART)
    splice(ROOT / "docs" / "benchmarks.md", lines)
    splice(
        ROOT / "README.md",
        readme_lines(res, relative),
        anchor="More in [docs/benchmarks.md](docs/benchmarks.md).",
    )


if __name__ == "__main__":
    main()
