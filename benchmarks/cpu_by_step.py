"""Where a run's CPU goes, step by step and library by library, by hand (not a test).

    .venv/bin/python benchmarks/cpu_by_step.py --people 1200000 --files monthly
    .venv/bin/python benchmarks/cpu_by_step.py --people 1200000 --files monthly --monthly

A run on two cores keeps them 1.6-1.8 busy in every heavy step, so it is made faster only by
less CPU work, and py-spy sees only Python's share of it. This samples the whole process tree
of one `earlyhelp run` with Linux's `perf` (199 times a second on each core, the clusterer's and
the packs' worker processes included), places each sample in the step that was running when it
was taken (the run's own Dagster event log gives each step's start and end), and sums the CPU
seconds of each step by where they were spent: DuckDB, Polars, the Python interpreter, the C
library (memcpy, malloc), the kernel (page faults, zeroing fresh pages, reading files) and
DuckDB's string compression (dict_fsst and zstd, when tables are written), then names each
heavy step's busiest functions. The figures are kept in results/cpu_by_step_<residents>.md
(or _monthly.md). With --monthly the run is a month on top of last month's cold run (made
first, not sampled), as `benchmarks/pipeline.py` measures it.

Needs `perf` (Debian's linux-perf) and leave to use it: as root, or with
/proc/sys/kernel/perf_event_paranoid at 1 or less for the kernel's share to be counted (at 2 a
user samples only their processes' own code). What sampling itself costs was not measured apart:
the sampled cold run at 1.2M spent 92.8 s in its steps, in an hour when unsampled runs took 95-97 s
in all.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import county_arguments  # noqa: E402
from pipeline import RAW_CHECK_STEPS, county, last_month, machine, publish, step_windows  # noqa: E402

from features.calendar import previous_month  # noqa: E402  (the checkout's root is on the path once pipeline is imported)

ROOT = Path(__file__).resolve().parents[1]
FREQUENCY = 199  # samples a second on each core: not a multiple of any timer the run keeps

#: Where a sample was spent, by the file its function is in; the string compression by name.
PLACES = ("DuckDB", "Polars", "Python", "C library", "kernel", "DuckDB compressing strings", "other")
_SAMPLE = re.compile(r"^\s*(?P<time>\d+\.\d+):\s+\S+\s+(?P<symbol>.*?)\s+\((?P<file>[^()]*)\)\s*$")


def place(symbol: str, file: str) -> str:
    if "fsst" in symbol.lower() or "zstd" in symbol.lower():
        return "DuckDB compressing strings"
    for marker, name in (("kernel", "kernel"), ("_duckdb", "DuckDB"), ("polars", "Polars"), ("libpython", "Python"), ("libc.so", "C library")):
        if marker in file:
            return name
    return "other"


def stage(step: str | None) -> str:
    """Steps grouped as `benchmarks/pipeline.py` groups them: the sources' loads, their checks."""
    if step is None:
        return "the start, between steps and the summary"
    if step.startswith("raw_") and step.endswith(RAW_CHECK_STEPS):
        return "each source's checks (contract suites)"
    if step.startswith("raw_"):
        return "each source's load"
    return step


def sampled_run(landing: Path, month: str, out: Path, data: Path) -> None:
    if shutil.which("perf") is None:
        raise SystemExit("perf is not installed (Debian: apt-get install linux-perf)")
    command = ["perf", "record", "-q", "-k", "CLOCK_REALTIME", "-F", str(FREQUENCY), "-o", str(data), "--",
               sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", month, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the sampled run failed (exit {done.returncode}): {done.stderr[-2000:]}")


def cpu_by_stage(data: Path, windows: dict[str, tuple[float, float]]) -> tuple[dict[str, collections.Counter], dict[str, collections.Counter]]:
    """(stage -> place -> samples, stage -> function -> samples)."""
    ordered = sorted((start, end, step) for step, (start, end) in windows.items())
    script = subprocess.Popen(["perf", "script", "-i", str(data), "-F", "time,ip,sym,dso"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    places: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    functions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in script.stdout:
        sample = _SAMPLE.match(line)
        if sample is None:
            continue
        at = float(sample["time"])
        # steps run one at a time (the in-process executor): the first whose window holds it
        step = next((s for start, end, s in ordered if start <= at <= end), None)
        where = stage(step)
        places[where][place(sample["symbol"], sample["file"])] += 1
        functions[where][sample["symbol"][:90]] += 1
    script.wait()
    return places, functions


def main() -> None:
    args = county_arguments(__doc__, [1_200_000], files=True, monthly=True)
    for people in args.people:
        landing, _, _ = county(people, args.seed, args.month, args.files)
        with tempfile.TemporaryDirectory(prefix="earlyhelp-cpu-") as scratch:
            out, data = Path(scratch) / "out", Path(scratch) / "perf.data"
            if args.monthly:
                subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--landing", str(last_month(landing)), "--month", previous_month(args.month), "--out", str(out)],
                               cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            sampled_run(landing, args.month, out, data)
            windows = step_windows(out, cwd=ROOT)
            places, functions = cpu_by_stage(data, windows)
        walls: dict[str, float] = collections.Counter()
        for step, (start, end) in windows.items():
            walls[stage(step)] += end - start
        seconds = {where: sum(counts.values()) / FREQUENCY for where, counts in places.items()}
        total = sum(seconds.values())
        kind = "a month on top of last month's cold run" if args.monthly else "a cold run"
        lines = [
            f"Machine: {machine()}; {people:,} residents, month {args.month}, seed {args.seed}, {args.files} files; {kind}, sampled by perf "
            f"{FREQUENCY} times a second on each core; CPU seconds of the run's whole process tree (its worker processes included), "
            f"by the step running when each sample was taken. One run: the places' shares hold from run to run better than the seconds do.",
            "",
            "| step | wall (s) | CPU (s) | " + " | ".join(PLACES) + " |",
            "| --- | ---: | ---: | " + " | ".join("---:" for _ in PLACES) + " |",
        ]
        for where in sorted(seconds, key=lambda w: -seconds[w]):
            wall = f"{walls[where]:.1f}" if where in walls else "-"
            lines.append(f"| {where} | {wall} | {seconds[where]:.1f} | " + " | ".join(f"{places[where][p] / FREQUENCY:.1f}" for p in PLACES) + " |")
        everywhere = collections.Counter()
        for counts in places.values():
            everywhere.update(counts)
        lines.append(f"| all | {sum(walls.values()):.1f} | {total:.1f} | " + " | ".join(f"{everywhere[p] / FREQUENCY:.1f}" for p in PLACES) + " |")
        lines += ["", "Shares of all the CPU: " + ", ".join(f"{p} {everywhere[p] / FREQUENCY / total:.0%}" for p in PLACES) + "."]
        lines += ["", "The busiest functions of the steps that took 5 CPU-seconds or more (`[unknown]`: a function DuckDB's library does not name):", ""]
        for where in sorted(seconds, key=lambda w: -seconds[w]):
            if seconds[where] >= 5:
                busiest = "; ".join(f"{name} {n / FREQUENCY:.1f}" for name, n in functions[where].most_common(8))
                lines.append(f"- {where} ({seconds[where]:.1f} s): {busiest}")
        command = f"benchmarks/cpu_by_step.py --people {people} --files {args.files}" + (" --monthly" if args.monthly else "")
        publish(f"cpu_by_step_{people}{'_monthly' if args.monthly else ''}.md", command, lines)


if __name__ == "__main__":
    main()
