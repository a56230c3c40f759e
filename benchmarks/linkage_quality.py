"""Person and family linkage quality over seeds and recording modes, and by group, by hand (not a test).

    .venv/bin/python benchmarks/linkage_quality.py                                  # 5 seeds x 3 modes at 20k
    .venv/bin/python benchmarks/linkage_quality.py --seeds 3 7 --modes hard --no-nhs-number --no-gazetteer
    .venv/bin/python benchmarks/linkage_quality.py --people 200000 --seeds 7 --modes standard

For every (seed, recording mode) it generates a county (cached under benchmarks/cache/), runs
the whole pipeline on it (`run_pipeline`, as `earlyhelp run` does) and scores
`linked_records.parquet` against truth: pairwise precision, recall and F1 for persons and for
families, and the family F1 ceiling (every person no record places, put with their true family:
the records' limit, linkage.evaluate.family_ceiling), then per group of true persons (name tradition, age band, sex, mover). It prints
Markdown tables: every run, the minimum per mode and overall, and the groups (the minimum over
seeds per mode, so a group that one seed links badly shows); and writes them to
benchmarks/results/linkage_quality_<people>.md with the machine.

Every run is made as on the 5th of the month after the reference month (`pipeline.RUN_DAY`), whatever
the day it runs: retention counts from the run's day, so the figures would otherwise move as
rows expire day by day.

Each run's warehouse is kept beside its county (benchmarks/cache/quality_<...>.duckdb), so that
benchmarks/family_rules.py can form the families again with changed rules in seconds.

Never tune to one county: a change is an improvement only when the minimum rises.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import polars as pl
from common import CACHE
from pipeline import RESULTS, machine, run_date

from linkage.evaluate import family_ceiling, score_by_group, score_linked_records
from warehouse import WAREHOUSE_FILE, open_warehouse
from synthetic.modes import RECORDING_MODES


def variant(nhs_number: bool, gazetteer: bool) -> str:
    return ("" if nhs_number else "_v1") + ("" if gazetteer else "_no_gazetteer")


def county(people: int, seed: int, month: str, mode: str, nhs_number: bool, gazetteer: bool) -> Path:
    from synthetic import generate_county

    landing = CACHE / f"quality_{people}_{seed}_{month}_{mode}{variant(nhs_number, gazetteer)}"
    if not (landing / "truth_people.csv").exists():
        shutil.rmtree(landing, ignore_errors=True)
        generate_county(people, seed, month, landing, nhs_number=nhs_number, recording_mode=mode, gazetteer=gazetteer)
    return landing


def kept_warehouse(people: int, seed: int, month: str, mode: str, nhs_number: bool, gazetteer: bool) -> Path:
    """Where a run's warehouse is kept, beside its county."""
    return CACHE / f"quality_{people}_{seed}_{month}_{mode}{variant(nhs_number, gazetteer)}.duckdb"


def run_one(people: int, seed: int, month: str, mode: str, nhs_number: bool, gazetteer: bool) -> tuple[dict, pl.DataFrame]:
    from pipelines.cli import run_pipeline

    landing = county(people, seed, month, mode, nhs_number, gazetteer)
    out = CACHE / f"quality_out_{people}"
    shutil.rmtree(out, ignore_errors=True)
    os.environ["EARLYHELP_TODAY"] = run_date(month).isoformat()
    began = time.perf_counter()
    result = run_pipeline(landing, month, out, log_level="ERROR")
    seconds = time.perf_counter() - began
    if not result.success:
        raise SystemExit(f"the pipeline failed on seed {seed}, mode {mode}")
    linked = out / "linked_records.parquet"
    scores = score_linked_records(linked, landing / "truth.csv")
    row = {"seed": seed, "mode": mode, "nhs_number": nhs_number, "gazetteer": gazetteer, "seconds": round(seconds, 1)}
    for level in ("person", "family"):
        row.update({f"{level}_{k}": scores[level][k] for k in ("precision", "recall", "f1")})
    with open_warehouse(out / WAREHOUSE_FILE, read_only=True) as con:
        placements = con.sql("SELECT person_id, placed_by FROM family_members").pl()
    # kept for benchmarks/family_rules.py, which forms families again on it in seconds
    shutil.copyfile(out / WAREHOUSE_FILE, kept_warehouse(people, seed, month, mode, nhs_number, gazetteer))
    row["family_f1_ceiling"] = family_ceiling(linked, landing / "truth.csv", placements)["f1"]
    groups = score_by_group(linked, landing / "truth.csv", landing / "truth_people.csv").with_columns(
        pl.lit(seed).alias("seed"), pl.lit(mode).alias("mode")
    )
    return row, groups


