"""Which step of a run holds the memory, by hand (not a test).

    .venv/bin/python benchmarks/step_memory.py --people 1200000 --files monthly             # the cold run
    .venv/bin/python benchmarks/step_memory.py --people 1200000 --files monthly --monthly   # the month after

Runs `earlyhelp run` on a cached county (benchmarks/pipeline.py's, generated if missing) in a
fresh process, reads the memory of that process and every process it starts (the steps it runs
apart, the packs' workers; their resident memory summed) five times a second, and gives
each step the highest reading between the previous step's completion and its own, as the
run's progress lines report them. With --monthly, last month is run first (every source
without its latest file) and the month is measured on top of it, as benchmarks/pipeline.py
does. Prints the steps by their peak and writes benchmarks/results/step_memory[_monthly].md.

A step's figure is what the run held while it ran, including what earlier steps run in the
run's own process left allocated (neither Polars' allocator nor DuckDB's hands freed memory back
at once), so the order of the steps matters; a sampled peak can miss a spike shorter than 0.2 s.
The run's own process's peak (ru_maxrss) is printed beside it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from common import CACHE, county_arguments, measured
from pipeline import county, last_month, machine, publish

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from features.calendar import previous_month  # noqa: E402

PROGRESS = re.compile(r"\[\s*\d+/\d+\]\s+(\S+)\s+(?:done|FAILED|skipped)\s+([\d.]+)s")


def sampled_run(landing: Path, month: str, out: Path) -> tuple[float, int, list[tuple[str, float, float]]]:
    """(wall seconds, the run process's own peak in MiB, [(step, seconds, sampled peak MiB)] in completion order)."""
    completions: list[tuple[float, str, float]] = []

    def completed(at: float, line: str) -> None:
        found = PROGRESS.search(line)
        if found:
            completions.append((at, found.group(1), float(found.group(2))))

    try:
        run = measured([sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", month, "--out", str(out)], on_line=completed)
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"earlyhelp run failed ({exc.returncode}); its log is under {out}/logs") from None
    steps, since = [], 0.0
    for at, step, step_seconds in completions:
        within = [mib for t, mib in run.samples if since <= t <= at]
        # a step shorter than the sampling interval: the reading nearest its completion
        nearest = min(run.samples, key=lambda sample: abs(sample[0] - at))[1] if run.samples else 0.0
        steps.append((step, step_seconds, max(within) if within else nearest))
        since = at
    return run.seconds, run.own_peak, steps


def main() -> None:
    parser_args = county_arguments(__doc__, [1_200_000], files=True, monthly=True)
    for people in parser_args.people:
        landing, _, _ = county(people, parser_args.seed, parser_args.month, parser_args.files)
        out = CACHE / f"step_memory_{people}"
        shutil.rmtree(out, ignore_errors=True)
        if parser_args.monthly:
            # last month's run first, as benchmarks/pipeline.py's monthly run
            subprocess.run(
                [sys.executable, "-m", "pipelines.cli", "run", "--landing", str(last_month(landing)), "--month", previous_month(parser_args.month), "--out", str(out)],
                stdout=subprocess.DEVNULL, check=True,
            )
        seconds, peak, steps = sampled_run(landing, parser_args.month, out)
        kind = "monthly run (last month's run before it)" if parser_args.monthly else "cold run"
        lines = [
            f"Machine: {machine()}; {people:,} residents, month {parser_args.month}, seed {parser_args.seed}, {parser_args.files} files; {kind}.",
            "",
            f"Run: {seconds:.1f} s; the run's own process peaked at {peak:,} MiB (ru_maxrss); each step's sampled peak of the run's process and all it started (RSS summed) below, highest first.",
            "",
            "| step | seconds | sampled peak, whole run (MiB) |",
            "| --- | ---: | ---: |",
            *[f"| {step} | {step_seconds:.1f} | {rss:,.0f} |" for step, step_seconds, rss in sorted(steps, key=lambda s: -s[2])],
        ]
        suffix = "_monthly" if parser_args.monthly else ""
        command = f"benchmarks/step_memory.py --people {people} --files {parser_args.files}" + (" --monthly" if parser_args.monthly else "")
        publish(f"step_memory{suffix}.md", command, lines)


if __name__ == "__main__":
    main()
