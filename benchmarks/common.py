"""Shared benchmark plumbing: machine description, timing, peak memory of a child process, JSON output."""

from __future__ import annotations

import datetime
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path


from igdefense.atomic import atomic_write
from igdefense.eval.recorded import RecordedRun, recorded_command
from igdefense.machine import machine

RESULTS = Path(__file__).parent / "results"


def median_time(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB. Reads VmHWM, which starts afresh in a
    new process (getrusage's ru_maxrss carries the parent's peak over fork + exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(script: str, args: list[str]) -> dict:
    """Run ``script --worker args`` in a fresh process (so its peak memory is its own); parse its JSON."""
    out = subprocess.run([sys.executable, script, "--worker", *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_results(name: str, payload: dict, path: Path | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json`` (or ``path``) atomically with command, machine and date."""
    RESULTS.mkdir(exist_ok=True)
    payload = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **payload}
    path = path or RESULTS / f"{name}.json"
    atomic_write(path, json.dumps(payload, indent=2) + "\n")
    return path


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def recorded_run(folder: Path, command: str) -> RecordedRun:
    """The specs an ``igdefense <command>`` report's run used: recorded in its report.json, or for a
    report from before they were, what its recorded command line resolves to (``--dry-run``)."""
    report = json.loads((folder / "report.json").read_text())
    if recorded_command(report) != command:
        raise SystemExit(f"{folder} is not an `igdefense {command}` report: its command is "
                         f"{report.get('run', {}).get('command')!r}")
    if "specs" in report:
        return RecordedRun.read(folder)
    line = shlex.split(report["run"]["command"])
    out = subprocess.run([sys.executable, "-m", "igdefense.cli", *line[1:], "--dry-run"], check=True,
                         capture_output=True, text=True)
    return RecordedRun.from_json(json.loads(out.stdout), str(folder))
