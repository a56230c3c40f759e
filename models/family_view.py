"""What a locality meeting sees of each listed family beyond its score: a chronology, and who
else knows the family.

Councils name these first among what they want from such a tool (a single view of the family
with a chronology; who else knows the family and who to call). Both are built from the linked
partner rows, and show only what the meeting may see: the date, the member, the agency that
holds the record, the person's role in it and, for an event behind one of the family's
indicators, that indicator's title; never the record's other fields. Services come from
`open_cases` (service, case reference, dates); schools by name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from data_contracts import Contract, load_contracts
from features.registry import Registry
from linkage.person_records import mention_join
from features.calendar import window_start
from warehouse import linked_mentions, linked_rows, read_table, register, table_exists

#: How far back the chronology and the agencies that know the family look, besides every event
#: behind the family's indicators.
CHRONOLOGY_MONTHS = 12

#: The roles partners record, as a meeting reads them.
ROLE_WORDS = {
    "PATIENT": "attended A&E", "PUPIL": "school term recorded", "CHILD": "named in a contact",
    "SUSPECT": "suspect", "VICTIM": "victim", "WITNESS": "witness", "PERPETRATOR": "perpetrator",
    "CHILD_PRESENT": "child present", "CHILD_RESIDENT": "child resident", "CLAIMANT": "benefit claimant", "PARTNER": "claimant's partner",
    "EARLY_HELP": "early help case", "FAMILY_HELP": "Family Help case", "CIN": "child in need case", "CP": "child protection case",
    "CLA": "looked after", "YOS": "youth offending service",
}


@dataclass
class FamilyView:
    chronology: pl.DataFrame  # family_ref, event_date, member, agency, what, source, file, row (oldest first)
    known_to: pl.DataFrame  # family_ref, kind (agency, service, allocation), detail, since


def family_view(
    con: duckdb.DuckDBPyConnection, members: pl.DataFrame, registry: Registry, reference: dt.date, contracts: dict[str, Contract] | None = None,
) -> FamilyView:
    """members: the listed families' members (family_ref, person_id, name); contracts: the council's
    own (the packaged ones by default), whose agencies name each record's source."""
    contracts = contracts or load_contracts()
    since = window_start(reference, CHRONOLOGY_MONTHS)
    listed = members.select("family_ref", "person_id", pl.col("name").alias("member"))
    # only the listed people's mentions leave DuckDB (a few thousand families of a county's million people)
    register(con, "_listed_people", listed.select("person_id"))
    try:
        mentions = con.sql(
            f"{linked_mentions('pr.record_key, pr.source, pr.file, pr.row, pr.event_date, pr.role, pl.person_id', mention_join(con))} "
            "WHERE pl.person_id IN (SELECT person_id FROM _listed_people) ORDER BY pr.source, pr.file, pr.row, pr.record_key"
        ).pl().join(listed, on="person_id", maintain_order="left")
    finally:
        con.unregister("_listed_people")
    evidence = read_table(con, "indicator_evidence")
    titles = {i.id: i.title for i in registry.indicators}
    behind = (
        evidence.join(listed.select("family_ref"), on="family_ref", how="semi")
        .group_by("record_key").agg(pl.col("indicator_id").unique().sort())
        .with_columns(pl.col("indicator_id").list.eval(pl.element().replace(titles)).list.join("; ").alias("indicators"))
        .select("record_key", "indicators")
        if evidence is not None else pl.DataFrame(schema={"record_key": pl.String, "indicators": pl.String})
    )
    agencies = {s: c.agency for s, c in contracts.items()}
    events = (
        mentions.join(behind, on="record_key", how="left")
        .filter((pl.col("event_date") <= reference) & ((pl.col("event_date") >= since) | pl.col("indicators").is_not_null()))
        .with_columns(
            pl.col("source").replace_strict(agencies, default=pl.col("source")).alias("agency"),
            pl.concat_str([pl.col("role").replace_strict(ROLE_WORDS, default=pl.col("role").str.to_lowercase()), pl.col("indicators")], separator=": ", ignore_nulls=True).alias("what"),
        )
        # a pupil's termly rows and a claim's monthly ones say the same thing: one line a day and role
        .unique(["family_ref", "person_id", "event_date", "source", "what"], keep="first")
        .select("family_ref", "event_date", "member", "agency", "what", "source", "file", "row")
        .sort("family_ref", "event_date", "member", "agency", "file", "row")
    )
    return FamilyView(chronology=events, known_to=_known_to(con, events, listed, reference, since))


def _known_to(con: duckdb.DuckDBPyConnection, events: pl.DataFrame, listed: pl.DataFrame, reference: dt.date, since: dt.date) -> pl.DataFrame:
    recent = events.filter(pl.col("event_date") >= since)
    by_agency = recent.filter(pl.col("source") != "open_cases").group_by("family_ref", "agency").agg(pl.col("event_date").max().alias("since")).select(
        "family_ref", pl.lit("agency").alias("kind"), (pl.col("agency") + pl.lit(" (latest record ") + pl.col("since").cast(pl.String) + pl.lit(")")).alias("detail"), "since"
    )
    parts = [by_agency]
    if table_exists(con, "raw_school_attendance"):
        # the schools of the last 12 months' termly records, by name: who to call
        terms = recent.filter(pl.col("source") == "school_attendance").select("family_ref", "file", "row", "event_date")
        register(con, "_listed_terms", terms.select("file", "row").unique())
        try:
            names = con.sql("SELECT r._file AS file, r._row AS row, r.school_name FROM raw_school_attendance r SEMI JOIN _listed_terms t ON t.file = r._file AND t.row = r._row").pl()
        finally:
            con.unregister("_listed_terms")
        schools = names.join(terms, on=["file", "row"])
        parts.append(schools.group_by("family_ref", "school_name").agg(pl.col("event_date").max().alias("since")).select(
            "family_ref", pl.lit("school").alias("kind"), ("School: " + pl.col("school_name")).alias("detail"), "since"
        ))
    if table_exists(con, "raw_open_cases"):
        cases = con.sql(linked_rows("open_cases", "pl.person_id, r.case_id, r.service, r.open_date, r.close_date")).pl().join(listed, on="person_id")
        current = cases.filter((pl.col("open_date") <= reference) & (pl.col("close_date").is_null() | (pl.col("close_date") >= since)))
        parts.append(current.group_by("family_ref", "case_id", "service").agg(pl.col("open_date").min(), pl.col("close_date").max()).select(
            "family_ref", pl.lit("service").alias("kind"),
            pl.concat_str([
                pl.col("service").replace_strict(ROLE_WORDS, default=pl.col("service")), pl.lit(" "), pl.col("case_id"), pl.lit(", opened "), pl.col("open_date").cast(pl.String),
                pl.when(pl.col("close_date").is_not_null() & (pl.col("close_date") <= reference)).then(pl.lit(", closed ") + pl.col("close_date").cast(pl.String)).otherwise(pl.lit(", open")),
            ]).alias("detail"),
            pl.col("open_date").alias("since"),
        ))
    allocated = read_table(con, "allocated_families")
    if allocated is not None and allocated.height:
        parts.append(allocated.join(listed.select("family_ref").unique(), on="family_ref").select(
            "family_ref", pl.lit("allocation").alias("kind"),
            ("Allocated " + pl.col("meeting_date").cast(pl.String) + ", lead agency " + pl.col("lead_agency").fill_null("not recorded")).alias("detail"),
            pl.col("meeting_date").alias("since"),
        ))
    return pl.concat(parts, how="vertical_relaxed").unique().sort("family_ref", "kind", "detail")
