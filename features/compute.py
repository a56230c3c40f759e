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

from features.registry import Indicator, Registry


@dataclass
class IndicatorResult:
    person_indicators: pl.DataFrame  # indicator_id, person_id, family_ref, value, latest, evidence_rows
    evidence: pl.DataFrame  # indicator_id, person_id, family_ref, record_key, source, file, row, event_date, value
    family_indicators: pl.DataFrame  # family_ref, indicator_id, persons, latest


def _person_hits(con: duckdb.DuckDBPyConnection, indicator: Indicator, reference: dt.date, members: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    kind = indicator.rule
    evidence = con.sql(kind.evidence_sql(indicator, reference, members, con)).pl()
    hits, evidence = kind.person_hits(indicator, evidence)
    evidence = evidence.join(hits.select("person_id"), on="person_id", how="semi")
    tag = pl.lit(indicator.id).alias("indicator_id")
    return hits.select(tag, "person_id", "family_ref", "value", "latest", "evidence_rows"), evidence.select(
        tag, "person_id", "family_ref", "record_key", "source", "file", "row", "event_date", pl.col("value").cast(pl.Float64)
    )


def compute_indicators(
    con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, members: str = "family_members"
) -> IndicatorResult:
    """Every indicator at `reference`, for the people in the table `members` (by default all of
    `family_members`; outcome tracking passes just the allocated families' members)."""
    persons, evidence = [], []
    for indicator in registry.indicators:
        if not indicator.rule.person_level:
            continue
        hits, rows = _person_hits(con, indicator, reference, members)
        persons.append(hits)
        evidence.append(rows)
    person_indicators = pl.concat(persons) if persons else pl.DataFrame()
    evidence_rows = pl.concat(evidence) if evidence else pl.DataFrame()
    family = person_indicators.group_by("family_ref", "indicator_id").agg(
        pl.col("person_id").n_unique().alias("persons"), pl.col("latest").max()
    )
    households = [
        i.rule.family_hits(i, registry.get(i.of), reference, person_indicators, members, con)
        for i in registry.indicators
        if not i.rule.person_level
    ]
    if households:
        family = pl.concat([family, *[h.select(family.columns) for h in households]])
    return IndicatorResult(
        person_indicators=person_indicators.sort("indicator_id", "person_id"),
        evidence=evidence_rows.sort("indicator_id", "person_id", "source", "file", "row"),
        family_indicators=family.sort("family_ref", "indicator_id"),
    )
