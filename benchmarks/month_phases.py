"""A month's steps phase by phase, on fixed inputs, by hand (not a test).

    .venv/bin/python benchmarks/month_phases.py --people 1200000 --files monthly
    .venv/bin/python benchmarks/month_phases.py --people 1200000 --files monthly --steps family_members --repeat 5
    .venv/bin/python benchmarks/month_phases.py --people 1200000 --files monthly --tree /path/to/another/checkout
    .venv/bin/python benchmarks/month_phases.py --people 1200000 --steps raw_school_attendance person_records indicators locality_lists

A whole month at 1.2M residents varies by seconds from run to run on these machines (62 to 73 s
for one code within an hour), more than most changes to one phase save. A step's phases on the
same inputs vary far less. So this freezes the month once before each step (last month's cold
run of every file but each source's latest, then the month's run up to the step, with this
checkout's code: benchmarks/cache/month_phases_<county>/<step>/) and runs the step alone on a fresh
copy of that output folder, each time in a fresh process, as the month's run would (Dagster's
`materialize`, the step alone), timing the functions PHASES names. With --tree, each repetition
runs this checkout's code and the other's on fresh copies of the same inputs, which goes first
alternating, and the two are printed side by side: the code a change replaces against the
change, on the same month. Every figure is the median of --repeat runs, in seconds; phases nest
(a phase's time includes the phases it calls), and a phase a step calls twice is the sum of
both. The tables go to benchmarks/results/month_phases_<people>.md (the heaviest two steps,
DEFAULT_STEPS), or month_phases_<people>_<the steps>.md for others (PHASES names what each
times; a source's raw table starts from last month's run, nothing coming before it).

The frozen folders are kept (delete benchmarks/cache/month_phases_* to make them again, after a
change to any step before the one measured). Last month is this checkout's: a change to what a
month reuses from the last run (the clusterer's groups, the compared pairs: their digests hold
the code that made them) makes the other checkout's month redo that work, which a month after a
month of its own would not; `benchmarks/ab_runs.py --monthly` runs both months with each code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

#: This checkout. Nothing of the pipeline's is imported here at the top: a child imports the
#: code of the checkout it measures (`--tree`), which must come first on its path.
ROOT = Path(__file__).resolve().parents[1]

#: What is timed in a source's raw table: its files read, checked and reconciled, then written.
RAW_TABLE_PHASES = [
    ("ingestion.load", "previous_load"),
    ("ingestion.load", "read_source"),
    ("ingestion.load", "sha256_of"),
    ("ingestion.load", "_read_files"),
    ("ingestion.load", "_reconciled_with_kept"),
    ("ingestion.load", "_rows_changed"),
    ("ingestion.load", "write_source"),
    ("expectations.worker", "start_validating"),
]

#: What is timed in each step: (module, function). Each is wrapped wherever the run holds it (a
#: module that imported the name holds the function itself), before the pipeline is imported.
PHASES = {
    "person_links": [
        ("linkage", "link_persons"),
        ("linkage.model", "score_profiles"),
        ("linkage.model", "build_profiles"),
        ("linkage.model", "hold_blocking_keys"),
        ("linkage.model", "_compare_what_is_new"),
        ("linkage.model", "candidate_pairs"),
        ("linkage.model", "random_pairs"),
        ("linkage.model", "fit"),
        ("linkage.model", "score"),
        ("linkage.cluster", "cluster_persons"),
        ("linkage.cluster", "_components"),
        ("linkage.cluster", "_groups_that_may_contradict"),
        ("linkage.cluster", "_with_birth_dates_conflict"),
        ("linkage.cluster", "_group_digests"),
        ("linkage.cluster", "_take_apart"),
        ("linkage.stable_ids", "assign_stable_ids"),
        ("linkage.model", "store_compared_pairs"),
        ("linkage", "_review_queue"),
        ("warehouse", "read_table"),
        ("warehouse", "replace_tables"),
        ("linkage.evaluate", "group_link_rates"),
        ("reports.linkage_report", "linkage_report"),
    ],
    "family_members": [
        ("linkage.gazetteer", "match_person_addresses"),
        ("linkage.gazetteer", "match_lines"),
        ("linkage.gazetteer", "addresses_read"),
        ("linkage.gazetteer", "read_lines"),
        ("linkage.gazetteer", "held_household_records"),
        ("linkage", "form_families"),
        ("linkage.families", "form_households"),
        ("linkage.families", "summarise_records"),
        ("linkage.families", "separate_families_at_one_address"),
        ("linkage.stable_ids", "assign_stable_ids"),
        ("warehouse", "replace_tables"),
        ("linkage.person_records", "write_linked_records"),
    ],
    # the two sources whose month takes longest; any other's raw table could be added alike
    **dict.fromkeys(("raw_school_attendance", "raw_ae_attendances"), RAW_TABLE_PHASES),
    "person_records": [
        ("linkage.person_records", "write_person_records"),
        ("linkage.person_records", "mentions_made"),
        ("linkage.person_records", "_make_person_records"),
        ("linkage.person_records", "_change_person_records"),
        ("linkage.person_records", "_check_rows"),
    ],
    "indicators": [
        ("features.compute", "compute_indicators"),
        ("features.compute", "_person_hits"),
        ("warehouse", "replace_tables"),
    ],
    "locality_lists": [
        ("models.lists", "monthly_lists"),
        ("models.lists", "build_lists"),
        ("models.lists", "family_addresses"),
        ("models.lists", "linked_cases"),
        ("models.family_view", "family_view"),
        ("warehouse", "replace_tables"),
        ("reports.packs", "write_packs"),
        ("reports.packs", "pack_html"),
        ("reports.packs", "write_xlsx"),
        ("reports.packs", "write_csv"),
    ],
}


#: The steps measured unless --steps names others: the month's heaviest, most of its time.
DEFAULT_STEPS = ["person_links", "family_members"]

#: The file in the frozen folders' parent naming the revision that made last month (`_revision`),
#: which the results name: a folder made by older code is used until it is deleted.
MADE_BY = "made_by.txt"

#: The step as Dagster's `materialize` runs it: its phases and Dagster's own work around them.
STEP_WHOLE = "the step (Dagster's materialize)"


def _frozen(landing: Path, month: str, step: str, folder: Path) -> Path:
    """An output folder as the month's run leaves it just before `step`: made once, kept."""
    from pipeline import last_month

    from features.calendar import previous_month

    before = folder / step
    if (before / "warehouse.duckdb").exists():
        return before
    last = folder / "last_month"
    if not (last / "warehouse.duckdb").exists():
        shutil.rmtree(last, ignore_errors=True)
        print(f"last month's cold run into {last} ...", flush=True)
        _ran(["-m", "pipelines.cli", "run", "--landing", str(last_month(landing)), "--month", previous_month(month), "--out", str(last)], last)
        (folder / MADE_BY).write_text(_revision(str(ROOT)))
    shutil.rmtree(before, ignore_errors=True)
    shutil.copytree(last, before, symlinks=True)
    print(f"the month up to {step} into {before} ...", flush=True)
    _ran([__file__, "--child", "upstream", "--step", step, "--landing", str(landing), "--month", month, "--out", str(before), "--tree", str(ROOT)], before)
    return before


