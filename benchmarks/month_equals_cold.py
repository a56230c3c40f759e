"""A month on top of last month's run against the same month read from nothing, on larger
counties of every recording mode, by hand (not a test).

    .venv/bin/python benchmarks/month_equals_cold.py                                   # 200,000 residents, seed 11, 3 modes
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 --modes hard
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --oldest-gone
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --delete-expired
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --months-before 3
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --restated
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --gazetteer-late
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --contract-reviewed
    .venv/bin/python benchmarks/month_equals_cold.py --people 20000 --seeds 3 7 11 --pack-returned

tests/test_incremental.py holds a month to a run reading every file on a county of a few hundred
residents. This does the same on counties large enough for the month's shortcuts to meet what
they meet in a council's data (profiles new to the month, groups the clusterer takes apart
again, address lines matched once), in each recording mode. For each (seed, mode) it generates
the county with monthly files (cached: benchmarks/cache/month_<people>_<seed>_<month>_<mode>)
and takes its landing folder as it stood a month before (every file but each source's latest),
then runs, each in a process of its own as `earlyhelp run`:

1. last month, from nothing, into a fresh folder;
2. the month on a copy of (1), as a council's monthly run;
3. the month on another copy of (1) with `--read-every-file` (nothing of (1) reused);
4. the month from nothing, into a fresh folder.

It prints, for each county: (2) against (3), every output (`compare_outputs`: each warehouse
table, both exports, every cell of every pack), which must all be the same; (2) against (4),
whether every mention is in one person and one family with the same other mentions (pairwise
precision and recall of one against the other, both exactly 1 where the two partitions are the
same: the ids differ, since (4) had no last month's ids to keep), and each one's person and
family F1 against the county's truth; and the runs' wall times. Figures only, no row. Written
to benchmarks/results/month_equals_cold_<people>.md with the machine.

Every run is made as on the 5th of the month after its reference month
(`pipeline.run_date`): retention counts from the run's day. With --oldest-gone, the month's
landing folder (for (2), (3) and (4)) lacks each source's oldest file, as a council that deletes
files past retention leaves it (`pipeline.oldest_gone`); the results go to
month_equals_cold_<people>_oldest_gone.md. With --delete-expired, last month's run is made on a
council's own landing folder (hard links to last month's files) with the switch that deletes the
landing files past retention on (`EARLYHELP_DELETE_EXPIRED_LANDING=1`), the month's new files then
arrive in that folder, and (2), (3) and (4) read it (month_equals_cold_<people>_delete_expired.md).
With --months-before K, (1) is K months run one after another, each on its day and on the
landing folder as it stood then, the first from nothing and each after it a month on the one
before, as a council runs month after month: what a month keeps of a month (its bookkeeping
tables, the files it kept rather than read) is then held to reading every file too
(month_equals_cold_<people>_months_before_<K>.md). With --restated, the month's landing folder
holds an earlier file of each source sent again, corrected, under its name (`pipeline.restated`:
the middle file of each source sending three or more, a record taken back and a surname spelt
otherwise), as partners do: the month reads that source again from that file
(month_equals_cold_<people>_restated.md). With --gazetteer-late, the runs before the month read a
gazetteer lacking every 50th property (`pipeline.gazetteer_late`: new builds reach a council's
gazetteer late) and the month the whole one, as a council's refreshed gazetteer arrives: every
address line is matched again, and households formed with the properties new to it
(month_equals_cold_<people>_gazetteer_late.md). With --contract-reviewed, every run is made as
its authority's on a deployment, under the council's own contracts folder as it stood on the
run's day: the runs before the month under the contracts before its IG lead's review, the month
under those after it (`pipeline.contracts_before_review`: A&E's rows kept four years, then three;
the front door's NHS_NUMBER ignored, then loaded): the month reads those two sources whole, and
links the front door's mentions with their NHS numbers (month_equals_cold_<people>_contract_reviewed.md;
it combines with the other flags). With --pack-returned, each run's packs come back from its
meetings ten days after it, decisions typed in (`pipeline.packs_returned`), and land among the
next run's files as meeting_outcomes (last month's among the month's; with --months-before, every
month's): the month honours every decision returned, as its lists, outcomes and chair's summary
show (month_equals_cold_<people>_pack_returned.md; it combines with the other flags).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import polars as pl  # noqa: E402
import yaml  # noqa: E402
from common import CACHE  # noqa: E402
from compare_outputs import compare_outputs  # noqa: E402
from linkage_quality import grid_arguments  # noqa: E402
from pipeline import REVIEWED, contracts_before_review, gazetteer_late, last_month, machine, oldest_gone, on_its_day, packs_returned, publish, restated, run_date  # noqa: E402

from features.calendar import previous_month  # noqa: E402
from linkage.evaluate import pairwise_score, score_linked_records  # noqa: E402

LINKED = "linked_records.parquet"


def county(people: int, seed: int, month: str, mode: str) -> Path:
    from synthetic import generate_county

    landing = CACHE / f"month_{people}_{seed}_{month}_{mode}"
    if not (landing / "truth.csv").exists():
        shutil.rmtree(landing, ignore_errors=True)
        shutil.rmtree(landing.parent / f"{landing.name}_last_month", ignore_errors=True)
        generate_county(people, seed, month, landing, recording_mode=mode, files="monthly")
    return landing


def _run(landing: Path, month: str, out: Path, *flags: str, deleting: bool = False, contracts: Path | None = None) -> float:
    """Seconds of one `earlyhelp run` in a process of its own, made as on `run_date(month)`;
    `deleting`: with the council's switch that deletes landing files past retention on;
    `contracts`: the council's own contracts folder, the run made as its authority's on a
    deployment (an authorities file beside the folder naming it, this landing folder and `out`)."""
    where = ["--landing", str(landing), "--out", str(out)]
    if contracts is not None:
        deployment = contracts.parent / "authorities.yaml"
        deployment.write_text(yaml.safe_dump({"authorities": [
            {"code": "county", "name": "County Council", "landing": str(landing.resolve()), "output": str(out.resolve()), "contracts": str(contracts.resolve())},
        ]}))
        where = ["--authorities", str(deployment), "--authority", "county"]
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", *where, "--month", month, *flags],
        check=True, stdout=subprocess.DEVNULL, env=on_its_day(month, {**os.environ, "EARLYHELP_DELETE_EXPIRED_LANDING": "1" if deleting else ""}),
    )
    return time.perf_counter() - began


def _review_met(out: Path) -> dict[str, int]:
    """What the month met of the IG lead's review (`contracts_before_review`), so that the row is
    not vacuous: A&E rows its shorter retention removed, and front door mentions with an NHS number."""
    import duckdb

    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        removed = con.execute("SELECT rows_removed FROM retention_log WHERE source = 'ae_attendances' QUALIFY rowid = max(rowid) OVER ()").fetchall()[0][0]
        numbered = con.execute("SELECT count(nhs_number) FROM person_records WHERE source = 'front_door_contacts'").fetchall()[0][0]
    return {"A&E rows removed at the review": removed, "front door mentions with an NHS number": numbered}


def _decisions_met(out: Path, returned: int) -> dict[str, int]:
    """What the month met of the packs returned: the decisions typed, and those the month recorded."""
    import duckdb

    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        recorded = con.execute("SELECT count(*) FROM meeting_decisions").fetchall()[0][0]
    return {"decisions returned": returned, "decisions recorded": recorded}


def same_partition(a: Path, b: Path) -> dict[str, bool]:
    """Whether the two exports put every mention in a person, and in a family, with the same other
    mentions: pairwise precision and recall of one against the other both 1."""
    ids = ["source", "file", "row", "person_id", "family_id"]
    joined = pl.read_parquet(a, columns=ids).join(pl.read_parquet(b, columns=ids), on=ids[:3], how="full", suffix="_b", coalesce=True)
    if joined.select(pl.any_horizontal(pl.all().is_null()).any()).item():
        return {"person": False, "family": False}  # a mention one export lacks
    same = {}
    for level, column in (("person", "person_id"), ("family", "family_id")):
        score = pairwise_score(joined, column, f"{column}_b", level)
        same[level] = score.true_positive_pairs == score.predicted_pairs == score.true_pairs
    return same


def one_county(people: int, seed: int, month: str, mode: str, work: Path, gone: bool = False, delete_expired: bool = False,
               months_before: int = 1, corrected: bool = False, late_gazetteer: bool = False, contract_reviewed: bool = False,
               pack_returned: bool = False) -> dict:
    truth = county(people, seed, month, mode) / "truth.csv"
    # the landing folder as it stood 1..months_before months before, oldest first
    earlier = [last_month(truth.parent)]
    while len(earlier) < months_before:
        earlier.insert(0, last_month(earlier[0]))
    if late_gazetteer:
        earlier = [gazetteer_late(before) for before in earlier]
    months = [month]
    while len(months) <= months_before:
        months.insert(0, previous_month(months[0]))
    landing = oldest_gone(truth.parent) if gone else restated(truth.parent) if corrected else truth.parent
    if corrected:
        truth = landing / "truth.csv"  # its rows as the corrected files number them
    folders = {name: work / name for name in ("last_month", "month", "every_file", "from_nothing")}
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    deleted = None
    seconds = {}
    # the council's own contracts folder, as it stood on each run's day: the review between the
    # last run before the month and the month (`contracts_before_review`)
    contracts = work / "deployment" / "contracts" if contract_reviewed else None

    def run(landing: Path, month: str, out: Path, *flags: str, deleting: bool = False, reviewed: bool = True) -> float:
        if contracts is not None:
            contracts_before_review(contracts, reviewed)
        return _run(landing, month, out, *flags, deleting=deleting, contracts=contracts)

    council = work / "landing" if delete_expired else None
    # every pack the meetings returned so far (--pack-returned): each run's packs come back from its
    # meetings ten days after it, and land among the next run's files
    returned_packs, returned = work / "packs_returned", 0
    shutil.rmtree(returned_packs, ignore_errors=True)

    def return_packs(month: str) -> None:
        nonlocal returned
        if pack_returned:
            returned += packs_returned(folders["last_month"] / "packs" / month, returned_packs, run_date(month) + dt.timedelta(days=10))

    def with_returned(landing: Path, month: str) -> Path:
        """`landing` with every pack returned so far in its meeting_outcomes/: the council's own
        folder gains them, another is copied first (hard links)."""
        packs = sorted(returned_packs.glob("*.xlsx"))
        if not packs:
            return landing
        if landing != council:
            copy = work / f"landing_{month}"
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(landing, copy, copy_function=os.link)
            landing = copy
        (landing / "meeting_outcomes").mkdir(exist_ok=True)
        for path in packs:
            if not (landing / "meeting_outcomes" / path.name).exists():
                os.link(path, landing / "meeting_outcomes" / path.name)
        return landing

    if delete_expired:
        # a council's own landing folder (hard links): each run before the month deletes the files
        # past retention from it, then the next month's files arrive in it
        shutil.rmtree(council, ignore_errors=True)
        shutil.copytree(earlier[0], council, copy_function=os.link)
        deleted = 0
        for before, before_month, after in zip(earlier, months, [*earlier[1:], landing]):
            there = {path for path in council.rglob("*") if path.is_file()}
            seconds[before_month] = run(with_returned(council, before_month), before_month, folders["last_month"], deleting=True, reviewed=False)
            deleted += sum(1 for path in there if not path.exists())
            return_packs(before_month)
            for path in sorted(after.glob("*/*")):
                if not (before / path.relative_to(after)).exists():
                    os.link(path, council / path.relative_to(after))
        landing = council
    else:
        for before, before_month in zip(earlier, months):
            seconds[before_month] = run(with_returned(before, before_month), before_month, folders["last_month"], reviewed=False)
            return_packs(before_month)
    seconds = {(f"{way} (from nothing)" if i == 0 else way): s for i, (way, s) in enumerate(seconds.items())}
    landing = with_returned(landing, month)
    shutil.copytree(folders["last_month"], folders["month"], symlinks=True)
    shutil.copytree(folders["last_month"], folders["every_file"], symlinks=True)
    seconds["month"] = run(landing, month, folders["month"])
    seconds["every file"] = run(landing, month, folders["every_file"], "--read-every-file")
    seconds["from nothing"] = run(landing, month, folders["from_nothing"])
    verdicts = compare_outputs(folders["every_file"], folders["month"])
    differing = [name for name, verdict in verdicts if not verdict.startswith("same") or "new columns" in verdict]
    partition = same_partition(folders["month"] / LINKED, folders["from_nothing"] / LINKED)
    f1 = {way: score_linked_records(folders[way] / LINKED, truth) for way in ("month", "from_nothing")}
    return {
        "seed": seed, "mode": mode, **({"files deleted by the runs before": deleted} if delete_expired else {}),
        **(_review_met(folders["month"]) if contract_reviewed else {}),
        **(_decisions_met(folders["month"], returned) if pack_returned else {}),
        "outputs the same as reading every file": f"{len(verdicts) - len(differing)} of {len(verdicts)}",
        "differing": ", ".join(differing) or "-",
        "persons as from nothing": partition["person"], "families as from nothing": partition["family"],
        "person F1 (month / from nothing)": f"{f1['month']['person']['f1']:.6f} / {f1['from_nothing']['person']['f1']:.6f}",
        "family F1 (month / from nothing)": f"{f1['month']['family']['f1']:.6f} / {f1['from_nothing']['family']['f1']:.6f}",
        **{f"{way} (s)": round(s, 1) for way, s in seconds.items()},
    }


def main() -> None:
    parser = grid_arguments(__doc__)
    parser.set_defaults(people=200_000, seeds=[11])
    parser.add_argument("--work", type=Path, default=CACHE / "month_equals_cold_runs", help="where the runs' output folders go (replaced)")
    parser.add_argument("--oldest-gone", action="store_true", help="the month's landing folder without each source's oldest file")
    parser.add_argument("--delete-expired", action="store_true", help="last month's run deletes the landing files past retention (EARLYHELP_DELETE_EXPIRED_LANDING=1) from a council's own landing folder, where the month's files then arrive")
    parser.add_argument("--restated", action="store_true", help="the month's landing folder with an earlier file of each source sent again, corrected (a record taken back, a surname spelt otherwise)")
    parser.add_argument("--gazetteer-late", action="store_true", help="the runs before the month with a gazetteer lacking every 50th property, which the month's gazetteer holds (new builds arriving late)")
    parser.add_argument("--contract-reviewed", action="store_true", help="the runs before the month under the council's contracts as they stood before its IG lead's review, the month under the packaged ones (A&E's retention cut from four years to three, NHS_NUMBER added to the front door's)")
    parser.add_argument("--pack-returned", action="store_true", help="each run's packs returned from its meetings, decisions typed in, among the next run's files (meeting_outcomes): last month's among the month's")
    parser.add_argument("--months-before", type=int, default=1, help="months run one after another before the month, the first from nothing (1: last month's alone)")
    args = parser.parse_args()
    if args.months_before < 1:
        parser.error("--months-before is at least 1")
    if args.oldest_gone + args.delete_expired + args.restated + args.gazetteer_late > 1:
        parser.error("one of --oldest-gone, --delete-expired, --restated and --gazetteer-late")
    rows = []
    for mode in args.modes:
        for seed in args.seeds:
            rows.append(one_county(args.people, seed, args.month, mode, args.work, args.oldest_gone, args.delete_expired, args.months_before, args.restated, args.gazetteer_late,
                                   args.contract_reviewed, args.pack_returned))
            print(rows[-1], flush=True)
    header = list(rows[0])
    table = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    table += ["| " + " | ".join(f"{row[h]:,}" if isinstance(row[h], int) and not isinstance(row[h], bool) else str(row[h]) for h in header) + " |" for row in rows]
    alike = all(row["differing"] == "-" and row["persons as from nothing"] and row["families as from nothing"] for row in rows)
    lines = [
        f"Machine: {machine()}; {args.people:,} residents, month {args.month}, monthly files; "
        + ("last month's run from nothing" if args.months_before == 1 else
           f"the {args.months_before} months before it run one after another, the first from nothing")
        + ", then the month "
        "on a copy of it, on another copy reading every file again, and from nothing (each run made as on the 5th of the month after)"
        + ("; each source's oldest file gone from the month's landing folder." if args.oldest_gone else
           ("; last month's run" if args.months_before == 1 else "; each run before the month")
           + " deleting the landing files past retention from the council's landing folder, where the next month's files then arrive."
           if args.delete_expired else
           "; in the month's landing folder an earlier file of each source sent again, corrected: a record taken back, a surname spelt otherwise."
           if args.restated else
           "; the runs before the month with a gazetteer lacking every 50th property, which the month's holds."
           if args.gazetteer_late else ".")
        + (" Each run as its authority's on a deployment, under the council's own contracts folder: the runs before the month"
           " as it stood before its IG lead's review, the month's after it ("
           + "; ".join(f"{source}: {change}" for source, change in REVIEWED.items()) + ")." if args.contract_reviewed else "")
        + (" Each run's packs returned from its meetings among the next run's files, a decision typed in five rows of six"
           " (`pipeline.packs_returned`)." if args.pack_returned else ""),
        "", *table, "",
        "Every month left every output as reading every file does, and put every mention with the same others as a run from nothing."
        if alike else "NOT ALIKE: see the rows above.",
    ]
    modes = "" if args.modes == parser.get_default("modes") else " --modes " + " ".join(args.modes)
    gone = " --oldest-gone" if args.oldest_gone else " --delete-expired" if args.delete_expired else " --restated" if args.restated else " --gazetteer-late" if args.gazetteer_late else ""
    gone += " --contract-reviewed" if args.contract_reviewed else ""
    gone += " --pack-returned" if args.pack_returned else ""
    gone += f" --months-before {args.months_before}" if args.months_before > 1 else ""
    publish(f"month_equals_cold_{args.people}{gone.replace(' --', '_').replace('-', '_').replace(' ', '_')}.md",
            f"benchmarks/month_equals_cold.py --people {args.people} --seeds {' '.join(map(str, args.seeds))}{modes}{gone}", lines)
    if not alike:
        sys.exit(1)


if __name__ == "__main__":
    main()
