"""A month's ingestion both ways, side by side in one process, by hand (not a test).

    .venv/bin/python benchmarks/monthly_ingestion.py --people 200000 1200000 --repeat 3

For the biggest sources of a cached county: last month's files (every file but the latest,
as benchmarks/pipeline.py lays them out) are loaded into a fresh warehouse, then this month's
(every file) are loaded over them reading every file again, and reading only the new ones
(`previous_load`), each timed from reading to the tables written. The two ways interleave;
figures are medians. The synthetic county sends a file a year, so a month adds about a quarter
of the rows; a partner sending monthly files adds a thirty-sixth. The county must be cached.
"""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
from common import CACHE, county_arguments
from pipeline import last_month

from data_contracts import load_contracts
from ingestion.load import previous_load, read_source, write_source

SOURCES = ("school_attendance", "ae_attendances")
TODAY = dt.date(2026, 11, 23)
WAYS = ("every file", "new files only")


def main() -> None:
    args = county_arguments(__doc__, [200_000, 1_200_000], repeat=True)
    rows = []
    folder = Path(tempfile.mkdtemp())
    try:
        for people in args.people:
            landing = CACHE / f"county_{people}_{args.seed}_{args.month}"
            before = last_month(landing)
            for source in SOURCES:
                contract = load_contracts()[source]
                times: dict[str, list[float]] = {way: [] for way in WAYS}
                for attempt in range(args.repeat):
                    for way in WAYS:
                        with duckdb.connect(str(folder / f"{source}_{attempt}_{way[:3]}.duckdb")) as con:
                            write_source(con, contract, read_source(contract, before, TODAY), TODAY)
                            began = time.perf_counter()
                            result = read_source(contract, landing, TODAY, previous_load(con, contract) if way == WAYS[1] else None)
                            write_source(con, contract, result, TODAY)
                            times[way].append(time.perf_counter() - began)
                every, new = (statistics.median(times[way]) for way in WAYS)
                rows.append(f"| {people:,} | {source} | {result.loaded:,} | {result.files_read} of {len(result.files)} | {every:.2f} | {new:.2f} | {every / new:.1f}x |")
                print(rows[-1])
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    table = "\n".join([
        f"Medians of {args.repeat}, the two ways interleaved.", "",
        "| residents | source | rows | files read (new only) | every file (s) | new files only (s) | ratio |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |", *rows,
    ])
    print("\n" + table)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "monthly_ingestion.md").write_text(f"# `benchmarks/monthly_ingestion.py --people {' '.join(map(str, args.people))} --repeat {args.repeat}`\n\n{table}\n")


if __name__ == "__main__":
    main()
