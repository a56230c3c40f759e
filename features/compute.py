"""Compute every indicator in the registry for every linked person, with its evidence.

All work is DuckDB SQL over the warehouse: the raw tables (the partners' rows, as
loaded), `person_records` (which row is which mention), `person_links` (which
mention is which person) and `family_members` (who lives in which family, and
their age at the reference date). For each hit the evidence is the source rows
(source, file, row as in the spec's provenance) with their dates and values,
so a person can check every hit against the partner's extract. The people's mentions
are joined to their persons and families once (`people_mentions`) and each indicator
reads its source's rows through them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import polars as pl

from features.registry import Indicator, Registry
from linkage.person_records import mention_join
from warehouse import linked_mentions


@dataclass
class IndicatorResult:
    person_indicators: pl.DataFrame  # indicator_id, person_id, family_ref, value, latest, evidence_rows
    evidence: pl.DataFrame  # indicator_id, person_id, family_ref, record_key, source, file, row, event_date, value
    family_indicators: pl.DataFrame  # family_ref, indicator_id, persons, latest


#: What the indicators read of each mention, beside its source row's own columns. Not its
#: record_key: the evidence rows make it from their source, file and row
#: (`linkage.person_records.record_key_sql`); carried for the 3.7M mentions at 1.2M residents, it
#: took the mentions' table 1.46-1.67 -> 1.19-1.28 s to make.
MENTION_COLUMNS = "pr.source, pr.file, pr.row, pr.event_date, pr.event_ref, pl.person_id"


def indicator_sources(registry: Registry) -> list[str]:
    """Every source an indicator, or an indicator's exception, reads."""
    return sorted({i.source for i in registry.indicators if i.source} | {i.unless_source for i in registry.indicators if i.unless_source})


@contextmanager
def sources_mentions(con: duckdb.DuckDBPyConnection, sources: list[str], name: str = "indicator_linked_mentions") -> Iterator[str]:
    """A temporary table of the sources' mentions with their persons (`MENTION_COLUMNS`), for
    indicators at several months to start from (the scorecard's): its name, dropped afterwards."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {linked_mentions(MENTION_COLUMNS, mention_join(con))} WHERE pr.source IN (SELECT unnest($sources))", {"sources": sources})
    try:
        yield name
    finally:
        con.execute(f"DROP TABLE IF EXISTS {name}")


@contextmanager
def people_mentions(con: duckdb.DuckDBPyConnection, members: str, sources: list[str], linked: str | None = None) -> Iterator[str]:
    """A temporary table of the people in `members`' mentions in the sources, with each one's
    family_ref and age: its name, dropped afterwards. Made once, so that every indicator joins
    its source's rows to it rather than joining person_records to person_links again.
    `linked`: a table from `sources_mentions` to start from."""
    name = f"{members}_mentions"
    of_sources = f'"{linked}"' if linked else f"({linked_mentions(MENTION_COLUMNS, mention_join(con))} WHERE pr.source IN (SELECT unnest($sources)))"
    con.execute(
        f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT l.*, m.family_ref, m.age FROM {of_sources} l JOIN "{members}" m ON m.person_id = l.person_id',
        None if linked else {"sources": sources},
    )
    try:
        yield name
    finally:
        con.execute(f'DROP TABLE IF EXISTS "{name}"')


def _person_hits(indicator: Indicator, evidence: pl.DataFrame, with_evidence: bool = True) -> tuple[pl.DataFrame, pl.DataFrame | None]:
    hits, evidence = indicator.rule.person_hits(indicator, evidence)
    tag = pl.lit(indicator.id).alias("indicator_id")
    hits = hits.select(tag, "person_id", "family_ref", "value", "latest", "evidence_rows")
    if not with_evidence:
        return hits, None
    evidence = evidence.join(hits.select("person_id"), on="person_id", how="semi")
    return hits, evidence.select(tag, "person_id", "family_ref", "record_key", "source", "file", "row", "event_date", pl.col("value").cast(pl.Float64))


def compute_indicators(
    con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, members: str = "family_members", linked: str | None = None,
    with_evidence: bool = True,
) -> IndicatorResult:
    """Every indicator at `reference`, for the people in the table `members` (by default all of
    `family_members`; outcome tracking passes just the allocated families' members). `linked`:
    the sources' mentions with their persons made ahead (`sources_mentions`), when several
    months' indicators are computed from one warehouse. `with_evidence` false: the hits alone,
    `evidence` left empty (the scorecard's past months, which show no one their evidence)."""
    with people_mentions(con, members, indicator_sources(registry), linked) as mentions:
        # indicators reading the same rows (persistent and severe absence: the same terms, other
        # thresholds) read them once; the results are sorted below, so the order read is free
        reading: dict[str, list[Indicator]] = {}
        for indicator in registry.indicators:
            if indicator.rule.person_level:
                reading.setdefault(indicator.rule.evidence_sql(indicator, reference, mentions, con), []).append(indicator)
        persons, evidence = [], []
        for sql, indicators in reading.items():
            rows_read = con.sql(sql).pl()
            for indicator in indicators:
                hits, rows = _person_hits(indicator, rows_read, with_evidence)
                persons.append(hits)
                if rows is not None:
                    evidence.append(rows)
            del rows_read
        person_indicators = pl.concat(persons) if persons else pl.DataFrame()
        evidence_rows = pl.concat(evidence).sort("indicator_id", "person_id", "source", "file", "row") if evidence else pl.DataFrame()
        family = person_indicators.group_by("family_ref", "indicator_id").agg(
            pl.col("person_id").n_unique().alias("persons"), pl.col("latest").max()
        )
        households = [
            i.rule.family_hits(i, registry.get(i.of), reference, person_indicators, mentions, con)
            for i in registry.indicators
            if not i.rule.person_level
        ]
    if households:
        family = pl.concat([family, *[h.select(family.columns) for h in households]])
    return IndicatorResult(
        person_indicators=person_indicators.sort("indicator_id", "person_id"),
        evidence=evidence_rows,
        family_indicators=family.sort("family_ref", "indicator_id"),
    )