def _table(frame: pl.DataFrame) -> str:
    header = "| " + " | ".join(frame.columns) + " |\n| " + " | ".join("---" for _ in frame.columns) + " |\n"
    def cell(name: str, v) -> str:
        if isinstance(v, float):
            return f"{v:.1f}" if name == "seconds" else f"{v:.4f}"
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    body = "".join("| " + " | ".join(cell(n, v) for n, v in zip(frame.columns, r)) + " |\n" for r in frame.iter_rows())
    return header + body


def grid_arguments(description: str) -> argparse.ArgumentParser:
    """The grid of counties: size, seeds, recording modes, month and which NHS numbers they carry."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 7, 11, 19, 23])
    parser.add_argument("--modes", nargs="+", choices=RECORDING_MODES, default=list(RECORDING_MODES))
    parser.add_argument("--month", default="2026-10")
    parser.add_argument("--no-nhs-number", dest="nhs_number", action="store_false", help="NHS numbers in A&E only (spec version 1)")
    return parser


def main() -> None:
    parser = grid_arguments(__doc__)
    parser.add_argument("--no-gazetteer", dest="gazetteer", action="store_false", help="no address gazetteer (households from partners' addresses alone)")
    args = parser.parse_args()
    rows, groups = [], []
    for mode in args.modes:
        for seed in args.seeds:
            row, grouped = run_one(args.people, seed, args.month, mode, args.nhs_number, args.gazetteer)
            print(row, flush=True)
            rows.append(row)
            groups.append(grouped)
    runs = pl.DataFrame(rows)
    metrics = [c for c in runs.columns if c.startswith(("person_", "family_"))]
    minimum = pl.concat([
        runs.group_by("mode", maintain_order=True).agg(pl.col(metrics).min()),
        runs.select(pl.lit("all").alias("mode"), *[pl.col(m).min() for m in metrics]),
    ])
    by_group = (
        pl.concat(groups).group_by("mode", "group", "value", "level", maintain_order=True)
        .agg(pl.col("persons").mean().round(0).cast(pl.Int64).alias("persons (mean)"), pl.col("precision").min(), pl.col("recall").min(), pl.col("f1").min())
        .sort("level", "group", "value", "mode", descending=[True, False, False, False])
    )
    nhs = ("with NHS numbers in every extract (spec v2)" if args.nhs_number else "NHS numbers in A&E only (spec v1)") + (
        ", with the council's address gazetteer" if args.gazetteer else ", without an address gazetteer")
    text = (
        f"# Linkage quality at {args.people:,} residents, {nhs}\n\n{machine()}\n\n"
        f"Command: `.venv/bin/python benchmarks/linkage_quality.py --people {args.people} --seeds {' '.join(map(str, args.seeds))} --modes {' '.join(args.modes)}"
        f"{'' if args.nhs_number else ' --no-nhs-number'}{'' if args.gazetteer else ' --no-gazetteer'}` (each run made as on {run_date(args.month)})\n\n## Every run\n\n{_table(runs)}\n## The minimum over seeds\n\n{_table(minimum)}\n"
        f"## By group (the minimum over seeds; pairs within the group's true persons)\n\n{_table(by_group)}"
    )
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"linkage_quality_{args.people}{variant(args.nhs_number, args.gazetteer)}.md").write_text(text)


if __name__ == "__main__":
    main()
