"""Write the synthetic county as partner extracts, in yearly or monthly files that overlap, with truth."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts import load_contracts
from rules import age_band
from synthetic import adversary, extracts, recording
from synthetic.gazetteer import address_gazetteer, property_uprn
from synthetic.modes import FILE_PERIODS
from synthetic.population import build_county

#: The extracts the generator writes, each from the people and timeline (and the extracts before it).
EXTRACTS: dict[str, Callable[..., pl.DataFrame]] = {
    "school_attendance": lambda county, timeline, rng, frames: extracts.school_attendance(county, timeline, rng),
    "asb_incidents": lambda county, timeline, rng, frames: extracts.asb_incidents(county, timeline, rng),
    "domestic_abuse": lambda county, timeline, rng, frames: extracts.domestic_abuse(county, timeline, rng),
    "ae_attendances": lambda county, timeline, rng, frames: extracts.ae_attendances(county, timeline, rng),
    "worklessness": lambda county, timeline, rng, frames: extracts.worklessness(county, timeline, rng),
    # children's services cases follow the families the police already know
    "open_cases": lambda county, timeline, rng, frames: extracts.open_cases(county, timeline, rng, frames["asb_incidents"]),
    # spec v2; last, so that the extracts before it draw exactly as they did without it
    "front_door_contacts": lambda county, timeline, rng, frames: extracts.front_door_contacts(county, timeline, rng),
}
#: Extracts the council sends as one file rather than yearly ones.
SINGLE_FILE = frozenset({"open_cases"})


@dataclass
class GenerationSummary:
    people: int
    households: int
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    seconds: float = 0.0


def _shift_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


#: A monthly file re-sends the last days of the month before it (an event sent twice counts once).
MONTHLY_OVERLAP_DAYS = 7


def _file_windows(start: dt.date, reference: dt.date, period: str = "yearly") -> list[tuple[str, dt.date, dt.date]]:
    """Files ending at the reference month, each overlapping the one before: yearly files cover
    13 months (a month's overlap), monthly files their month and the week before it."""
    if period not in FILE_PERIODS:
        raise ValueError(f"files are cut {' or '.join(FILE_PERIODS)}, not {period!r}")
    months, overlap = (12, dt.timedelta(0)) if period == "yearly" else (1, dt.timedelta(days=MONTHLY_OVERLAP_DAYS))
    windows = []
    end_month = dt.date(reference.year, reference.month, 1)
    while True:
        first = _shift_months(end_month, 1 - months - (1 if period == "yearly" else 0)) - overlap
        last = _shift_months(end_month, 1) - dt.timedelta(days=1)
        windows.append((end_month.strftime("%Y-%m"), max(first, start), last))
        if first <= start:
            break
        end_month = _shift_months(end_month, -months)
    return windows[::-1]


def _write_files(frame: pl.DataFrame, source: str, out: Path, windows, single_file: bool) -> tuple[list[pl.DataFrame], int]:
    folder = out / source
    folder.mkdir(parents=True, exist_ok=True)
    truth, files = [], 0
    frame = frame.sort(["event_date", "person_id"])
    if single_file:
        windows = [(windows[-1][0], dt.date(1900, 1, 1), windows[-1][2])]
    for label, first, last in windows:
        part = frame.filter(pl.col("event_date").is_between(first, last))
        if part.is_empty():
            continue
        name = f"{source}_{label}.csv"
        extract = part.drop("person_id", "event_date", "family_id", "address_id")
        extract.write_csv(folder / name, null_value="")
        files += 1
        truth.append(
            part.select(
                pl.lit(source).alias("source"),
                pl.lit(name).alias("file"),
                pl.int_range(1, pl.len() + 1).alias("row"),
                "person_id",
                "family_id",
                "address_id",
            )
        )
    return truth, files


def people_truth(county) -> pl.DataFrame:
    """One row per resident, for scoring linkage by group (never read by the pipeline): the name
    tradition (heritage), sex, age band on the reference date, and whether the household moved."""
    return county.people.select(
        "person_id", pl.col("household_id").alias("family_id"), pl.col("heritage").alias("name_tradition"), "sex",
        age_band(pl.col("age")).alias("age_band"), pl.when(pl.col("prev_address_id") >= 0).then(pl.lit("mover")).otherwise(pl.lit("non-mover")).alias("mover"),
    )


def generate_county(
    people: int, seed: int, month: str, out: Path, progress: Callable[[str], None] | None = None, keying_errors: bool = True,
    nhs_number: bool = True, recording_mode: str = "standard", gazetteer: bool = True, files: str = "yearly",
) -> GenerationSummary:
    """Generate a county of `people` residents with history up to the end of `month`. With
    `keying_errors` (the default) a few identifiers, postcodes and dates are broken as keying
    breaks them (synthetic.recording.keying_errors); with `nhs_number` (the default) every extract
    that names people carries the consistent identifier at recording.NHS_NUMBER_RATES (else only
    A&E, as in version 1 of the spec); with `gazetteer` (the default) the council's address
    gazetteer, with its gaps (synthetic.gazetteer). `recording_mode`: synthetic.modes.RECORDING_MODES.
    `files`: FILE_PERIODS, how each source's rows are cut into files (the rows are the same either way).
    Each of these draws from a random stream of its own, so the county is otherwise the same
    with and without it."""
    say = progress or (lambda message: None)
    began = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = len(EXTRACTS) + 2

    def step_done(n: int, what: str, since: float) -> None:
        say(f"[{n:>{len(str(steps))}}/{steps}] {what} ({time.perf_counter() - since:.1f}s; {time.perf_counter() - began:.0f}s so far)")

    say(f"composing {people:,} residents in households")
    county = build_county(people, seed, month, adversary.heritage_for(recording_mode))
    if recording_mode != "standard":
        county = adversary.naming_conventions(county, np.random.default_rng(seed + 4))
    if recording_mode == "hard":
        county = adversary.households_as_they_are(county, np.random.default_rng(seed + 5))
    step_done(1, f"{county.people.height:,} residents in {county.households.height:,} households", began)
    habits = np.random.default_rng(seed + 6)
    identifiers = np.random.default_rng(seed + 3)
    rng = np.random.default_rng(seed + 1)
    timeline = extracts.Timeline(county)
    family = county.people["household_id"].to_numpy()
    summary = GenerationSummary(people=county.people.height, households=county.households.height)
    windows = _file_windows(county.start, county.reference, files)
    truth_parts: list[pl.DataFrame] = []
    frames = {}
    contracts = load_contracts()
    errors = np.random.default_rng(seed + 2)
    for n, (source, make) in enumerate(EXTRACTS.items(), start=2):
        step = time.perf_counter()
        frame = make(county, timeline, rng, frames)
        frames[source] = frame
        if recording_mode == "hard":
            frame = adversary.hard_habits(frame, source, contracts[source], county, habits)
        if nhs_number and source in recording.NHS_NUMBER_RATES:
            frame = recording.consistent_identifier(frame, source, county.people, identifiers)
        if keying_errors:
            frame = recording.keying_errors(frame, contracts[source].columns, errors)
        # the partner's layout in the contract's order (the spec does not promise one; ours is tidy)
        layout = [c.partner_name for c in contracts[source].columns if c.partner_name in frame.columns]
        frame = frame.select(*layout, *[c for c in frame.columns if c not in layout])
        frame = frame.with_columns(pl.Series("family_id", family[frame["person_id"].to_numpy()]))
        parts, files = _write_files(frame, source, out, windows, single_file=source in SINGLE_FILE)
        truth_parts += parts
        summary.files += files
        summary.rows[source] = sum(p.height for p in parts)
        step_done(n, f"{source}: {summary.rows[source]:,} rows in {files} files", step)
    step = time.perf_counter()
    localities = county.postcodes.select(
        pl.col("postcode").alias("POSTCODE"), pl.col("ward").alias("WARD"), pl.col("locality").alias("LOCALITY")
    )
    (out / "postcode_localities").mkdir(exist_ok=True)
    localities.write_csv(out / "postcode_localities" / "postcode_localities.csv")
    summary.files += 1
    summary.rows["postcode_localities"] = localities.height
    truth = pl.concat(truth_parts)
    truth.drop("address_id").write_csv(out / "truth.csv")
    if gazetteer:
        # which property each row with an address line was recorded at, for scoring address matching
        with_lines = [s for s, c in contracts.items() if c.has_column("address") or c.has_column("address_line_1")]
        truth.filter(pl.col("source").is_in(with_lines)).select("source", "file", "row", property_uprn(pl.col("address_id")).alias("uprn")).write_csv(out / "truth_addresses.csv")
        (out / "address_gazetteer").mkdir(exist_ok=True)
        properties = address_gazetteer(county.addresses, np.random.default_rng(seed + 7))
        properties.write_csv(out / "address_gazetteer" / "address_gazetteer.csv", null_value="")
        summary.files += 1
        summary.rows["address_gazetteer"] = properties.height
    people_truth(county).write_csv(out / "truth_people.csv")
    step_done(steps, "localities, gazetteer and the truth files", step)
    summary.seconds = time.perf_counter() - began
    say(f"wrote {summary.files} files and truth.csv in {summary.seconds:.1f}s")
    return summary
