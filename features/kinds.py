"""Indicator kinds: how an indicator of each kind is checked, computed, worded and read.

Every kind honours one small contract, the way scikit-learn's estimators share
`fit`/`predict`, so callers never branch on a kind's name:

- `check(indicator, columns)`: what is wrong with the registry entry, or None;
- `fields(indicator)`: the source columns it reads (for the IG pack's field uses);
- `evidence_sql(indicator, reference, mentions, con)`: one row per piece of evidence
  (over the people's linked mentions in the table `mentions`, made by
  `features.compute.people_mentions`), with `value` the row's contribution;
- `dates_read(indicator, reference, con)`: the dates of the mentions `evidence_sql`
  reads (first, last), or None for any date: only those mentions are made;
- `person_hits(indicator, evidence)`: (hits per person, evidence kept);
- `value_text(value)`: the value as a reason sentence shows it;
- `window(indicator)`: the look-back as the ATRS record states it.

A family-level kind (`household`) sets `person_level = False` and computes with
`family_hits` from members' hits instead. Adding a kind is one class here and its
name in the registry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import TYPE_CHECKING, ClassVar

import duckdb
import polars as pl

from features.calendar import window_start
from linkage.person_records import record_key_sql
from rules import AGE_GROUPS
from warehouse import linked_rows

if TYPE_CHECKING:
    from features.registry import Indicator

_WORD = re.compile(r"[a-z_][a-z0-9_]*")
#: What every person-level kind's evidence rows carry: the row's provenance, its date and value.
EVIDENCE_COLUMNS = ("person_id", "family_ref", "record_key", "source", "file", "row", "event_date")


def mentions_sql(indicator: Indicator, mentions: str) -> str:
    """The source's rows joined to the person and family each belongs to, filtered by age.
    mentions: the people's linked mentions with family_ref and age (`people_mentions`)."""
    columns = f"r.*, {record_key_sql('m')} AS record_key, m.source, m.file, m.row, m.event_date, m.event_ref, m.person_id, m.family_ref, m.age"
    return f"{linked_rows(indicator.source, columns, mentions)} WHERE {AGE_GROUPS[indicator.applies_to]}"


def _words(*sql: str | None) -> set[str]:
    return {w for text in sql if text for w in _WORD.findall(text.lower())}


def _per_person(evidence: pl.DataFrame, value: pl.Expr) -> pl.DataFrame:
    return evidence.group_by("person_id", "family_ref").agg(
        value.cast(pl.Float64).alias("value"), pl.col("event_date").max().alias("latest"), pl.len().alias("evidence_rows")
    )