def _ran(arguments: list[str], out: Path) -> str:
    """Python with `arguments`, in the checkout's root; its output. Where it fails, `out` (the
    folder it was making) goes, and the end of what it said is shown."""
    ran = subprocess.run([sys.executable, *arguments], cwd=ROOT, capture_output=True, text=True)
    if ran.returncode:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"{' '.join(arguments[:3])} ... failed:\n{ran.stderr[-4000:]}")
    return ran.stdout


def _materialize(step: str, landing: Path, month: str, out: Path, upstream: bool) -> float:
    """Run the month's steps before `step` (`upstream`), or `step` alone; returns the seconds
    Dagster's `materialize` took (the pipeline imported before)."""
    import dagster as dg

    from pipelines.cli import instance_for
    from pipelines.definitions import ALL_ASSETS
    from pipelines.resources import EarlyhelpSettings

    settings = EarlyhelpSettings(landing_dir=str(landing), output_dir=str(out), month=month)
    selection = dg.AssetSelection.assets(step).upstream() - dg.AssetSelection.assets(step) if upstream else dg.AssetSelection.assets(step)
    if upstream and not selection.resolve(ALL_ASSETS):
        return 0.0  # a step nothing comes before (a source's raw table): last month is the month before it
    with instance_for(out) as instance:
        began = time.perf_counter()
        dg.materialize(ALL_ASSETS, instance=instance, partition_key=month, resources={"settings": settings}, selection=selection, raise_on_error=True)
        return time.perf_counter() - began


def _timed(step: str) -> dict[str, float]:
    """Wrap PHASES[step] wherever this process holds them; returns the seconds each takes, filled
    as they run (the outermost call of each, so a phase calling itself is not counted twice)."""
    import functools
    import importlib

    spent: dict[str, float] = {}
    depth: dict[str, int] = {}
    for module_name, name in PHASES[step]:
        original = getattr(importlib.import_module(module_name), name, None)
        if original is None:  # a checkout that has no such phase: shown as "-"
            continue
        label = f"{module_name}.{name}"

        def timed(*args, _original=original, _label=label, **kwargs):
            depth[_label] = depth.get(_label, 0) + 1
            began = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                depth[_label] -= 1
                if depth[_label] == 0:
                    spent[_label] = spent.get(_label, 0.0) + time.perf_counter() - began

        wrapped = functools.wraps(original)(timed)
        for held in list(sys.modules.values()):
            for attribute, value in list(getattr(held, "__dict__", {}).items()):
                if value is original:
                    setattr(held, attribute, wrapped)
    return spent


