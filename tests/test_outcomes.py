"""Outcomes that last: the tracking rules on small hand-made months (no Dagster)."""

import datetime as dt

import polars as pl

from models.outcomes import (
    CLAIMABLE,
    IN_PROGRESS,
    NO_NEEDS,
    SUSTAINED_OPEN,
    months_between,
    track_outcomes,
)


def _needs(*pairs: tuple[str, str]) -> pl.DataFrame:
    return pl.DataFrame(list(pairs), schema={"family_ref": pl.String, "need": pl.String}, orient="row")


def _allocation(ref: str, identified: str, locality: str = "North") -> dict:
    return {"family_ref": ref, "meeting_date": dt.date(2025, 2, 10), "lead_agency": "SCHOOL", "identified_month": identified, "locality": locality}


def _track(months: dict[str, pl.DataFrame], allocations: list[dict], closures: list[tuple[str, dt.date | None]], month: str):
    return track_outcomes(
        pl.DataFrame(allocations),
        months,
        pl.DataFrame(closures, schema={"family_ref": pl.String, "case_closed": pl.Date}, orient="row"),
        month,
    )


def test_needs_improve_sustain_and_relapse():
    # F1: education improves from Feb and stays; DA improves in Feb, relapses in May, improves again.
    # F2: one need, never improves. F3: nothing met on its list month.
    months = {"2025-01": _needs(("F1", "education"), ("F1", "domestic abuse"), ("F2", "health"))}
    for m in months_between("2025-01", "2025-10"):
        rows = [("F2", "health")]
        if m == "2025-05":
            rows.append(("F1", "domestic abuse"))
        months[m] = _needs(*rows)
    allocations = [_allocation("F1", "2025-01"), _allocation("F2", "2025-01", "Coast"), _allocation("F3", "2025-01")]
    result = _track(months, allocations, [("F1", dt.date(2025, 3, 20))], "2025-10")

    needs = {(r["family_ref"], r["need"]): r for r in result.needs.iter_rows(named=True)}
    assert needs[("F1", "education")]["first_improved"] == "2025-02"
    assert needs[("F1", "education")]["months_sustained"] == 9 and needs[("F1", "education")]["status"] == "sustained"
    assert needs[("F1", "domestic abuse")]["first_improved"] == "2025-02"
    assert needs[("F1", "domestic abuse")]["months_sustained"] == 5  # June to October after the May relapse
    assert needs[("F1", "domestic abuse")]["status"] == "improved"
    assert needs[("F2", "health")]["status"] == "not improved" and needs[("F2", "health")]["months_sustained"] == 0
    assert result.monthly.filter(pl.col("family_ref") == "F1").height == 2 * 9

    families = {r["family_ref"]: r for r in result.families.iter_rows(named=True)}
    assert families["F1"]["claim_status"] == IN_PROGRESS  # DA relapsed after the case closed
    assert families["F2"]["claim_status"] == IN_PROGRESS
    assert families["F3"]["claim_status"] == NO_NEEDS

    report = {(r["locality"]): r for r in result.report.iter_rows(named=True)}
    assert report["North"]["families_allocated"] == 2 and report["North"]["needs_identified"] == 2
    assert report["North"]["needs_improved"] == 2 and report["North"]["needs_sustained"] == 1
    assert report["Coast"]["needs_improved"] == 0


def test_claim_needs_closure_six_months_back_and_every_need_sustained_since():
    months = {"2025-01": _needs(("A", "education"), ("B", "education"), ("C", "education"))}
    for m in months_between("2025-01", "2025-12"):
        months[m] = _needs()
    allocations = [_allocation(f, "2025-01") for f in "ABC"]
    result = _track(
        months, allocations,
        [("A", dt.date(2025, 5, 31)), ("B", dt.date(2025, 8, 1)), ("C", None)],
        "2025-12",
    )
    status = dict(result.families.select("family_ref", "claim_status").iter_rows())
    assert status == {"A": CLAIMABLE, "B": SUSTAINED_OPEN, "C": SUSTAINED_OPEN}
    assert result.report["families_claimable"].sum() == 1
    assert result.report["families_every_need_sustained"].sum() == 3

    # reported against the framework unless the council still claims (Children and Families Grant, 2025)
    from models.outcomes import programme_report

    outcomes = programme_report(result, "2025-12", "families_first")
    assert "Families First Partnership (Family Help)" in outcomes and "outcomes achieved" in outcomes and "claimable" not in outcomes.lower()
    claims = programme_report(result, "2025-12", "supporting_families", payment_claims=True)
    assert "| A |" in claims and "claimable" in claims and "not a claim" in claims


def test_families_first_keeps_the_supporting_families_outcomes_and_rule_until_a_council_edits_them():
    from rules import PROGRAMMES

    families_first, supporting = PROGRAMMES["families_first"], PROGRAMMES["supporting_families"]
    assert (families_first.needs, families_first.minimum, families_first.need_field) == (supporting.needs, supporting.minimum, supporting.need_field)
