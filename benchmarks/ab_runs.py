"""Two revisions' whole runs side by side, by hand (not a test).

    .venv/bin/python benchmarks/ab_runs.py --base b6a75d6 --new HEAD
    .venv/bin/python benchmarks/ab_runs.py --base HEAD~3 --new HEAD --people 200000 --repeat 5 --monthly
    .venv/bin/python benchmarks/ab_runs.py --base HEAD~1 --new HEAD --repeat 2 --files monthly --monthly --oldest-gone
    .venv/bin/python benchmarks/ab_runs.py --base HEAD --new HEAD --new-env EARLYHELP_POLARS_ALLOCATOR=dirty_decay_ms:500,muzzy_decay_ms:1000

A machine like this one is noisy: the same code's cold run at 1.2M residents took 95 to 125 s
within one hour, and a change worth 3 s is seen only in runs made side by side. Each revision is
checked out in a worktree of its own (`benchmarks/cache` linked in, so the counties are shared)
and its runs alternate with the other's: base, new, base, new... Each run is timed (wall, CPU of
its whole process tree, peak memory), its steps are read from its Dagster log, and the medians
of each revision and their ratio are printed, with every step of a second or more. The two
revisions' last outputs are compared (`compare_outputs`): a change meant to be only faster must
leave every one the same. With --monthly, each run is a month on top of last month's cold run
(made first, untimed), as `benchmarks/pipeline.py` measures it; with --oldest-gone as well, the
month's landing folder lacks each source's oldest file, as a council that deletes files past
retention leaves it (`pipeline.oldest_gone`). The figures are kept in
benchmarks/results/ab_runs_<residents>.md, a month's in ab_runs_<residents>_monthly[_oldest_gone].md.

The revisions run with this checkout's virtual environment; their own code is what each imports
(its worktree is the working folder). Worktrees are removed at the end. `--base-env` and
`--new-env KEY=VALUE` (each as often as needed) set an environment variable for one side's runs
only: a setting tried without a commit (an allocator's, say), one revision against itself. Polars'
allocator is asked through `EARLYHELP_POLARS_ALLOCATOR`: a run puts its own decay settings after
whatever `_RJEM_MALLOC_CONF` holds (`pipelines.POLARS_ALLOCATOR`), so decays set there lose.
Besides wall, CPU and peak, each run's kernel time and minor page faults are printed: memory an
allocator hands back to the system and takes again costs a fault a page, and these two move
less from run to run than the wall time does.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, county_arguments, measured  # noqa: E402
from compare_outputs import compare_outputs  # noqa: E402
from pipeline import county, last_month, machine, oldest_gone, on_its_day, publish, step_times  # noqa: E402

from features.calendar import previous_month  # noqa: E402  (the checkout's root is on the path once pipeline is imported)

ROOT = Path(__file__).resolve().parents[1]


def _worktree(revision: str, folder: Path) -> Path:
    subprocess.run(["git", "worktree", "add", "--detach", str(folder), revision], cwd=ROOT, check=True, capture_output=True)
    (folder / "benchmarks" / "cache").unlink(missing_ok=True)
    (folder / "benchmarks" / "cache").symlink_to(CACHE)
    return folder


def _run(tree: Path, landing: Path, month: str, out: Path, env: dict[str, str]) -> dict:
    command = [sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", month, "--out", str(out)]
    run = measured(command, cwd=tree, env=on_its_day(month, env), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"seconds": run.seconds, "cpu": run.cpu_seconds, "system": run.system_seconds, "faults": run.page_faults / 1e6, "peak": run.tree_peak,
            "steps": step_times(out, cwd=tree)}


def _environments(arguments: list[str]) -> tuple[dict[str, dict[str, str]], str]:
    """Each side's environment from the --base-env and --new-env KEY=VALUE given (taken out of
    `arguments`), and those flags as given, for the results' title."""
    settings: dict[str, dict[str, str]] = {"base": {}, "new": {}}
    given = []
    for side in settings:
        flag = f"--{side}-env"
        while flag in arguments:
            at = arguments.index(flag)
            setting = arguments[at + 1] if at + 1 < len(arguments) else ""
            if "=" not in setting:
                raise SystemExit(f"give {flag} KEY=VALUE")
            key, value = setting.split("=", 1)
            settings[side][key] = value
            given.append(f"{flag} {setting}")
            del arguments[at:at + 2]
    return {side: {**os.environ, **extra} for side, extra in settings.items()}, "".join(f" {g}" for g in given)


