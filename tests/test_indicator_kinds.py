"""Each indicator kind on a tiny DuckDB warehouse whose hits are known by hand.

Three people in two families: P1 (a child, F1), P2 (an adult, F1), P3 (a child, F2).
The partner's rows, the mentions and the links are written out here, so every
expected hit can be checked by reading the rows.
"""

from __future__ import annotations

import datetime as dt

import duckdb
import polars as pl
import pytest

from features.compute import people_mentions
from features.kinds import KINDS
from features.registry import Indicator

REFERENCE = dt.date(2026, 10, 31)


def _indicator(**fields) -> Indicator:
    base = {"id": "x", "title": "x", "description": "x", "points": 1, "outcome": "financial stability",
            "problem": "health", "sentence": "{value}", "source": "demo"}
    return Indicator(**{**base, **fields})


@pytest.fixture
def con(tmp_path):
    con = duckdb.connect(str(tmp_path / "tiny.duckdb"))
    raw = pl.DataFrame({
        "_file": ["a.csv"] * 8,
        "_row": list(range(1, 9)),
        "kind": ["ASB", "ASB", "ASB", "ASB", "ASB", "DA", "ASB", "ASB"],
        "ref": ["I1", "I1", "I2", "I3", "I4", "I5", "I6", "I7"],
        "suspensions": [2, 0, 1, 3, 0, 0, 0, 0],
        "sessions_possible": [100, 100, 100, 100, 100, 100, 100, 100],
        "authorised_absence": [5, 30, 0, 20, 0, 0, 0, 0],
        "unauthorised_absence": [0, 10, 5, 40, 0, 0, 0, 0],
        "opened": [dt.date(2026, 1, 1), None, dt.date(2024, 1, 1), None, None, None, None, None],
        "closed": [None, None, dt.date(2025, 2, 1), None, None, None, None, None],
    })
    # P1: rows 1, 2 (two rows of incident I1), 3; P2: rows 4, 6; P3: rows 5, 7, 8 (row 8 out of the window)
    people = ["P1", "P1", "P1", "P2", "P3", "P2", "P3", "P3"]
    dates = [dt.date(2026, 9, 1), dt.date(2026, 9, 1), dt.date(2026, 5, 1), dt.date(2026, 9, 1),
             dt.date(2026, 9, 1), dt.date(2026, 8, 1), dt.date(2026, 5, 1), dt.date(2024, 1, 1)]
    records = pl.DataFrame({
        "record_key": [f"demo:{i}" for i in range(1, 9)], "source": ["demo"] * 8, "file": ["a.csv"] * 8,
        "row": list(range(1, 9)), "event_date": dates, "event_ref": raw["ref"],
    })
    links = pl.DataFrame({"record_key": records["record_key"], "person_id": people})
    members = pl.DataFrame({"person_id": ["P1", "P2", "P3"], "family_ref": ["F1", "F1", "F2"], "age": [12, 40, 9]})
    for name, frame in {"raw_demo": raw, "person_records": records, "person_links": links, "family_members": members}.items():
        con.register("_frame", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _frame")
        con.unregister("_frame")
    yield con
    con.close()


def _hits(con, indicator: Indicator) -> dict[str, float]:
    kind = indicator.rule
    with people_mentions(con, "family_members", {"demo": None}) as mentions:
        evidence = con.sql(kind.evidence_sql(indicator, REFERENCE, mentions, con)).pl()
    hits, _ = kind.person_hits(indicator, evidence)
    return dict(hits.select("person_id", "value").iter_rows())


def test_count_counts_distinct_events_in_the_window(con):
    # P1: I1 (two rows, one incident) and I2 -> 2; P2: I3 -> 1 (its DA row does not match); P3: I4, I6 -> 2 (I7 too old)
    indicator = _indicator(kind="count", where="kind = 'ASB'", threshold=2)
    assert _hits(con, indicator) == {"P1": 2.0, "P3": 2.0}
    assert pl.select(KINDS["count"].value_text(pl.lit(2.0))).item() == "2"
    assert KINDS["count"].window(indicator) == "12"


def test_sum_adds_a_measure_and_needs_one(con):
    indicator = _indicator(kind="sum", measure="suspensions", threshold=3)
    assert _hits(con, indicator) == {"P1": 3.0, "P2": 3.0}
    assert KINDS["sum"].check(_indicator(kind="sum"), {"suspensions"}) == "sum needs a measure column"
    assert KINDS["sum"].fields(_indicator(kind="sum", measure="suspensions", where="kind = 'ASB'")) == {"kind", "suspensions", "asb"}


def test_attendance_is_the_share_of_sessions_attended_over_the_last_terms(con):
    # the last three distinct term dates are 2026-09-01, 2026-08-01 and 2026-05-01
    indicator = _indicator(kind="attendance", terms=3, threshold=0.9)
    hits = _hits(con, indicator)
    # P1: 1 - (5 + 40 + 5) / 300; P2: 1 - 60 / 200; P3: 1 - 0 / 200 = 1.0, no hit
    assert hits == pytest.approx({"P1": 1 - 50 / 300, "P2": 1 - 60 / 200})
    assert pl.select(KINDS["attendance"].value_text(pl.lit(0.834))).item() == "83%"
    assert KINDS["attendance"].window(indicator) == "3 terms"
    assert {"sessions_possible", "authorised_absence", "unauthorised_absence"} <= KINDS["attendance"].fields(indicator)


def test_open_within_counts_spells_open_at_some_point_in_the_window(con):
    # row 1: opened 2026-01, still open; row 3: 2024-01 to 2025-02, closed before the window (from 2025-11)
    indicator = _indicator(kind="open_within", where="opened IS NOT NULL", start="opened", end="closed")
    assert _hits(con, indicator) == {"P1": 1.0}
    assert KINDS["open_within"].check(_indicator(kind="open_within", start="opened"), set()) == "open_within needs start and end columns"


def test_applies_to_limits_the_people_an_indicator_reads(con):
    adults = _indicator(kind="count", where="kind = 'ASB'", applies_to="adult")
    assert _hits(con, adults) == {"P2": 1.0}


def test_household_needs_a_member_with_the_indicator_and_no_exception(con):
    of = _indicator(id="asb", kind="count", where="kind = 'ASB'")
    with people_mentions(con, "family_members", {"demo": None}) as mentions:
        evidence = con.sql(of.rule.evidence_sql(of, REFERENCE, mentions, con)).pl()
        hits, _ = of.rule.person_hits(of, evidence)
        persons = hits.with_columns(pl.lit("asb").alias("indicator_id"))
        household = _indicator(id="household_asb", kind="household", source=None, of="asb")
        found = household.rule.family_hits(household, of, REFERENCE, persons, mentions, con)
        assert dict(found.select("family_ref", "persons").iter_rows()) == {"F1": 2, "F2": 1}
        # a domestic abuse row in F1 is the exception: F1 no longer counts
        excepted = _indicator(id="household_asb", kind="household", source=None, of="asb", unless_source="demo", unless_where="kind = 'DA'")
        found = excepted.rule.family_hits(excepted, of, REFERENCE, persons, mentions, con)
    assert found["family_ref"].to_list() == ["F2"]
    assert not household.rule.person_level and household.rule.window(household) == "-"


def test_every_kind_the_registry_may_name_computes_one_way_or_the_other():
    from features.kinds import IndicatorKind

    for name, kind in KINDS.items():
        assert kind.name == name
        # a person-level kind says how to find its evidence; a family-level one builds on members' hits
        assert (type(kind).evidence_sql is not IndicatorKind.evidence_sql) == kind.person_level or hasattr(kind, "family_hits"), name
