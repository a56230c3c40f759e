"""The two ways a landing CSV is read, and the two ways a table reaches Great Expectations, side
by side in one process, by hand (not a test).

    .venv/bin/python benchmarks/ingestion_paths.py --people 200000 1200000 --repeat 3

Ingestion reads a well-formed CSV with Polars and keeps Python's csv module for a file with a
malformed record (so that record is quarantined with its number). In November 2026 a renamed
Polars argument made the fast read fail, and every file went the slow way with nothing said;
this prints both paths' times for the biggest sources of a cached county (`read_source`, so
checking and reconciling are in both), and the pandas frame the contract suites validate,
made by DuckDB's `.df()` and by `expectations.frame_for_validation`. Runs interleave the two
ways; figures are medians. The county must be cached (benchmarks/pipeline.py makes it).
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from unittest import mock

import duckdb
from common import CACHE, county_arguments

from data_contracts import load_contracts
from expectations import frame_for_validation
from ingestion import readers
from ingestion.load import read_source, write_source

SOURCES = ("school_attendance", "ae_attendances")
TODAY = dt.date(2026, 11, 23)


def _slow_only(*args, **kwargs):
    import polars as pl

    raise pl.exceptions.ComputeError("benchmark: the slow path")


def main() -> None:
    args = county_arguments(__doc__, [200_000], repeat=True)
    print("| residents | what | way | median (s) | ratio (slow / fast) |\n| ---: | --- | --- | ---: | ---: |")
    for people in args.people:
        landing = CACHE / f"county_{people}_{args.seed}_{args.month}"
        if not landing.is_dir():
            raise SystemExit(f"no cached county at {landing}: run benchmarks/pipeline.py --people {people} first")
        con = duckdb.connect()
        for source in SOURCES:
            contract = load_contracts()[source]
            times: dict[str, list[float]] = {"Polars (fast)": [], "csv module (slow)": []}
            for _ in range(args.repeat):
                for way in times:
                    began = time.perf_counter()
                    if way.startswith("Polars"):
                        result = read_source(contract, landing, TODAY)
                    else:
                        with mock.patch.object(readers.pl, "read_csv", _slow_only):
                            result = read_source(contract, landing, TODAY)
                    times[way].append(time.perf_counter() - began)
            write_source(con, contract, result, TODAY)
            fast, slow = statistics.median(times["Polars (fast)"]), statistics.median(times["csv module (slow)"])
            print(f"| {people:,} | read_source {source} | Polars | {fast:.2f} | |")
            print(f"| {people:,} | read_source {source} | csv module | {slow:.2f} | {slow / fast:.1f}x |")
            frames = {"frame_for_validation (Arrow)": [], ".df() (pandas objects)": []}
            for _ in range(args.repeat):
                for way in frames:
                    relation = con.sql(f'SELECT * FROM "{contract.raw_table}"')
                    began = time.perf_counter()
                    frame_for_validation(relation) if way.startswith("frame_for") else relation.df()
                    frames[way].append(time.perf_counter() - began)
            arrow, plain = (statistics.median(v) for v in frames.values())
            print(f"| {people:,} | GX frame {source} | Arrow-backed | {arrow:.2f} | |")
            print(f"| {people:,} | GX frame {source} | .df() | {plain:.2f} | {plain / arrow:.1f}x |")
        con.close()


if __name__ == "__main__":
    main()