def main() -> None:
    arguments = sys.argv[1:]
    environments, env_flags = _environments(arguments)
    revisions = {}
    for flag in ("--base", "--new"):
        if flag not in arguments:
            raise SystemExit(f"give {flag} REVISION (a commit, a branch, HEAD~2)")
        at = arguments.index(flag)
        revisions[flag[2:]] = arguments[at + 1]
        del arguments[at:at + 2]
    # the month's landing folder without each source's oldest file, as a council deleting files
    # past retention leaves it (`pipeline.oldest_gone`): a month only
    gone_flag = "--oldest-gone" in arguments
    arguments = [a for a in arguments if a != "--oldest-gone"]
    sys.argv = [sys.argv[0], *arguments]
    args = county_arguments(__doc__, [1_200_000], repeat=True, files=True, monthly=True)
    if gone_flag and not args.monthly:
        raise SystemExit("--oldest-gone is a month's: give --monthly too")
    commits = {name: subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip() for name, rev in revisions.items()}
    with tempfile.TemporaryDirectory(prefix="earlyhelp-ab-") as scratch:
        folder = Path(scratch)
        trees = {name: _worktree(commit, folder / name) for name, commit in commits.items()}
        try:
            for people in args.people:
                landing, _, _ = county(people, args.seed, args.month, args.files)
                runs: dict[str, list[dict]] = {name: [] for name in trees}
                for attempt in range(args.repeat):
                    for name, tree in trees.items():
                        out = folder / f"out_{name}"
                        shutil.rmtree(out, ignore_errors=True)
                        if args.monthly:
                            subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--landing", str(last_month(landing)), "--month", previous_month(args.month), "--out", str(out)],
                                           cwd=tree, env=on_its_day(previous_month(args.month), environments[name]), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                        figures = _run(tree, oldest_gone(landing) if gone_flag else landing, args.month, out, environments[name])
                        runs[name].append(figures)
                        print(f"{people:,} residents, {name} ({commits[name]}) run {attempt + 1} of {args.repeat}: {figures['seconds']:.1f} s, "
                              f"CPU {figures['cpu']:.1f} s ({figures['system']:.1f} in the kernel), {figures['faults']:.2f}M page faults, peak {figures['peak']:,.0f} MiB", flush=True)
                verdicts = compare_outputs(folder / "out_base", folder / "out_new")
                differ = [f"{what}: {verdict}" for what, verdict in verdicts if verdict != "same"]
                # a month's comparison beside the cold one's, not over it
                publish(f"ab_runs_{people}{'_monthly' if args.monthly else ''}{'_oldest_gone' if gone_flag else ''}.md",
                        f"benchmarks/ab_runs.py --base {revisions['base']} --new {revisions['new']}{env_flags} --people {people} --repeat {args.repeat}"
                        + (" --monthly" if args.monthly else "") + (" --oldest-gone" if gone_flag else "") + f" --files {args.files}",
                        _lines(people, args, commits, runs, verdicts, differ, env_flags, gone_flag))
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)


def _lines(people: int, args, commits: dict[str, str], runs: dict[str, list[dict]], verdicts: list, differ: list[str], env_flags: str = "", gone: bool = False) -> list[str]:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    kind = "a month on top of last month's cold run" if args.monthly else "cold runs"
    if gone:
        kind += ", each source's oldest file gone from the month's landing folder"
    lines = [
        f"Machine: {machine()}; {people:,} residents, month {args.month}, seed {args.seed}, {args.files} files; {kind}, "
        f"base {commits['base']} and new {commits['new']} alternating, {args.repeat} each"
        + (f"; with{env_flags} (an environment variable for that side's runs only)." if env_flags else "."),
        "",
        "| | base | new | new / base (medians) | base, each run | new, each run |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    rows = (("wall (s)", "seconds"), ("CPU, the run's whole process tree (s)", "cpu"), ("of which in the kernel (s)", "system"),
            ("minor page faults (millions)", "faults"), ("peak memory (MiB)", "peak"))
    for label, key in rows:
        decimals = 2 if key == "faults" else 1
        values = {name: ", ".join(f"{r[key]:,.{decimals}f}" for r in runs[name]) for name in runs}
        lines.append(f"| {label} | {median('base', key):,.{decimals}f} | {median('new', key):,.{decimals}f} | {median('new', key) / median('base', key):.3f} | {values['base']} | {values['new']} |")
    steps = sorted({s for name in runs for r in runs[name] for s, t in r["steps"].items() if t >= 1.0}, key=lambda s: -statistics.median(r["steps"].get(s, 0) for r in runs["base"]))
    lines += ["", "| step (s, medians) | base | new | new / base |", "| --- | ---: | ---: | ---: |"]
    for step in steps:
        base = statistics.median(r["steps"].get(step, 0.0) for r in runs["base"])
        new = statistics.median(r["steps"].get(step, 0.0) for r in runs["new"])
        lines.append(f"| {step} | {base:.1f} | {new:.1f} | {new / base:.3f} |" if base else f"| {step} | {base:.1f} | {new:.1f} | - |")
    lines += ["", f"Outputs of the last runs compared (`benchmarks/compare_outputs.py`): {len(verdicts) - len(differ)} of {len(verdicts)} the same."]
    lines += [f"- {d}" for d in differ]
    return lines


if __name__ == "__main__":
    main()
