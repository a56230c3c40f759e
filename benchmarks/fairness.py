"""Fairness of the scorecard model by deprivation and heritage, on a synthetic county whose
generator holds both (the partner extracts do not), by hand (not a test).

    .venv/bin/python benchmarks/pipeline.py --people 200000   # first: the run this reads
    .venv/bin/python benchmarks/fairness.py --people 200000

It evaluates the model on the run's warehouse exactly as `earlyhelp model` does, forms the
latest test month's families again (the same function, so the same references),
maps each family's members through linkage to the generator's true persons (truth.csv),
and reports, per deprivation quintile of the family's home and per heritage of its
members, the families, the share the model selects at the list size, the escalation rate
and recall at the list size. Groups under 30 families are shown but not flagged.
"""

from __future__ import annotations

import polars as pl
from common import CACHE, county_arguments
from pipeline import RESULTS

from features import load_registry
from linkage import form_families
from linkage.person_records import linked_person_records
from models.scorecard import evaluate
from synthetic.population import build_county
from warehouse import open_warehouse


def main() -> None:
    args = county_arguments(__doc__, [200_000])
    for people in args.people:
        out, landing = CACHE / f"out_{people}", CACHE / f"county_{people}_{args.seed}_{args.month}"
        with open_warehouse(out / "warehouse.duckdb", read_only=True) as con:
            from features.calendar import reference_date

            evaluation = evaluate(con, load_registry(), reference_date(args.month))
            linked, links = linked_person_records(con), con.sql("SELECT record_key, person_id FROM person_links").pl()
        members = form_families(linked, evaluation.test_month).members.select("person_id", "family_ref")
        truth = pl.read_csv(landing / "truth.csv", schema_overrides={"row": pl.Int64, "person_id": pl.Int64, "family_id": pl.Int64})
        keyed = truth.with_columns((pl.col("source") + "|" + pl.col("file") + "|" + pl.col("row").cast(pl.String)).alias("record_key"))
        # each linked person's true person: the one most of its mentions belong to
        true_person = (
            links.select("record_key", "person_id").join(keyed.select("record_key", pl.col("person_id").alias("true_person")), on="record_key")
            .group_by("person_id", "true_person").len().sort(["person_id", "len"], descending=[False, True])
            .group_by("person_id", maintain_order=True).agg(pl.col("true_person").first())
        )
        county = build_county(people, args.seed, args.month)
        population = county.people.select(pl.col("person_id").alias("true_person"), "heritage", "household_id").join(
            county.households.select("household_id", "deprivation_decile"), on="household_id"
        )
        family_groups = (
            members.join(true_person, on="person_id").join(population, on="true_person")
            .group_by("family_ref").agg(
                pl.col("deprivation_decile").mode().first().alias("decile"),
                pl.col("heritage").mode().first().alias("heritage"),
            )
            .with_columns(((pl.col("decile") - 1) // 2 + 1).cast(pl.String).alias("deprivation_quintile"))
        )
        test = evaluation.test_selection.filter(pl.col("reference") == evaluation.test_month).join(family_groups, on="family_ref", how="left")
        list_size = round(test["selected"].sum())
        print(f"\n{people:,} residents; test month {evaluation.test_month}; {test.height:,} families; list size {list_size:,}; "
              f"{test['deprivation_quintile'].null_count():,} families with no true person found")
        rows = []
        for group, label in (("deprivation_quintile", "deprivation quintile (1 = most deprived)"), ("heritage", "heritage")):
            table = test.group_by(pl.col(group).fill_null("unknown").alias("value")).agg(
                pl.len().alias("families"),
                pl.col("selected").mean().round(4).alias("selected_share"),
                pl.col("escalated").mean().round(4).alias("escalation_rate"),
                ((pl.col("selected") * pl.col("escalated")).sum() / pl.col("escalated").sum().clip(1)).round(4).alias("recall_at_k"),
            ).sort("value")
            mean = table.filter(pl.col("families") >= 30)["recall_at_k"].mean() or 0.0
            for r in table.iter_rows(named=True):
                flag = "gap" if r["families"] >= 30 and abs(r["recall_at_k"] - mean) > 0.15 else ""
                rows.append(f"| {label} | {r['value']} | {r['families']:,} | {r['selected_share']} | {r['escalation_rate']} | {r['recall_at_k']} | {flag} |")
        head = [
            f"{people:,} residents (seed {args.seed}, month {args.month}); test month {evaluation.test_month}; "
            f"{test.height:,} families; list size {list_size:,} (the families eligible that month; the model's chance of listing each).",
            "",
            "| group | value | families | selected share | escalation rate | recall at list size | flag |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        text = "\n".join(head + rows)
        print(text)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"fairness_{people}.md").write_text(f"# `benchmarks/fairness.py --people {people}`\n\n{text}\n")


if __name__ == "__main__":
    main()
