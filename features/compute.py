"""Compute every indicator in the registry for every linked person, with its evidence.

All work is DuckDB SQL over the warehouse: the raw tables (the partners' rows, as
loaded), `person_records` (which row is which mention), `person_links` (which
mention is which person) and `family_members` (who lives in which family, and
their age at the reference date). For each hit the evidence is the source rows
(source, file, row as in the spec's provenance) with their dates and values,
so a person can check every hit against the partner's extract.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from features.calendar import window_start
from features.registry import Indicator, Registry
from rules import AGE_GROUPS

#: The attendance return's columns an `attendance` indicator reads (named for the IG pack's field uses).
ATTENDANCE_COLUMNS = ("sessions_possible", "authorised_absence", "unauthorised_absence")



@dataclass
class IndicatorResult:
    person_indicators: pl.DataFrame  # indicator_id, person_id, family_ref, value, latest, evidence_rows
    evidence: pl.DataFrame  # indicator_id, person_id, family_ref, record_key, source, file, row, event_date, value
    family_indicators: pl.DataFrame  # family_ref, indicator_id, persons, latest


def _mentions(indicator: Indicator, members: str) -> str:
    """The source's rows joined to the person and family each belongs to, filtered by age."""
    return f"""
        SELECT r.*, pr.record_key, pr.source, pr.file, pr.row, pr.event_date, pl.person_id, m.family_ref, m.age
        FROM "raw_{indicator.source}" r
        JOIN person_records pr ON pr.source = '{indicator.source}' AND pr.file = r._file AND pr.row = r._row
        JOIN person_links pl ON pl.record_key = pr.record_key
        JOIN "{members}" m ON m.person_id = pl.person_id
        WHERE {AGE_GROUPS[indicator.applies_to]}
    """


def _evidence_sql(indicator: Indicator, reference: dt.date, con: duckdb.DuckDBPyConnection, members: str) -> str:
    """SQL giving one row per piece of evidence, with `value` the row's contribution."""
    start = window_start(reference, indicator.window_months)
    base = _mentions(indicator, members)
    if indicator.kind in ("count", "sum"):
        value = indicator.measure if indicator.kind == "sum" else "1"
        return f"""
            SELECT person_id, family_ref, record_key, source, file, row, event_date, CAST({value} AS DOUBLE) AS value, event_ref
            FROM ({base}) x
            JOIN (SELECT record_key AS rk, event_ref FROM person_records) e ON e.rk = x.record_key
            WHERE ({indicator.where}) AND event_date BETWEEN DATE '{start}' AND DATE '{reference}'
        """
    if indicator.kind == "open_within":
        return f"""
            SELECT person_id, family_ref, record_key, source, file, row, {indicator.start} AS event_date, 1.0 AS value, record_key AS event_ref
            FROM ({base}) x
            WHERE ({indicator.where}) AND {indicator.start} <= DATE '{reference}'
              AND ({indicator.end} IS NULL OR {indicator.end} >= DATE '{start}')
        """
    if indicator.kind == "attendance":
        terms = con.execute(
            f"""SELECT DISTINCT event_date FROM person_records WHERE source = '{indicator.source}'
                AND event_date <= DATE '{reference}' ORDER BY event_date DESC LIMIT {int(indicator.terms)}"""
        ).fetchall()
        dates = ", ".join(f"DATE '{d[0]}'" for d in terms) or "NULL"
        return f"""
            SELECT person_id, family_ref, record_key, source, file, row, event_date,
                   CAST(sessions_possible AS DOUBLE) AS possible,
                   CAST(authorised_absence + unauthorised_absence AS DOUBLE) AS absent
            FROM ({base}) x WHERE event_date IN ({dates})
        """
    raise ValueError(indicator.kind)


