"""Benchmark the pipeline end to end on synthetic counties, by hand (not a test).

    .venv/bin/python benchmarks/pipeline.py                      # 20k, 200k and 1.2M residents
    .venv/bin/python benchmarks/pipeline.py --people 20000 200000
    .venv/bin/python benchmarks/pipeline.py --people 200000 1200000 --repeat 3   # medians of 3, interleaved

For each size it generates a county (cached under benchmarks/cache/ by size,
seed and month), times the floor (DuckDB reading every landing CSV into tables, in a fresh
process), runs `earlyhelp run` on it in a fresh process (the same entry point a user runs),
and prints each Dagster step's wall time, the run's wall
time and the peak memory of the run: the run's process and every process it starts (the
steps it runs apart, the packs' workers), their resident memory summed five times a second; and
their CPU time, with how many cores it kept busy on average (CPU over wall: a run whose cores are
nearly all busy is made faster only by less work). Then the monthly run: the previous
month is run into a second output folder on a landing folder without each source's latest
file (hard links, no copy), and the month itself on every file after it, timed as the cold
run is. The county's files are yearly by default; with `--files monthly` they are a file a
month, as partners send them, so the monthly run's increment is one month (yearly files make it
a year's file). Monthly results go to benchmarks/results/pipeline_monthly.md. Then Markdown tables: the sizes side by side, and each stage's growth from the
second-largest size to the largest, cold and monthly. With --steps-apart every run has its heavy
steps in child processes (`earlyhelp run --steps-apart`), results in
benchmarks/results/pipeline[_monthly]_steps_apart.md. With --repeat N each size runs N times, the sizes interleaved so that the
machine's noise falls on both alike, and every figure is the median of the N runs.
The tables are also written to benchmarks/results/pipeline.md with the machine
they ran on.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import CACHE, Measured, county_arguments, measured

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from features.calendar import previous_month, reference_date  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: The steps that validate a source's table: its contract suite and three counts, one step a source
#: (`raw_<source>_checks`); the suite is nearly all of it (the counts take milliseconds). Before
#: 2026-12, each check was a step of its own, the suite's `raw_<source>_meets_contract`.
RAW_CHECK_STEPS = ("_checks", "meets_contract")


def publish(name: str, command: str, lines: list[str]) -> None:
    """Print a benchmark's figures and keep them as results/<name>, headed by the command that made them."""
    text = "\n".join(lines)
    print("\n" + text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / name).write_text(f"# `{command}`\n\n{text}\n")


#: Each step's start and end (Unix times, as Dagster recorded them) in a run's output folder,
#: printed as JSON: run as a script (`step_windows`), so that it imports the revision measured.
STEP_WINDOWS = """
import json, sys
from pathlib import Path
from pipelines.cli import instance_for
out = Path(sys.argv[1])
with instance_for(out) as instance:
    run = instance.get_runs(limit=1)[0]
    starts, windows = {}, {}
    for record in instance.all_logs(run.run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type_value == "STEP_START":
            starts[event.step_key] = record.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
            windows[event.step_key] = (starts[event.step_key], record.timestamp)
print(json.dumps(windows))
"""


def step_windows(out: Path, cwd: Path | None = None) -> dict[str, tuple[float, float]]:
    """Each step's (start, end) in the run whose output folder is `out`, read by the code in `cwd`."""
    done = subprocess.run([sys.executable, "-c", STEP_WINDOWS, str(out)], cwd=cwd, capture_output=True, text=True, check=True)
    return {step: (start, end) for step, (start, end) in json.loads(done.stdout).items()}


def step_times(out: Path, cwd: Path | None = None) -> dict[str, float]:
    """Each step's seconds in the run whose output folder is `out`."""
    return {step: end - start for step, (start, end) in step_windows(out, cwd).items()}


#: The floor: DuckDB reading every landing CSV into a table of text columns, in a fresh process
#: (no checks, no linkage): what reading the data costs at the least.
FLOOR = """
import sys, tempfile
from pathlib import Path
import duckdb
landing = Path(sys.argv[1])
with tempfile.TemporaryDirectory() as folder:
    con = duckdb.connect(str(Path(folder) / "floor.duckdb"))
    con.execute("SET enable_progress_bar = false")
    for source in sorted(p for p in landing.iterdir() if p.is_dir() and any(p.glob("*.csv"))):
        con.execute(f"CREATE TABLE {source.name} AS SELECT * FROM read_csv('{source.as_posix()}/*.csv', all_varchar = true, union_by_name = true)")
    con.close()
"""


