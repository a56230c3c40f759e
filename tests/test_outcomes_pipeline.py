"""Outcomes tracked after allocation, from real Dagster runs a year apart on a synthetic county."""

from __future__ import annotations

import shutil

import duckdb
import polars as pl
import pytest

from pipelines.cli import run_pipeline
from rules import PROGRAMMES
from tests.conftest import MONTH, assert_renders_as_document

LIST_MONTH = "2025-06"


# Troubled Families once recorded Supporting Families outcomes as the listed needs while
# tracking its own problems, so no need could match and every one showed as improved.
@pytest.mark.parametrize("programme", sorted(PROGRAMMES))
def test_allocated_families_needs_are_tracked_month_by_month(village, tmp_path, programme):
    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    out = tmp_path / "out"
    assert run_pipeline(landing, LIST_MONTH, out, programme=programme).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    first = con.sql("SELECT family_ref, locality, needs FROM locality_lists ORDER BY locality, rank").pl()
    con.close()
    allocated = first.group_by("locality", maintain_order=True).head(3)
    (landing / "meeting_outcomes").mkdir()
    pl.DataFrame(
        {
            "FAMILY_REF": allocated["family_ref"],
            "MEETING_DATE": ["2025-07-15"] * allocated.height,
            "DECISION": ["ALLOCATED"] * allocated.height,
            "LEAD_AGENCY": ["School"] * allocated.height,
            "NOTES": [None] * allocated.height,
        }
    ).write_csv(landing / "meeting_outcomes" / "meeting_outcomes_2025-07.csv")

    result = run_pipeline(landing, MONTH, out, programme=programme)
    assert result.success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    families = con.sql("SELECT * FROM family_outcomes").pl()
    needs = con.sql("SELECT * FROM need_outcomes").pl()
    monthly = con.sql("SELECT * FROM outcome_months").pl()
    scores_now = con.sql("SELECT family_ref, needs FROM family_scores").pl()
    evidence = con.sql("SELECT * FROM claim_evidence").pl()
    tracked = set(families["family_ref"])
    # families whose reference still stands a year on are tracked (the rest are reported as unknown)
    unknown = set(con.sql("SELECT family_ref FROM decision_discrepancies").pl()["family_ref"])
    assert tracked | unknown == set(allocated["family_ref"]) and len(tracked) >= allocated.height // 2

    # the needs identified are exactly the headline needs the meeting saw on its list
    on_list = {r["family_ref"]: set(r["needs"]) for r in first.iter_rows(named=True)}
    assert set(needs["need"]) <= set(PROGRAMMES[programme].needs) and needs.height > 0
    for ref in tracked:
        assert set(needs.filter(pl.col("family_ref") == ref)["need"]) == on_list[ref]
        assert families.filter(pl.col("family_ref") == ref)["identified_month"].item() == LIST_MONTH
    # every month after the list is checked, up to the reference month
    per_need = monthly.group_by("family_ref", "need").agg(pl.col("month").sort())
    assert all(months == [f"2025-{m:02d}" for m in range(7, 13)] + [f"2026-{m:02d}" for m in range(1, 10)] for months in per_need["month"].to_list())
    # this month's check agrees with the family's score, computed over the whole county, where
    # the family is still the people the meeting saw
    now = {r["family_ref"]: set(r["needs"] or []) for r in scores_now.iter_rows(named=True)}
    seen = con.sql(f"SELECT family_ref, list(person_id ORDER BY person_id) FROM list_audit_members WHERE month = '{LIST_MONTH}' GROUP BY 1").pl()
    current = con.sql("SELECT family_ref, list(person_id ORDER BY person_id) FROM family_members GROUP BY 1").pl()
    unchanged = set(seen.join(current, on=seen.columns).get_column("family_ref"))
    compared = 0
    for r in monthly.filter((pl.col("month") == MONTH) & pl.col("family_ref").is_in(list(unchanged))).iter_rows(named=True):
        assert r["met"] == (r["need"] in now.get(r["family_ref"], set())), r["family_ref"]
        compared += 1
    assert compared > 0
    assert not monthly.filter(pl.col("month") == MONTH)["met"].is_null().any()
    # sustained means six consecutive improved months up to now
    last_six = monthly.filter(pl.col("month") >= "2026-04").group_by("family_ref", "need").agg((~pl.col("met")).all().alias("six_clear"))
    joined = needs.join(last_six, on=["family_ref", "need"])
    assert ((joined["status"] == "sustained") == joined["six_clear"]).all()
    assert needs["status"].is_in(["sustained", "improved", "not improved"]).all()

    # each need's evidence points at rows held in the warehouse
    assert set(evidence.select("family_ref", "need").unique().iter_rows()) == set(needs.select("family_ref", "need").iter_rows())
    for source, file, row in evidence.select("source", "file", "row").head(20).iter_rows():
        assert con.execute(f'SELECT count(*) FROM "raw_{source}" WHERE _file = ? AND _row = ?', [file, row]).fetchall()[0][0] == 1
    report = con.sql("SELECT * FROM programme_report").pl()
    assert report["families_allocated"].sum() == len(tracked)
    assert report["needs_identified"].sum() == needs.height
    con.close()
    html = (out / "outcomes" / MONTH / "programme_report.html").read_text()
    assert all(ref in html for ref in tracked)
    if programme == "supporting_families":
        assert_renders_as_document(out / "outcomes" / MONTH / "programme_report.html", tmp_path)
    assert (out / "outcomes" / MONTH / "claim_evidence.csv").stat().st_mode & 0o077 == 0
