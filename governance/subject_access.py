"""Subject access across linked data: given a person's details, every row held about them.

The request is matched to persons the way linkage matches mentions (`find_candidates`: the
fitted model's comparisons and weights, so a nickname, a transposed date or a moved postcode
still finds them), and the candidates are listed with their probabilities for the officer to
confirm; for the persons confirmed, every mention linked to them is gathered
with its provenance (source, file, row), with what the pipeline derived from it: family
membership, indicators and their evidence, the family's score, the lists it was on and
the meetings' decisions. Rows that failed their contract's checks are not linked to anyone,
so quarantined rows whose text holds the surname and the date of birth are exported
separately, as possibly about the person, for the officer to judge.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl

from data_contracts import Contract
from linkage.comparisons import COMPARISONS_BY_NAME, PROFILE_FIELDS
from linkage.model import build_profiles, compare
from linkage.standardise import name_key, postcode_parts
from reports.packs import pack_slug
from warehouse import linked_rows, register, scratch, sql_literal, table_exists

#: Candidates at or above this probability are listed for the officer to confirm.
CANDIDATE_PROBABILITY = 0.5


@dataclass
class SubjectAccess:
    person_ids: list[str]
    rows: dict[str, pl.DataFrame]  # source -> the partner's rows, every loaded column, with provenance
    derived: dict[str, pl.DataFrame] = field(default_factory=dict)  # what the pipeline computed from them
    possibly: pl.DataFrame | None = None  # quarantined rows that may be about the person

    def counts(self) -> dict[str, int]:
        """Counts only: safe for the audit log."""
        return {
            "persons": len(self.person_ids),
            **{f"rows_{s}": f.height for s, f in self.rows.items()},
            **{f"derived_{k}": f.height for k, f in self.derived.items()},
            "quarantined_possibly": self.possibly.height if self.possibly is not None else 0,
        }


def _key(value: str) -> str:
    return pl.select(name_key(pl.lit(value))).item() or ""


def _request_profile(forename: str, surname: str, dob: dt.date, postcode: str | None) -> pl.DataFrame:
    row = {f: None for f in PROFILE_FIELDS} | {"pid": -1, "forename": _key(forename), "surname": _key(surname), "dob": dob, "birth_year": dob.year}
    if postcode:
        row |= pl.select(postcode_parts(pl.lit(postcode))).row(0, named=True)
    return pl.DataFrame([row], schema={f: pl.String for f in PROFILE_FIELDS} | {"pid": pl.Int64, "dob": pl.Date, "birth_year": pl.Int32})


def find_candidates(
    con: duckdb.DuckDBPyConnection, forename: str, surname: str, dob: dt.date, postcode: str | None = None, at_least: float = CANDIDATE_PROBABILITY,
) -> pl.DataFrame:
    """person_id, probability, mentions, agreement: the persons the request may be, scored with
    the run's fitted linkage model (its weights per comparison level) against each mention that
    shares the surname, the birth date, or the forename and birth year within one."""
    import ast

    fore, sur = _key(forename), _key(surname)
    mentions = con.sql(
        """SELECT pr.*, pl.person_id FROM person_records pr JOIN person_links pl USING (record_key)
           WHERE pr.surname = ? OR pr.dob = ? OR (pr.forename = ? AND abs(year(pr.dob) - ?) <= 1)""",
        params=[sur, dob, fore, dob.year],
    ).pl()
    empty = pl.DataFrame(schema={"person_id": pl.String, "probability": pl.Float64, "mentions": pl.UInt32, "agreement": pl.String})
    if mentions.is_empty():
        return empty
    model = ast.literal_eval(con.sql("SELECT parameters FROM linkage_model").fetchall()[0][0])
    profiles, mapping, _ = build_profiles(mentions.drop("person_id"))
    request = _request_profile(forename, surname, dob, postcode)
    scratchpad = scratch()
    try:
        register(scratchpad, "profiles", pl.concat([request, profiles.select(request.columns)]))
        register(scratchpad, "pairs", profiles.select(pl.lit(-1, pl.Int64).alias("l"), pl.col("pid").alias("r")))
        levels = compare(scratchpad, "pairs")
    finally:
        scratchpad.close()
    prior = model["prior"]
    weight = pl.lit(float(np.log2(prior / (1 - prior))))
    agreement = []
    for name, comparison in COMPARISONS_BY_NAME.items():
        by_code = {code: model["weights"][name][label] for code, label in enumerate(comparison.labels)}
        weight = weight + pl.col(name).replace_strict(by_code, default=0.0, return_dtype=pl.Float64)
        agreement.append(pl.when(pl.col(name) >= 0).then(pl.lit(f"{name}: ") + pl.col(name).replace_strict(dict(enumerate(comparison.labels)), default="", return_dtype=pl.String)))
    scored = levels.with_columns((1 / (1 + 2 ** (-weight))).alias("probability"), pl.concat_str(agreement, separator="; ", ignore_nulls=True).alias("agreement"))
    per_mention = mapping.join(scored.select(pl.col("r").alias("pid"), "probability", "agreement"), on="pid").join(mentions.select("record_key", "person_id"), on="record_key")
    return (
        per_mention.sort("probability", descending=True)
        .group_by("person_id", maintain_order=True)
        .agg(pl.col("probability").first(), pl.len().cast(pl.UInt32).alias("mentions"), pl.col("agreement").first())
        .filter(pl.col("probability") >= at_least)
        .sort(["probability", "person_id"], descending=[True, False])
    )


def find_subject(con: duckdb.DuckDBPyConnection, contracts: dict[str, Contract], persons: list[str], surname: str, dob: dt.date) -> SubjectAccess:
    """Everything held about the persons the officer confirmed (person references from
    `find_candidates`); `surname` and `dob` look for quarantined rows that may be theirs."""
    sur = _key(surname)
    register(con, "_subject", pl.DataFrame({"person_id": persons}, schema={"person_id": pl.String}))
    try:
        rows = {}
        for contract in contracts.values():
            if not contract.holds_people or not table_exists(con, contract.raw_table):
                continue
            linked = linked_rows(contract.source, f"'{contract.source}' AS source, pl.person_id, r.*")
            frame = con.sql(f"SELECT l.* FROM ({linked}) l JOIN _subject USING (person_id) ORDER BY l._file, l._row").pl()
            if frame.height:
                rows[contract.source] = frame
        derived = {}
        families = "(SELECT family_ref FROM family_members JOIN _subject USING (person_id))"
        records = "(SELECT record_key FROM person_links JOIN _subject USING (person_id))"
        # name: (the table read, the query); every table that holds the person or their family
        queries = {
            "family_membership": ("family_members", "SELECT m.* FROM family_members m JOIN _subject USING (person_id)"),
            "indicators": ("person_indicators", "SELECT i.* FROM person_indicators i JOIN _subject USING (person_id)"),
            "indicator_evidence": ("indicator_evidence", "SELECT e.* FROM indicator_evidence e JOIN _subject USING (person_id)"),
            "family_scores": ("family_scores", f"SELECT s.* FROM family_scores s WHERE family_ref IN {families}"),
            "family_score_history": ("family_scores_history", f"SELECT s.* FROM family_scores_history s WHERE family_ref IN {families}"),
            "lists": ("list_audit_members", "SELECT a.* FROM list_audit_members a JOIN _subject USING (person_id)"),
            "meeting_decisions": ("raw_meeting_outcomes", f"SELECT d.* FROM raw_meeting_outcomes d WHERE family_ref IN {families}"),
            "outcomes": ("family_outcomes", f"SELECT o.* FROM family_outcomes o WHERE family_ref IN {families}"),
            "need_outcomes": ("need_outcomes", f"SELECT o.* FROM need_outcomes o WHERE family_ref IN {families}"),
            "review_queue": ("review_queue", f"SELECT q.* FROM review_queue q WHERE record_key_l IN {records} OR record_key_r IN {records}"),
            # the property (UPRN) each of their records' addresses was matched to, and the records
            # read at another address than sent: where the council placed them, from its gazetteer
            "address_matches": ("address_matches", f"SELECT a.* FROM address_matches a WHERE record_key IN {records} ORDER BY record_key"),
            "addresses_read": ("household_addresses", f"SELECT h.* FROM household_addresses h WHERE record_key IN {records} ORDER BY record_key"),
            "fields_set_aside": ("set_aside_fields", f"""SELECT f.* FROM set_aside_fields f JOIN person_records pr ON pr.source = f.source AND pr.file = f._file AND pr.row = f._row
                                                         WHERE pr.record_key IN {records}"""),
        }
        for name, (table, query) in queries.items():
            if table_exists(con, table):
                frame = con.sql(query).pl()
                if frame.height:
                    derived[name] = frame
        if table_exists(con, "list_audit"):
            printed = con.sql(f"SELECT month, locality, family_ref, rank FROM list_audit WHERE family_ref IN {families} ORDER BY month, locality").pl()
            if printed.height:
                # which pack printed the family, and where in it (the rank is the block's number)
                derived["packs"] = printed.with_columns(
                    pl.format("packs/{}/{}.html", pl.col("month"), pl.col("locality").map_elements(pack_slug, return_dtype=pl.String)).alias("pack")
                )
        possibly = None
        if table_exists(con, "quarantine") and sur:
            formats = {dob.isoformat(), dob.strftime("%Y%m%d"), dob.strftime("%d/%m/%Y"), dob.strftime("%d-%m-%Y")}
            text = "upper(record)"
            dates = " OR ".join(f"contains(record, '{d}')" for d in formats)
            wanted = sql_literal(surname.strip().upper())
            possibly = con.sql(f"SELECT * FROM quarantine WHERE contains({text}, {wanted}) AND ({dates}) ORDER BY source, _file, _row").pl()
    finally:
        con.unregister("_subject")
    return SubjectAccess(persons, rows, derived, possibly)


def export_files(result: SubjectAccess, reference: str, request: str) -> dict[str, pl.DataFrame | str]:
    """The files of a subject access export: one CSV per source and per derived table (list
    columns joined with '; '), the possibly-related quarantined rows, and a README."""
    files: dict[str, pl.DataFrame | str] = {}

    def flat(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.with_columns([pl.col(c).cast(pl.List(pl.String)).list.join("; ") for c, t in frame.schema.items() if isinstance(t, pl.List)])

    for source, frame in result.rows.items():
        files[f"source_{source}.csv"] = flat(frame)
    for name, frame in result.derived.items():
        files[f"derived_{name}.csv"] = flat(frame)
    if result.possibly is not None and result.possibly.height:
        files["quarantined_possibly_about_the_person.csv"] = result.possibly
    lines = [
        f"# Subject access export {request}",
        "",
        f"Produced {reference} by earlyhelp. Persons matched: {len(result.person_ids)} (person references: {', '.join(result.person_ids) or 'none'}).",
        "",
        "Each `source_*.csv` holds every row a partner sent that linkage attributes to this person, with its",
        "provenance: `_file` (the partner's file), `_sha256` (that file's checksum) and `_row` (the record's",
        "number in it). `derived_*.csv` holds what earlyhelp computed from them: family membership, indicators",
        "and the evidence rows behind each, the family's score, the lists the person appeared on, the",
        "meetings' decisions about the family, the property each record's address was matched to in the",
        "council's address gazetteer and the records read at another address than sent (which placed them",
        "in a household). `quarantined_possibly_about_the_person.csv`, when present, holds",
        "rows that failed their contract's checks (so were never linked) and contain the surname and date of",
        "birth: check each before disclosing it.",
        "",
        "| file | rows |",
        "|---|---|",
        *[f"| {name} | {frame.height} |" for name, frame in files.items() if isinstance(frame, pl.DataFrame)],
    ]
    files["README.md"] = "\n".join(lines) + "\n"
    return files
