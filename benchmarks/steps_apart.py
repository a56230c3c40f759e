"""A cold run with every step in the run's process against one with the heavy steps apart, by hand.

    .venv/bin/python benchmarks/steps_apart.py --people 1200000 --files monthly
    .venv/bin/python benchmarks/steps_apart.py --people 200000 --files monthly --repeat 2

Runs `earlyhelp run` on a cached county (benchmarks/pipeline.py's) into a fresh output folder,
alternately in one process and with `--steps-apart` (one, apart, apart, one: ABBA, so the
machine's drift falls on both alike), each measured as benchmarks/pipeline.py measures a run:
wall time, and the peak of the run's process and every process it starts, resident memory summed
five times a second. Prints each run with its heaviest steps, then the medians and their ratio,
and writes benchmarks/results/steps_apart_<people>.md.
"""

from __future__ import annotations

import re
import shutil
import statistics
import sys

from common import CACHE, county_arguments, measured
from pipeline import county, machine, publish

DONE = re.compile(r"\]\s+(\S+)\s+done\s+([\d.]+)s")
HEAVY = ("raw_school_attendance", "person_records", "person_links", "family_members", "scorecard_model", "locality_lists")


def _run(landing, month: str, apart: bool) -> tuple[float, float, dict[str, float]]:
    out = CACHE / "steps_apart_out"
    shutil.rmtree(out, ignore_errors=True)
    steps: dict[str, float] = {}

    def line(_: float, text: str) -> None:
        found = DONE.search(text)
        if found:
            steps[found.group(1)] = float(found.group(2))

    command = [sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", month, "--out", str(out)]
    run = measured(command + (["--steps-apart"] if apart else []), on_line=line)
    shutil.rmtree(out, ignore_errors=True)
    return run.seconds, run.tree_peak, steps


def main() -> None:
    args = county_arguments(__doc__, [1_200_000], repeat=True, files=True)
    repeat = max(args.repeat, 2)
    for people in args.people:
        landing, _, _ = county(people, args.seed, args.month, args.files)
        order = [False, True, True, False] * (repeat // 2) + ([False, True] if repeat % 2 else [])
        runs: dict[bool, list[tuple[float, float, dict[str, float]]]] = {False: [], True: []}
        lines = [f"Machine: {machine()}; {people:,} residents, month {args.month}, seed {args.seed}, {args.files} files; cold runs, alternately.", "",
                 "| run | way | seconds | peak, whole run (MiB) | " + " | ".join(HEAVY) + " |", "| ---: | --- | ---: | ---: |" + " ---: |" * len(HEAVY)]
        for number, apart in enumerate(order, 1):
            seconds, peak, steps = _run(landing, args.month, apart)
            runs[apart].append((seconds, peak, steps))
            way = "steps apart" if apart else "one process"
            lines.append(f"| {number} | {way} | {seconds:.1f} | {peak:,.0f} | " + " | ".join(f"{steps.get(s, 0.0):.1f}" for s in HEAVY) + " |")
            print(lines[-1], flush=True)
        one, apart_ = ([statistics.median(r[i] for r in runs[way]) for i in (0, 1)] for way in (False, True))
        lines += ["", f"Medians: one process {one[0]:.1f} s, {one[1]:,.0f} MiB; steps apart {apart_[0]:.1f} s, {apart_[1]:,.0f} MiB "
                  f"(time x{apart_[0] / one[0]:.2f}, memory x{apart_[1] / one[1]:.2f})."]
        publish(f"steps_apart_{people}.md", f"benchmarks/steps_apart.py --people {people} --files {args.files} --repeat {repeat}", lines)


if __name__ == "__main__":
    main()