#: Days into the month after its reference month that a benchmark makes its run of that month: a
#: council runs once the partners' files are in, so last month's run was made a month before this
#: month's. A month then meets what a council's does (a file whose dates last month's day judged
#: to be in the future is read again; rows have passed retention since), and retention counts
#: from the same day whatever day the benchmark runs. Before the forty-sixth session the
#: benchmarks made both months' runs on the day they ran.
RUN_DAY = 5


def run_date(month: str) -> dt.date:
    return reference_date(month) + dt.timedelta(days=RUN_DAY)


def on_its_day(month: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment (os.environ, or `env`) of a run of `month` made on its day (`run_date`)."""
    return {**(os.environ if env is None else env), "EARLYHELP_TODAY": run_date(month).isoformat()}


def floor(landing: Path) -> tuple[float, int]:
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", FLOOR, str(landing)])
    _, _, usage = os.wait4(child.pid, 0)
    return time.perf_counter() - began, usage.ru_maxrss // 1024


def county(people: int, seed: int, month: str, files: str = "yearly") -> tuple[Path, float | None, int | None]:
    landing = CACHE / (f"county_{people}_{seed}_{month}" + ("" if files == "yearly" else f"_{files}"))
    if (landing / "truth.csv").exists():
        return landing, None, None
    shutil.rmtree(landing, ignore_errors=True)
    began = time.perf_counter()
    peak = round(_child(["generate", "--people", str(people), "--seed", str(seed), "--month", month, "--files", files, "--out", str(landing)]).tree_peak)
    return landing, time.perf_counter() - began, peak


def _landing_less(landing: Path, suffix: str, kept: slice) -> Path:
    """`landing` beside itself as `<name>_<suffix>`, each source folder holding the slice `kept`
    of its files in name order where it sends several (hard links); made once."""
    target = landing.parent / f"{landing.name}_{suffix}"
    if target.exists():
        return target
    for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        (target / folder.name).mkdir(parents=True)
        for path in files[kept] if len(files) > 1 else files:
            os.link(path, target / folder.name / path.name)
    return target


def last_month(landing: Path) -> Path:
    """The landing folder as it stood a month before: every file but each source's latest (hard links)."""
    return _landing_less(landing, "last_month", slice(None, -1))


def oldest_gone(landing: Path) -> Path:
    """The landing folder as a council leaves it that deletes (or archives) each source's oldest
    file once its rows are past retention: every file but each source's oldest where it sends
    several (hard links)."""
    return _landing_less(landing, "oldest_gone", slice(1, None))


def gazetteer_late(landing: Path) -> Path:
    """The landing folder with a gazetteer that lacks every 50th property (new builds reach the
    council's gazetteer late): the gazetteer as it stood a month before, the same name, other
    bytes; every other file as it was (hard links). Beside `landing` as `<name>_gazetteer_late`, made
    once; a landing folder without a gazetteer is given back as it is."""
    import csv
    import io

    target = landing.parent / f"{landing.name}_gazetteer_late"
    if target.exists() or not any((landing / "address_gazetteer").glob("*")):
        return target if target.exists() else landing
    made = landing.parent / f"{landing.name}_gazetteer_late.part"
    shutil.rmtree(made, ignore_errors=True)
    shutil.copytree(landing, made, copy_function=os.link)
    for path in sorted((made / "address_gazetteer").iterdir()):
        rows = list(csv.reader(io.StringIO(path.read_bytes().decode("utf-8-sig"), newline="")))
        out = io.StringIO(newline="")
        csv.writer(out, lineterminator="\n").writerows([rows[0], *(row for i, row in enumerate(rows[1:], 1) if i % 50)])
        path.unlink()  # a hard link: the county's own file stays as it is
        path.write_text(out.getvalue(), encoding="utf-8")
    made.rename(target)
    return target


def restated(landing: Path) -> Path:
    """The landing folder as it stands after each partner sent one of its earlier files again,
    corrected, under the same name: for each source sending three files or more, the file in the
    middle (in name order) lacks one record and has one surname spelt otherwise; every other file
    as it was (hard links). Its truth.csv is the county's, the record taken back out of it and the
    rows after it numbered as they now stand. Beside `landing` as `<name>_restated`, made once."""
    import csv
    import io

    import polars as pl

    target = landing.parent / f"{landing.name}_restated"
    if target.exists():
        return target
    made = landing.parent / f"{landing.name}_restated.part"
    shutil.rmtree(made, ignore_errors=True)
    taken_back = []  # (source, file, row)
    for folder in sorted(p for p in landing.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        (made / folder.name).mkdir(parents=True)
        middle = files[len(files) // 2] if len(files) >= 3 else None
        for path in files:
            if path != middle:
                os.link(path, made / folder.name / path.name)
                continue
            data = path.read_bytes()
            bom = data.startswith(b"\xef\xbb\xbf")
            try:
                encoding, text = "utf-8", data[3 if bom else 0:].decode("utf-8")
            except UnicodeDecodeError:
                encoding, text = "cp1252", data.decode("cp1252")
            rows = list(csv.reader(io.StringIO(text, newline="")))
            header, records = rows[0], rows[1:]
            gone = len(records) // 2  # a record the partner took back
            del records[gone]
            taken_back.append((folder.name, path.name, gone + 1))  # rows count from 1 (as Provenance)
            surname = next((i for i, c in enumerate(header) if "SURNAME" in c.upper() or "FAMILY_NAME" in c.upper()), None)
            if surname is not None and len(records[0][surname]) > 1:  # a surname the partner corrected
                records[0][surname] = records[0][surname][:-2] + records[0][surname][-1] + records[0][surname][-2]
            out = io.StringIO(newline="")
            csv.writer(out, lineterminator="\r\n" if b"\r\n" in data else "\n").writerows([header, *records])
            (made / folder.name / path.name).write_bytes((b"\xef\xbb\xbf" if bom else b"") + out.getvalue().encode(encoding))
    if (landing / "truth.csv").exists():
        truth = pl.read_csv(landing / "truth.csv", infer_schema_length=0).with_columns(pl.col("row").cast(pl.Int64))
        for source, name, row in taken_back:
            here = (pl.col("source") == source) & (pl.col("file") == name)
            truth = truth.filter(~(here & (pl.col("row") == row))).with_columns(
                pl.when(here & (pl.col("row") > row)).then(pl.col("row") - 1).otherwise(pl.col("row")).alias("row")
            )
        truth.write_csv(made / "truth.csv")
    made.rename(target)
    return target


#: What a chair types down a returned pack's Decisions sheet, row after row (None: left blank).
DECISIONS_TYPED = ("ALLOCATED", "NO_FURTHER_ACTION", "DEFERRED", "ALREADY_KNOWN", "CONSENT_DECLINED", None)


def packs_returned(packs: Path, into: Path, meeting_day: dt.date) -> int:
    """Each XLSX pack in `packs` (a run's packs/<month>/) as its meeting returns it, into `into` (a
    landing folder's meeting_outcomes/): DECISIONS_TYPED in turn down its Decisions sheet, each
    decision dated `meeting_day`, an ALLOCATED one with its lead agency, the workbook saved by its
    chair, named `<month>_<locality>.xlsx` (the packs of every month share their names). Returns
    the decisions typed."""
    import openpyxl

    into.mkdir(parents=True, exist_ok=True)
    typed = 0
    for path in sorted(packs.glob("*.xlsx")):
        book = openpyxl.load_workbook(path)
        sheet = book["Decisions"]
        for row, decision in zip(range(2, sheet.max_row + 1), itertools.cycle(DECISIONS_TYPED)):
            if decision is None:
                continue
            sheet.cell(row, 2).value = dt.datetime.combine(meeting_day, dt.time())
            sheet.cell(row, 3).value = decision
            sheet.cell(row, 4).value = "Family Help team" if decision == "ALLOCATED" else None
            typed += 1
        book.properties.lastModifiedBy = f"chair.{path.stem}@county.example.gov.uk"
        book.save(into / f"{packs.name}_{path.name}")
    return typed


#: What a council's IG lead changed at the review between two months (`contracts_before_review`):
#: A&E's retention cut from four years to three, and the NHS number added to the front door's
#: contract (the consistent child identifier).
REVIEWED = {"ae_attendances": "retention 4 -> 3 years", "front_door_contacts": "NHS_NUMBER added"}


def contracts_before_review(folder: Path, reviewed: bool) -> Path:
    """A council's own contracts folder (`folder`, its files replaced): the packaged contracts
    where `reviewed`, else the contracts as they stood before its IG lead's review (REVIEWED): A&E
    kept rows four years, and the front door's contract did not name NHS_NUMBER, which its files
    sent all the same and a run ignored. Made before each run, as the council's folder stood on
    that run's day."""
    import yaml

    from data_contracts import CONTRACTS_DIR, contract_paths

    folder.mkdir(parents=True, exist_ok=True)
    for path in contract_paths(folder):
        path.unlink()
    for path in contract_paths(CONTRACTS_DIR):
        shutil.copyfile(path, folder / path.name)
    if reviewed:
        return folder
    ae = folder / "ae_attendances.yaml"
    document = yaml.safe_load(ae.read_text(encoding="utf-8"))
    retention = next(p for p in document["slaProperties"] if p["property"] == "retention")
    assert retention["value"] == 3 and retention["unit"] == "y", "the packaged A&E retention changed: update REVIEWED"
    retention.update(value=4, description="Rows are removed four years after the attendance.")
    ae.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    front_door = folder / "front_door_contacts.yaml"
    document = yaml.safe_load(front_door.read_text(encoding="utf-8"))
    properties = document["schema"][0]["properties"]
    document["schema"][0]["properties"] = [p for p in properties if p.get("physicalName") != "NHS_NUMBER"]
    assert len(document["schema"][0]["properties"]) == len(properties) - 1, "the packaged front door contract names no NHS_NUMBER: update REVIEWED"
    front_door.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return folder

def _timed_run(landing: Path, month: str, out: Path) -> tuple[float, int, float, dict[str, float]]:
    """(wall seconds, peak MiB, CPU seconds, each step's seconds) of one `earlyhelp run`."""
    began = time.perf_counter()
    run = _child(["run", "--landing", str(landing), "--month", month, "--out", str(out)], month)
    seconds = time.perf_counter() - began
    return seconds, round(run.tree_peak), run.cpu_seconds, step_times(out)


def _child(args: list[str], month: str | None = None) -> Measured:
    """Run an earlyhelp command in a child process, measured: the peak memory of it and every
    process it started (its steps' and packs' processes), their summed RSS sampled, and their CPU.
    `month`: a run of that month, made on its day (`on_its_day`)."""
    return measured([sys.executable, "-m", "pipelines.cli", *args], stdout=subprocess.DEVNULL, env=on_its_day(month) if month else None)


def main() -> None:
    args = county_arguments(__doc__, [20_000, 200_000, 1_200_000], repeat=True, files=True, steps_apart=True)
    if args.steps_apart:
        os.environ["EARLYHELP_STEPS_APART"] = "1"  # every run below, last month's included
    landings = {people: county(people, args.seed, args.month, args.files) for people in args.people}
    runs: dict[int, list[tuple[float, int, float, dict[str, float]]]] = {people: [] for people in args.people}
    floors: dict[int, list[tuple[float, int]]] = {people: [] for people in args.people}
    monthly: dict[int, list[tuple[float, int, float, dict[str, float]]]] = {people: [] for people in args.people}
    for attempt in range(args.repeat):
        for people in args.people:
            floors[people].append(floor(landings[people][0]))
            out = CACHE / f"out_{people}"
            shutil.rmtree(out, ignore_errors=True)
            run = _timed_run(landings[people][0], args.month, out)
            _show(f"{people:,} residents, cold run {attempt + 1} of {args.repeat}", *run)
            runs[people].append(run)
            out = CACHE / f"out_{people}_monthly"
            shutil.rmtree(out, ignore_errors=True)
            _child(["run", "--landing", str(last_month(landings[people][0])), "--month", previous_month(args.month), "--out", str(out)], previous_month(args.month))
            run = _timed_run(landings[people][0], args.month, out)
            _show(f"{people:,} residents, monthly run {attempt + 1} of {args.repeat} (last month's run before it)", *run)
            monthly[people].append(run)
    rows, stages, monthly_stages = [], {}, {}
    for people in args.people:
        _, gen_seconds, gen_peak = landings[people]
        steps = _median_steps([s for *_, s in runs[people]])
        ingest = sum(v for k, v in steps.items() if k.startswith("raw_") and not k.endswith(RAW_CHECK_STEPS))
        suites = sum(v for k, v in steps.items() if k.endswith(RAW_CHECK_STEPS))
        seconds, cpu = statistics.median(r[0] for r in runs[people]), statistics.median(r[2] for r in runs[people])
        peak = max(r[1] for r in runs[people])  # memory: the worst run, not the middle one
        floor_seconds, floor_peak = statistics.median(f for f, _ in floors[people]), max(p for _, p in floors[people])
        month_seconds, month_cpu = statistics.median(r[0] for r in monthly[people]), statistics.median(r[2] for r in monthly[people])
        month_peak = max(r[1] for r in monthly[people])
        rows.append((people, gen_seconds, gen_peak, seconds, cpu, peak, month_seconds, month_cpu, month_peak, ingest, suites, floor_seconds, floor_peak))
        stages[people] = _stages(steps)
        monthly_stages[people] = _stages(_median_steps([s for *_, s in monthly[people]]))
    lines = [
        f"Machine: {machine()}; month {args.month}, seed {args.seed}, {args.files} files; "
        + "peak memory: the run's process and every process it started, summed (RSS, sampled five times a second); "
        + "CPU: their user and system time, over the wall time the cores it kept busy (of the machine's); "
        + (f"times are medians of {args.repeat} runs of each size, interleaved; peak memory is the highest." if args.repeat > 1 else "one run of each size."),
        "",
        "| residents | generate (s) | generate peak (MiB) | cold run (s) | cold CPU (s, cores busy) | cold peak (MiB) | monthly run (s) | monthly CPU (s, cores busy) | monthly peak (MiB) | cold ingest steps (s) | cold GX suites (s) | floor: DuckDB reads the CSVs (s) | floor peak (MiB) | cold / floor |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for people, gs, gp, rs, rc, rp, ms, mc, mp, ing, gx, fs, fp in rows:
        gen = f"{gs:.1f}" if gs is not None else "cached"
        lines.append(
            f"| {people:,} | {gen} | {gp or '-'} | {rs:.1f} | {rc:.1f} ({rc / rs:.2f} of {os.cpu_count()}) | {rp:,} | {ms:.1f} | {mc:.1f} ({mc / ms:.2f} of {os.cpu_count()}) | {mp:,} "
            f"| {ing:.1f} | {gx:.1f} | {fs:.1f} | {fp:,} | {rs / fs:.0f}x |"
        )
    if len(stages) >= 2:
        small, large = sorted(stages)[-2:]
        lines += [
            "", f"| stage | cold {small:,} (s) | cold {large:,} (s) | growth (data grew {large / small:.1f}x) | monthly {small:,} (s) | monthly {large:,} (s) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for stage in stages[large]:
            before, after = stages[small].get(stage, 0.0), stages[large][stage]
            growth = f"{after / before:.1f}x" if before else "-"
            lines.append(f"| {stage} | {before:.1f} | {after:.1f} | {growth} | {monthly_stages[small].get(stage, 0.0):.1f} | {monthly_stages[large].get(stage, 0.0):.1f} |")
    repeat = f" --repeat {args.repeat}" if args.repeat > 1 else ""
    files = "" if args.files == "yearly" else f" --files {args.files}"
    apart = " --steps-apart" if args.steps_apart else ""
    name = f"pipeline{files.replace(' --files ', '_')}{apart.replace(' --steps-apart', '_steps_apart')}.md"
    publish(name, f"benchmarks/pipeline.py --people {' '.join(map(str, args.people))}{repeat}{files}{apart}", lines)


def _show(title: str, seconds: float, peak: int, cpu: float, steps: dict[str, float]) -> None:
    print(f"\n{title}: {seconds:.1f}s, CPU {cpu:.1f}s, peak {peak} MiB")
    for key, value in sorted(steps.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {key:<45} {value:6.1f}s")


def _median_steps(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]}


def _stages(steps: dict[str, float]) -> dict[str, float]:
    """Steps grouped as the README names the stages: each source's load, the GX suites and the
    other checks summed; every other step on its own."""
    from data_contracts import load_contracts

    ingest = f"ingest ({len(load_contracts())} sources)"
    grouped: dict[str, float] = {ingest: 0.0, "contract suites (GX)": 0.0, "other checks": 0.0}
    for key, value in steps.items():
        if key.endswith(RAW_CHECK_STEPS):
            grouped["contract suites (GX)"] += value
        elif key.startswith("raw_") and key.count("_") > 1 and key.endswith(("rows_accounted_for", "source_received", "quarantine_share")):
            grouped["other checks"] += value
        elif key.startswith("raw_"):
            grouped[ingest] += value
        elif any(key.endswith(c) for c in ("breakdown_sums_to_score", "indicator_prevalence_plausible", "score_distribution_shift")):
            grouped["other checks"] += value
        else:
            grouped[key] = value
    return grouped


def machine() -> str:
    import platform

    memory = next((int(line.split()[1]) // 1024 // 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores ({model}), {memory} GiB, Python {platform.python_version()}"


if __name__ == "__main__":
    main()
