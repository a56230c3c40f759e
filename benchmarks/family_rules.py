"""Family formation alone, again, on the warehouses benchmarks/linkage_quality.py kept, by hand.

    .venv/bin/python benchmarks/linkage_quality.py            # once: 15 counties through the pipeline (minutes)
    .venv/bin/python benchmarks/family_rules.py               # then after each change to linkage/families.py
    .venv/bin/python benchmarks/family_rules.py --no-gazetteer --modes hard

Person linkage is what those runs stored; only the household stage (`linkage.gazetteer`'s address
matching and readings, `linkage.form_families`) runs again, with the code as it is now, so a
change to a household rule is measured over every seed and mode in seconds rather than minutes.
The figures equal the whole pipeline's for the same code (the household stage is the last that
family F1 depends on). It prints pairwise family precision, recall and F1 per county, the
minimum per mode, and beside each F1 the one the kept run scored, so a change that lowers any
mode's minimum shows. `--no-gazetteer` forms households without the gazetteer the runs had.

Never tune to one county: keep a change only where no mode's minimum falls.
"""

from __future__ import annotations

import time

import duckdb
import polars as pl
from linkage_quality import county, grid_arguments, kept_warehouse

from features.calendar import reference_date
from linkage import form_families
from linkage.evaluate import pairwise_score
from linkage.gazetteer import AddressMatching, household_records, match_person_addresses, person_lines


def family_scores(warehouse, truth_path, reference, gazetteer: bool = True) -> dict:
    """Family precision, recall and F1 of households formed now on a kept warehouse, and of the
    families the kept run formed (`family_members`)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        matching = match_person_addresses(con) if gazetteer else AddressMatching(person_lines(con))
        members = form_families(household_records(con, matching), reference).members
        records = con.sql("SELECT r.source, r.file, r.row, l.person_id FROM person_records r JOIN person_links l USING (record_key)").pl()
        kept = con.sql("SELECT person_id, family_ref FROM family_members").pl()
    finally:
        con.close()
    truth = pl.read_csv(truth_path, schema_overrides={"row": pl.Int64, "family_id": pl.String})
    scored = records.join(truth, on=["source", "file", "row"]).join(members.select("person_id", "family_ref"), on="person_id").join(
        kept.rename({"family_ref": "kept_ref"}), on="person_id"
    )
    now = pairwise_score(scored.select("family_ref", "family_id"), "family_ref", "family_id", "family")
    before = pairwise_score(scored.select("kept_ref", "family_id"), "kept_ref", "family_id", "family")
    return {"precision": round(now.precision, 4), "recall": round(now.recall, 4), "f1": round(now.f1, 4), "kept_run_f1": round(before.f1, 4)}


def main() -> None:
    parser = grid_arguments(__doc__)
    parser.add_argument("--no-gazetteer", dest="gazetteer", action="store_false", help="households without the gazetteer the runs had")
    args = parser.parse_args()
    rows = []
    began = time.perf_counter()
    for mode in args.modes:
        for seed in args.seeds:
            warehouse = kept_warehouse(args.people, seed, args.month, mode, args.nhs_number, True)
            if not warehouse.exists():
                raise SystemExit(f"no kept warehouse for seed {seed}, mode {mode}: run benchmarks/linkage_quality.py first")
            truth = county(args.people, seed, args.month, mode, args.nhs_number, True) / "truth.csv"
            rows.append({"mode": mode, "seed": seed, **family_scores(warehouse, truth, reference_date(args.month), args.gazetteer)})
    runs = pl.DataFrame(rows)
    with pl.Config(tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True):
        print(runs)
        print("the minimum over seeds")
        print(runs.group_by("mode", maintain_order=True).agg(pl.col("precision", "recall", "f1", "kept_run_f1").min()))
    print(f"{len(rows)} counties in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
