"""earlyhelp's person linkage side by side with Splink 5 (DuckDB backend), by hand.

    .venv/bin/pip install -e ".[bench]"        # Splink 5, benchmark-only; never a runtime dependency
    .venv/bin/python benchmarks/linkage_vs_splink.py --people 20000 200000
    .venv/bin/python benchmarks/linkage_vs_splink.py --people 1200000 --splink-blocking scalable

For each size: generate the county (cached under benchmarks/cache/), run the pipeline
once to get `person_records` (the standardised input both linkers then read), and
link it with each in the same process, one after the other: wall time, and pairwise
precision, recall and F1 against truth. Splink's configuration is the sensible one
the issue names: blocking on date of birth, postcode with surname, and names; name,
date of birth and postcode comparisons; term frequencies on names; u by random
sampling, m by EM, the prior from a deterministic rule, clustering at 0.99.

At 1.2M residents that configuration does not finish on a 24 GiB machine: blocking and
EM on date of birth alone pair every two people born on the same day, which grows with
the square of the county (unbounded, DuckDB filled the memory; bounded to 10 GB, it
spilled 37 GB in that EM session in 6 minutes and was stopped). `--splink-blocking
scalable` gives Splink rules whose blocks do not grow with the county, as earlyhelp's do.
"""

from __future__ import annotations

import logging
import time

import duckdb
import polars as pl
from common import CACHE, county_arguments
from pipeline import RESULTS, machine

from linkage import link_persons
from linkage.evaluate import pairwise_score, read_truth

THRESHOLD = 0.99
SPLINK_MEMORY = "10GB"


def prepare(people: int, seed: int, month: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(person_records, truth) for a cached county, running the pipeline if needed."""
    from pipelines.cli import run_pipeline
    from synthetic import generate_county

    landing = CACHE / f"county_{people}_{seed}_{month}"
    if not (landing / "truth.csv").exists():
        generate_county(people, seed, month, landing)
    out = CACHE / f"out_{people}"
    warehouse = out / "warehouse.duckdb"
    if not warehouse.exists():
        run_pipeline(landing, month, out, log_level="ERROR")
    con = duckdb.connect(str(warehouse), read_only=True)
    records = con.sql("SELECT * FROM person_records").pl()
    con.close()
    return records, read_truth(landing / "truth.csv")


def score(records: pl.DataFrame, clusters: pl.DataFrame, truth: pl.DataFrame):
    frame = records.select("record_key", "source", "file", "row").join(clusters, on="record_key").join(truth, on=["source", "file", "row"])
    return pairwise_score(frame, "cluster", "person_id", "person")


def run_ours(records: pl.DataFrame) -> tuple[pl.DataFrame, float]:
    began = time.perf_counter()
    result = link_persons(records)
    return result.person_links.select("record_key", pl.col("person_id").alias("cluster")), time.perf_counter() - began


def run_splink(records: pl.DataFrame, blocking: str = "benchmark") -> tuple[pl.DataFrame, float]:
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    frame = records.select(
        pl.col("record_key").alias("unique_id"), "forename", "surname", "dob", "postcode", "sex"
    ).to_arrow()
    began = time.perf_counter()
    # Splink's DuckDB gets the same bound as earlyhelp's connections, with room to spill: unbounded,
    # at 1.2M residents it filled this 24 GiB machine during EM on the date-of-birth block
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{SPLINK_MEMORY}'")
    con.execute(f"SET temp_directory = '{CACHE / 'splink_spill'}'")
    db_api = DuckDBAPI(connection=con)
    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[
            block_on("dob"),
            block_on("postcode", "surname"),
            block_on("forename", "surname"),
        ] if blocking == "benchmark" else [
            # rules whose blocks do not grow with the county (date of birth alone, or a name
            # alone, pairs more people the larger the county)
            block_on("dob", "surname"),
            block_on("dob", "forename"),
            block_on("postcode", "surname"),
            block_on("forename", "surname", "postcode"),
        ],
        comparisons=[
            cl.NameComparison("forename").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison("dob", input_is_string=False),
            cl.PostcodeComparison("postcode"),
            cl.ExactMatch("sex"),
        ],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )
    linker = Linker(db_api.register(frame), settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match([block_on("forename", "surname", "dob")], recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=5e6, seed=1)
    if blocking == "benchmark":
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("forename", "surname"))
    else:
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob", "surname"))
        linker.training.estimate_parameters_using_expectation_maximisation(block_on("forename", "surname", "postcode"))
    predictions = linker.inference.predict(threshold_match_probability=0.5)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(predictions, THRESHOLD)
    result = clusters.as_duckdbpyrelation().select("unique_id, cluster_id").pl()
    seconds = time.perf_counter() - began
    return result.select(pl.col("unique_id").alias("record_key"), pl.col("cluster_id").cast(pl.String).alias("cluster")), seconds


def main() -> None:
    args = county_arguments(__doc__, [20_000, 200_000], splink_blocking=True)
    rows = []
    for people in args.people:
        records, truth = prepare(people, args.seed, args.month)
        before = _peak_mib()
        ours, ours_s = run_ours(records)
        after_ours = _peak_mib()
        print(f"earlyhelp: {ours_s:.1f}s, process peak {after_ours:,} MiB", flush=True)
        theirs, theirs_s = run_splink(records, args.splink_blocking)
        after_splink = _peak_mib()
        a, b = score(records, ours, truth), score(records, theirs, truth)
        # the process's peak so far: after ours it is ours (or the input's); a rise after Splink is Splink's
        rows.append((people, records.height, a, ours_s, b, theirs_s, before, after_ours, after_splink))
        print(f"{people:,} residents, {records.height:,} mentions: earlyhelp F1 {a.f1:.4f} in {ours_s:.1f}s; Splink F1 {b.f1:.4f} in {theirs_s:.1f}s", flush=True)
    lines = [
        f"Machine: {machine()}; month {args.month}, seed {args.seed}; Splink blocking: {args.splink_blocking}. Peak: the process's resident peak before linking, after earlyhelp, after Splink.",
        "",
        "| residents | mentions | earlyhelp P / R / F1 | earlyhelp (s) | Splink 5 P / R / F1 | Splink 5 (s) | time ratio (ours / Splink) | peak MiB: input / ours / Splink |",
        "| ---: | ---: | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for people, n, a, a_s, b, b_s, p0, p1, p2 in rows:
        lines.append(
            f"| {people:,} | {n:,} | {a.precision:.4f} / {a.recall:.4f} / {a.f1:.4f} | {a_s:.1f} | "
            f"{b.precision:.4f} / {b.recall:.4f} / {b.f1:.4f} | {b_s:.1f} | {a_s / b_s:.2f} | {p0:,} / {p1:,} / {p2:,} |"
        )
    print("\n" + "\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"linkage_vs_splink_{'_'.join(map(str, args.people))}.md").write_text(f"# `benchmarks/linkage_vs_splink.py --people {' '.join(map(str, args.people))}`\n\n" + "\n".join(lines) + "\n")


def _peak_mib() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


if __name__ == "__main__":
    main()
