"""Subject access across linked data: given a person's details, every row held about them.

The person is found the way linkage finds them (standardised surname and date of birth, and
forename or preferred forename), then every mention linked to the same person is gathered
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
import polars as pl

from data_contracts import Contract
from linkage.standardise import name_key
from warehouse import linked_rows, table_exists


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


def find_subject(con: duckdb.DuckDBPyConnection, contracts: dict[str, Contract], forename: str, surname: str, dob: dt.date) -> SubjectAccess:
    fore, sur = _key(forename), _key(surname)
    persons = [
        r[0]
        for r in con.execute(
            """SELECT DISTINCT pl.person_id FROM person_records pr JOIN person_links pl USING (record_key)
               WHERE pr.surname = ? AND pr.dob = ? AND (pr.forename = ? OR pr.preferred_forename = ?)
               ORDER BY 1""",
            [sur, dob, fore, fore],
        ).fetchall()
    ]
    con.register("_subject", pl.DataFrame({"person_id": persons}, schema={"person_id": pl.String}))
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
        queries = {
            "family_membership": "SELECT m.* FROM family_members m JOIN _subject USING (person_id)",
            "indicators": "SELECT i.* FROM person_indicators i JOIN _subject USING (person_id)",
            "indicator_evidence": "SELECT e.* FROM indicator_evidence e JOIN _subject USING (person_id)",
            "family_scores": "SELECT s.* FROM family_scores s WHERE family_ref IN (SELECT family_ref FROM family_members JOIN _subject USING (person_id))",
            "lists": "SELECT a.* FROM list_audit_members a JOIN _subject USING (person_id)",
            "meeting_decisions": "SELECT d.* FROM raw_meeting_outcomes d WHERE family_ref IN (SELECT family_ref FROM family_members JOIN _subject USING (person_id))",
        }
        needed = {"family_membership": "family_members", "indicators": "person_indicators", "indicator_evidence": "indicator_evidence",
                  "family_scores": "family_scores", "lists": "list_audit_members", "meeting_decisions": "raw_meeting_outcomes"}
        for name, query in queries.items():
            if table_exists(con, needed[name]):
                frame = con.sql(query).pl()
                if frame.height:
                    derived[name] = frame
        possibly = None
        if table_exists(con, "quarantine") and sur:
            formats = {dob.isoformat(), dob.strftime("%Y%m%d"), dob.strftime("%d/%m/%Y"), dob.strftime("%d-%m-%Y")}
            text = "upper(record)"
            dates = " OR ".join(f"contains(record, '{d}')" for d in formats)
            wanted = surname.strip().upper().replace("'", "''")
            possibly = con.sql(f"SELECT * FROM quarantine WHERE contains({text}, '{wanted}') AND ({dates}) ORDER BY source, _file, _row").pl()
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
        "and the evidence rows behind each, the family's score, the lists the person appeared on and the",
        "meetings' decisions about the family. `quarantined_possibly_about_the_person.csv`, when present, holds",
        "rows that failed their contract's checks (so were never linked) and contain the surname and date of",
        "birth: check each before disclosing it.",
        "",
        "| file | rows |",
        "|---|---|",
        *[f"| {name} | {frame.height} |" for name, frame in files.items() if isinstance(frame, pl.DataFrame)],
    ]
    files["README.md"] = "\n".join(lines) + "\n"
    return files