def child(args: argparse.Namespace) -> None:
    """In a fresh process, with `--tree`'s code first on the path."""
    sys.path.insert(0, args.tree)
    import pipelines  # noqa: F401  (the run's own settings, before anything imports Polars)
    import linkage

    if not Path(linkage.__file__).resolve().is_relative_to(Path(args.tree).resolve()):
        raise SystemExit(f"measuring {linkage.__file__}, not the code of {args.tree}")
    if args.child == "upstream":
        _materialize(args.step, Path(args.landing), args.month, Path(args.out), upstream=True)
        return
    spent = _timed(args.step)
    whole = _materialize(args.step, Path(args.landing), args.month, Path(args.out), upstream=False)
    print("PHASES " + json.dumps({STEP_WHOLE: whole, **spent}))


def _revision(tree: str) -> str:
    """The checkout's commit, with "+" where its files differ from it."""
    commit = subprocess.run(["git", "-C", tree, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "?"
    changed = subprocess.run(["git", "-C", tree, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    return commit + ("+" if changed else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=1_200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--files", choices=("yearly", "monthly"), default="monthly")
    parser.add_argument("--steps", nargs="+", choices=sorted(PHASES), default=DEFAULT_STEPS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tree", help="another checkout whose code runs on the same inputs, alternating with this one's")
    parser.add_argument("--child", choices=("upstream", "step"), help=argparse.SUPPRESS)
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--landing", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.tree and not (Path(args.tree) / "pipelines" / "__init__.py").exists():
        # a child would import this checkout's code instead, and both columns would be one code's
        raise SystemExit(f"--tree {args.tree}: no earlyhelp checkout there")
    from common import CACHE, warn_if_the_disk_is_nearly_full
    from pipeline import county, machine, publish

    warn_if_the_disk_is_nearly_full()
    landing, _, _ = county(args.people, args.seed, args.month, args.files)
    folder = CACHE / f"month_phases_{landing.name}"
    trees = {"this checkout": str(ROOT), **({"--tree": str(Path(args.tree).resolve())} if args.tree else {})}
    lines = [f"Machine: {machine()}; {args.people:,} residents, month {args.month}, seed {args.seed}, {args.files} files; medians of {args.repeat}, seconds;"
             f" the columns: {', '.join(f'{name} at {_revision(tree)}' for name, tree in trees.items())}", ""]
    for step in args.steps:
        before = _frozen(landing, args.month, step, folder)
        if step == args.steps[0]:
            made_by = (folder / MADE_BY).read_text() if (folder / MADE_BY).exists() else "a revision not recorded"
            lines[0] += f"; last month made by {made_by}"
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for repetition in range(args.repeat):
            # each checkout first in every other repetition, and the copy on disk before either
            # runs, so neither gains from going second or loses to the copy's writing
            for name, tree in (list(trees.items()) if repetition % 2 == 0 else list(trees.items())[::-1]):
                work = folder / f"{step}_run"
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(before, work, symlinks=True)
                os.sync()
                said = _ran([__file__, "--child", "step", "--step", step, "--landing", str(landing), "--month", args.month, "--out", str(work), "--tree", tree], work)
                runs[name].append(json.loads(next(line for line in said.splitlines() if line.startswith("PHASES "))[len("PHASES "):]))
                shutil.rmtree(work, ignore_errors=True)
        phases = [STEP_WHOLE, *(f"{module}.{name}" for module, name in PHASES[step])]
        lines += [f"### {step}", "", "| phase | " + " | ".join(trees) + " |", "| --- | " + " | ".join("---:" for _ in trees) + " |"]
        for phase in phases:
            cells = [[run[phase] for run in runs[name] if phase in run] for name in trees]
            lines.append(f"| {phase} | " + " | ".join(f"{statistics.median(c):.2f}" if c else "-" for c in cells) + " |")
        lines.append("")
    # the month's heaviest steps in one file, any other choice of steps in a file of its own
    named = "" if args.steps == DEFAULT_STEPS else "_" + "-".join(args.steps)
    publish(f"month_phases_{args.people}{named}.md", "benchmarks/month_phases.py " + " ".join(sys.argv[1:]), lines)


if __name__ == "__main__":
    main()