class IndicatorKind:
    """The contract every kind honours; the defaults are those of an event-counting kind."""

    name: ClassVar[str]
    person_level: ClassVar[bool] = True

    def check(self, indicator: Indicator, columns: set[str]) -> str | None:
        return None

    def fields(self, indicator: Indicator) -> set[str]:
        return _words(indicator.where)

    def evidence_sql(self, indicator: Indicator, reference: dt.date, mentions: str, con: duckdb.DuckDBPyConnection) -> str:
        raise NotImplementedError

    def dates_read(self, indicator: Indicator, reference: dt.date, con: duckdb.DuckDBPyConnection) -> tuple[dt.date, dt.date] | None:
        """The first and last event date (the mention's) of the mentions `evidence_sql` reads, or
        None where it may read a mention of any date (a spell dated by its own columns)."""
        return None

    def person_hits(self, indicator: Indicator, evidence: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Hits where the per-person value reaches the threshold."""
        hits = _per_person(evidence, self.aggregate()).filter(pl.col("value") >= indicator.threshold)
        return hits, evidence.drop("event_ref", strict=False)

    def aggregate(self) -> pl.Expr:
        return pl.len()

    def value_text(self, value: pl.Expr) -> pl.Expr:
        return value.cast(pl.Int64).cast(pl.String)

    def window(self, indicator: Indicator) -> str:
        return str(indicator.window_months)


class _Events(IndicatorKind):
    """Events in the window: rows of the source matching `where`, dated by the contract's event date."""

    value_sql: ClassVar[str] = "1"

    def dates_read(self, indicator, reference, con):
        return window_start(reference, indicator.window_months), reference

    def evidence_sql(self, indicator, reference, mentions, con):
        first, last = self.dates_read(indicator, reference, con)
        return f"""
            SELECT {", ".join(EVIDENCE_COLUMNS)}, CAST({self.value_sql.format(measure=indicator.measure)} AS DOUBLE) AS value, event_ref
            FROM ({mentions_sql(indicator, mentions)}) x
            WHERE ({indicator.where}) AND event_date BETWEEN DATE '{first}' AND DATE '{last}'
        """


class Count(_Events):
    """How many distinct events (an incident named in two rows counts once) in the window."""

    name = "count"

    def aggregate(self):
        return pl.col("event_ref").n_unique()


class Sum(_Events):
    """The total of a measure column (e.g. suspensions) over the window's rows."""

    name = "sum"
    value_sql = "{measure}"

    def check(self, indicator, columns):
        return None if indicator.measure else "sum needs a measure column"

    def fields(self, indicator):
        return _words(indicator.where, indicator.measure)

    def aggregate(self):
        return pl.col("value").sum()


class OpenWithin(IndicatorKind):
    """A spell (a claim, a case) open at some point in the window, from `start` to `end` (blank: open)."""

    name = "open_within"

    def check(self, indicator, columns):
        return None if indicator.start and indicator.end else "open_within needs start and end columns"

    def fields(self, indicator):
        return _words(indicator.where, indicator.start, indicator.end)

    def evidence_sql(self, indicator, reference, mentions, con):
        start = window_start(reference, indicator.window_months)
        return f"""
            SELECT person_id, family_ref, record_key, source, file, row, {indicator.start} AS event_date, 1.0 AS value
            FROM ({mentions_sql(indicator, mentions)}) x
            WHERE ({indicator.where}) AND {indicator.start} <= DATE '{reference}'
              AND ({indicator.end} IS NULL OR {indicator.end} >= DATE '{start}')
        """


class Attendance(IndicatorKind):
    """School attendance over the last `terms` terms returned: a hit when it falls below the threshold."""

    name = "attendance"
    #: The attendance return's columns this kind reads.
    COLUMNS = ("sessions_possible", "authorised_absence", "unauthorised_absence")

    def fields(self, indicator):
        return _words(indicator.where) | set(self.COLUMNS)

    def _terms(self, indicator, reference, con) -> list[dt.date]:
        """The dates of the last `terms` terms returned by the reference date, latest first."""
        return [d for (d,) in con.execute(
            f"""SELECT DISTINCT event_date FROM person_records WHERE source = '{indicator.source}'
                AND event_date <= DATE '{reference}' ORDER BY event_date DESC LIMIT {int(indicator.terms)}"""
        ).fetchall()]

    def dates_read(self, indicator, reference, con):
        terms = self._terms(indicator, reference, con)
        # none returned yet: it reads no mention, and those of the reference date alone are made
        return (terms[-1], terms[0]) if terms else (reference, reference)

    def evidence_sql(self, indicator, reference, mentions, con):
        dates = ", ".join(f"DATE '{d}'" for d in self._terms(indicator, reference, con)) or "NULL"
        return f"""
            SELECT {", ".join(EVIDENCE_COLUMNS)},
                   CAST(sessions_possible AS DOUBLE) AS possible,
                   CAST(authorised_absence + unauthorised_absence AS DOUBLE) AS absent
            FROM ({mentions_sql(indicator, mentions)}) x WHERE event_date IN ({dates})
        """

    def person_hits(self, indicator, evidence):
        per_person = evidence.group_by("person_id", "family_ref").agg(
            (1 - pl.col("absent").sum() / pl.col("possible").sum()).alias("value"),
            pl.col("event_date").max().alias("latest"),
            pl.len().alias("evidence_rows"),
            pl.col("possible").sum().alias("possible"),
        )
        hits = per_person.filter((pl.col("possible") > 0) & (pl.col("value") < indicator.threshold)).drop("possible")
        evidence = evidence.with_columns((1 - pl.col("absent") / pl.col("possible")).alias("value")).drop("possible", "absent")
        return hits, evidence

    def value_text(self, value):
        return (value * 100).round(0).cast(pl.Int64).cast(pl.String) + "%"

    def window(self, indicator):
        return f"{indicator.terms} terms"


class Household(IndicatorKind):
    """A family-level need: some member has indicator `of`, and no member has a row matching `unless_where`."""

    name = "household"
    person_level = False

    def fields(self, indicator):
        return set()  # its own reads are the `unless` exception's, named as such

    def window(self, indicator):
        return "-"

    def unless(self, indicator: Indicator, of: Indicator) -> Indicator | None:
        """The exception (a member with a row matching `unless_where`) as an indicator of `of`'s
        kind over the unless source, or None where there is none."""
        if not (indicator.unless_source and indicator.unless_where):
            return None
        return dataclasses.replace(of, id="_unless", where=indicator.unless_where, source=indicator.unless_source, applies_to="any")

    def family_hits(
        self, indicator: Indicator, of: Indicator, reference: dt.date, persons: pl.DataFrame, mentions: str, con: duckdb.DuckDBPyConnection
    ) -> pl.DataFrame:
        """family_ref, latest, persons, indicator_id, from the members' hits (`persons`) of `of`;
        `mentions` as `evidence_sql`'s, for the exception."""
        with_of = persons.filter(pl.col("indicator_id") == of.id)
        blocked = pl.DataFrame(schema={"family_ref": pl.String})
        unless = self.unless(indicator, of)
        if unless is not None:
            blocked = con.sql(unless.rule.evidence_sql(unless, reference, mentions, con)).pl().select("family_ref").unique()
        return (
            with_of.join(blocked, on="family_ref", how="anti")
            .group_by("family_ref")
            .agg(pl.col("latest").max(), pl.col("person_id").n_unique().alias("persons"))
            .with_columns(pl.lit(indicator.id).alias("indicator_id"))
        )


#: Every kind, by the name the registry uses.
KINDS: dict[str, IndicatorKind] = {kind.name: kind for kind in (Count(), Sum(), Attendance(), OpenWithin(), Household())}
