"""``make bench-peers``: Conveyor and its peers, measured in one run on one Redis.

For each round, for each workload, each system in turn (the order rotates every round):
the Redis is emptied, the system's client starts in its own virtualenv, and the
workload runs with one worker process. Every row says whether each timed job completed
exactly once; one that did not is marked invalid and its figures are not reported.

Usage::

    python -m bench.peers.run [--quick] [--systems a,b] [--workloads drain,io100]
                              [--rounds N] [--jobs N] [--seconds S] [--json FILE]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.harness import redis_server
from bench.peers import report
from bench.peers.meter import RedisMeter
from bench.peers.procs import ROOT, python
from bench.peers.systems import SYSTEMS
from bench.peers.workloads import ONLY, WORKLOADS, Session, Sizes

RESULTS = ROOT / "bench" / "results"
QUICK = "drain,io100,rate1000"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--workloads", help=f"default: all ({','.join(WORKLOADS)})")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--jobs", type=int, default=20_000, help="drain size; IO runs 40 per slot, at most this"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each steady-rate run")
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="longest wait for a workload's jobs"
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="longest wait for a steady run's backlog"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke run: small sizes, one round, {QUICK}"
    )
    parser.add_argument(
        "--json", type=Path, help="results file (default bench/results/peers-DATE.json)"
    )
    parser.add_argument("--no-report", action="store_true", help="skip the table, chart and docs")
    parser.add_argument("--keep", type=Path, help="keep logs and counter files in this directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.jobs, args.seconds, args.timeout, args.grace = 1, 1_000, 1.0, 10.0, 2.0
        args.workloads = args.workloads or QUICK
    args.workloads = args.workloads or ",".join(WORKLOADS)
    return args


def host() -> dict[str, Any]:
    """What the run ran on."""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }


def versions(systems: list[str]) -> dict[str, str]:
    """Each system's installed version, as its own virtualenv reports it."""
    out = {}
    for system in systems:
        package = "conveyor" if system == "conveyor" else system
        code = f"import importlib.metadata as m; print(m.version({package!r}))"
        result = subprocess.run([python(system), "-c", code], capture_output=True, text=True)
        out[system] = result.stdout.strip() or f"unknown: {result.stderr.strip()[-200:]}"
    return out


def run_one(
    system: str, workload: str, url: str, meter: RedisMeter, directory: Path, sizes: Sizes
) -> list[dict[str, Any]]:
    """One system through one workload; a failure becomes an invalid row, not a crash."""
    session = None
    try:
        session = Session(system, url, meter, directory, sizes, workload)
        return WORKLOADS[workload](session)
    except Exception as exc:
        (directory / "driver-error.log").write_text(traceback.format_exc())
        message = f"INVALID: {type(exc).__name__}: {exc}"
        return [
            {"workload": workload, "valid": False, "check": message, "figures": {}, "config": ""}
        ]
    finally:
        if session is not None:
            session.close()


def show(system: str, round_: int, row: dict[str, Any]) -> None:
    figures = row["figures"]
    key = next((k for k in ("jobs_per_s", "wait_p99_ms") if k in figures), None)
    value = f"{key}={figures[key]:,.1f}" if key else ""
    print(
        f"  round {round_} {row['workload']:<12} {system:<9} {value:<24} {row['check']}", flush=True
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    systems = [s for s in args.systems.split(",") if s]
    workloads = [w for w in args.workloads.split(",") if w]
    missing = [s for s in systems if not Path(python(s)).exists()]
    if missing:
        sys.exit(f"no virtualenv for {', '.join(missing)}: run `make bench-peers-venvs` first")
    sizes = Sizes(jobs=args.jobs, seconds=args.seconds, timeout=args.timeout, grace=args.grace)
    started = dt.datetime.now(dt.UTC)
    results: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "host": host(),
        "load_before": os.getloadavg(),
        "versions": versions(systems),
        "sizes": vars(sizes),
        "rounds": args.rounds,
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="peers-") as scratch:
        tmp = args.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        _rounds(args, systems, workloads, sizes, tmp, results)
    results["load_after"] = os.getloadavg()
    results["seconds"] = round(time.time() - started.timestamp(), 1)
    return results


def _rounds(
    args: argparse.Namespace,
    systems: list[str],
    workloads: list[str],
    sizes: Sizes,
    tmp: Path,
    results: dict[str, Any],
) -> None:
    with redis_server(tmp) as url:
        meter = RedisMeter(url)
        results["redis"] = meter.server()
        for round_ in range(1, args.rounds + 1):
            # Rotate the order each round, so no system always runs first or last.
            shift = (round_ - 1) % len(systems)
            order = systems[shift:] + systems[:shift]
            for workload in workloads:
                for system in order:
                    if system not in ONLY.get(workload, systems):
                        continue
                    directory = Path(tmp) / f"r{round_}" / workload / system
                    directory.mkdir(parents=True)
                    for row in run_one(system, workload, url, meter, directory, sizes):
                        row.update(system=system, round=round_, load=os.getloadavg()[0])
                        results["rows"].append(row)
                        show(system, round_, row)


def main(argv: list[str] | None = None) -> None:
    # A stop request unwinds like Ctrl-C, so workers and the Redis are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped (SIGTERM)"))
    args = parse_args(argv)
    results = run(args)
    path = args.json or RESULTS / f"peers-{results['date'][:10]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"results: {path}")
    if not args.no_report:
        report.main([str(path)])


if __name__ == "__main__":
    main()