def _person_hits(con: duckdb.DuckDBPyConnection, indicator: Indicator, reference: dt.date, members: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    evidence = con.sql(_evidence_sql(indicator, reference, con, members)).pl()
    if indicator.kind == "attendance":
        per_person = evidence.group_by("person_id", "family_ref").agg(
            (1 - pl.col("absent").sum() / pl.col("possible").sum()).alias("value"),
            pl.col("event_date").max().alias("latest"),
            pl.len().alias("evidence_rows"),
            pl.col("possible").sum().alias("possible"),
        )
        hits = per_person.filter((pl.col("possible") > 0) & (pl.col("value") < indicator.threshold)).drop("possible")
        evidence = evidence.with_columns((1 - pl.col("absent") / pl.col("possible")).alias("value")).drop("possible", "absent")
    else:
        aggregate = pl.col("event_ref").n_unique() if indicator.kind == "count" else pl.col("value").sum()
        if indicator.kind == "open_within":
            aggregate = pl.len()
        per_person = evidence.group_by("person_id", "family_ref").agg(
            aggregate.cast(pl.Float64).alias("value"), pl.col("event_date").max().alias("latest"), pl.len().alias("evidence_rows")
        )
        hits = per_person.filter(pl.col("value") >= indicator.threshold)
        evidence = evidence.drop("event_ref")
    evidence = evidence.join(hits.select("person_id"), on="person_id", how="semi")
    tag = pl.lit(indicator.id).alias("indicator_id")
    return hits.select(tag, "person_id", "family_ref", "value", "latest", "evidence_rows"), evidence.select(
        tag, "person_id", "family_ref", "record_key", "source", "file", "row", "event_date", pl.col("value").cast(pl.Float64)
    )


def _household_hits(
    con: duckdb.DuckDBPyConnection, indicator: Indicator, registry: Registry, reference: dt.date, persons: pl.DataFrame, members: str
) -> pl.DataFrame:
    """Families where some member has `of` and no member has a row matching `unless_where`."""
    of = registry.get(indicator.of)
    with_of = persons.filter(pl.col("indicator_id") == of.id)
    blocked = pl.DataFrame(schema={"family_ref": pl.String})
    if indicator.unless_source and indicator.unless_where:
        unless = Indicator(**{**of.__dict__, "id": "_unless", "where": indicator.unless_where, "source": indicator.unless_source, "applies_to": "any"})
        blocked = con.sql(_evidence_sql(unless, reference, con, members)).pl().select("family_ref").unique()
    return (
        with_of.join(blocked, on="family_ref", how="anti")
        .group_by("family_ref")
        .agg(pl.col("latest").max(), pl.col("person_id").n_unique().alias("persons"))
        .with_columns(pl.lit(indicator.id).alias("indicator_id"))
    )


def compute_indicators(
    con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, members: str = "family_members"
) -> IndicatorResult:
    """Every indicator at `reference`, for the people in the table `members` (by default all of
    `family_members`; outcome tracking passes just the allocated families' members)."""
    persons, evidence = [], []
    for indicator in registry.indicators:
        if indicator.kind == "household":
            continue
        hits, rows = _person_hits(con, indicator, reference, members)
        persons.append(hits)
        evidence.append(rows)
    person_indicators = pl.concat(persons) if persons else pl.DataFrame()
    evidence_rows = pl.concat(evidence) if evidence else pl.DataFrame()
    family = person_indicators.group_by("family_ref", "indicator_id").agg(
        pl.col("person_id").n_unique().alias("persons"), pl.col("latest").max()
    )
    households = [_household_hits(con, i, registry, reference, person_indicators, members) for i in registry.indicators if i.kind == "household"]
    if households:
        family = pl.concat([family, *[h.select(family.columns) for h in households]])
    return IndicatorResult(
        person_indicators=person_indicators.sort("indicator_id", "person_id"),
        evidence=evidence_rows.sort("indicator_id", "person_id", "source", "file", "row"),
        family_indicators=family.sort("family_ref", "indicator_id"),
    )
