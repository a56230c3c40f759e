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
from warehouse import linked_mentions, sql_literal


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


#: Per source, the first and last date of the mentions some indicator reads, or None for any date.
DatesRead = dict[str, tuple[dt.date, dt.date] | None]


def dates_read(registry: Registry, reference: dt.date, con: duckdb.DuckDBPyConnection) -> DatesRead:
    """What the registry's indicators read of each source's mentions at `reference`
    (`IndicatorKind.dates_read`, a household's exception's included), each source's dates one
    span from the earliest read to the latest."""
    spans: dict[str, list[tuple[dt.date, dt.date] | None]] = {}
    for indicator in registry.indicators:
        read = indicator if indicator.rule.person_level else indicator.rule.unless(indicator, registry.get(indicator.of))
        if read is not None:
            spans.setdefault(read.source, []).append(read.rule.dates_read(read, reference, con))
    return {
        source: None if None in of_source else (min(first for first, _ in of_source), max(last for _, last in of_source))
        for source, of_source in sorted(spans.items())
    }


def _dates_read_sql(read: DatesRead, mention: str = "l") -> str:
    """SQL: whether a mention (aliased `mention`) is one `read` names."""
    either = [
        f"({mention}.source = {sql_literal(source)}" + (f" AND {mention}.event_date BETWEEN DATE '{span[0]}' AND DATE '{span[1]}')" if span else ")")
        for source, span in read.items()
    ]
    return " OR ".join(either) or "false"


@contextmanager
def people_mentions(con: duckdb.DuckDBPyConnection, members: str, read: DatesRead, linked: str | None = None) -> Iterator[str]:
    """A temporary table of the people in `members`' mentions that the indicators read (`read`:
    the sources, and the dates of each, `dates_read`), with each one's family_ref and age: its
    name, dropped afterwards. Made once, so that every indicator joins its source's rows to it
    rather than joining person_records to person_links again; for the dates read alone, as the
    windows look back a year over three years of records: at 1.2M residents 1.4M of the 3.7M
    mentions, the table made in 0.57-0.66 s rather than 0.95-1.07, the indicators in 2.34 s
    rather than 2.68 (medians of six, alternating), the same hits and evidence. `linked`: a
    table from `sources_mentions` to start from."""
    name = f"{members}_mentions"
    of_sources = f'"{linked}"' if linked else f"({linked_mentions(MENTION_COLUMNS, mention_join(con))})"
    con.execute(
        f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT l.*, m.family_ref, m.age FROM {of_sources} l '
        f'JOIN "{members}" m ON m.person_id = l.person_id WHERE {_dates_read_sql(read)}'
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
    with people_mentions(con, members, dates_read(registry, reference, con), linked) as mentions:
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
