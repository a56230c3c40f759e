"""Retention for what earlyhelp derives, declared once: the partners' rows expire under their
contracts (ingestion), and everything computed from them (score history, the lists' audit,
outcome tracking, claim evidence, subject access exports) expires here, each run, counted in
`retention_log`. A landing file all of whose rows are past retention is reported; deleting it
is the council's decision (a switch, off by default).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from features.calendar import month_end, years_before
from warehouse import RETENTION_LOG, ensure_tables, table_exists

#: How long derived rows are kept, by default: the longest a partner's row behind them is kept
#: (six years for police and benefits data), long enough for outcomes to be shown to last.
DERIVED_RETENTION_YEARS = 6.0
#: How long a subject access export stays on disk once written: the month to answer, and two to spare.
SUBJECT_ACCESS_RETENTION_DAYS = 90

_MONTH = "make_date(CAST(substr({c}, 1, 4) AS INTEGER), CAST(substr({c}, 6, 2) AS INTEGER), 1)"


@dataclass(frozen=True)
class DerivedTable:
    name: str
    aged_by: str  # SQL: the date a row is as old as
    holds: str  # what about people it holds, for the IG pack


DERIVED_TABLES = (
    DerivedTable("family_scores_history", _MONTH.format(c="month"), "each family's score and needs, month by month"),
    DerivedTable("list_audit", _MONTH.format(c="month"), "which families were listed, when, under which configuration"),
    DerivedTable("list_audit_members", _MONTH.format(c="month"), "the people on each list"),
    DerivedTable("outcome_months", _MONTH.format(c="month"), "each allocated family's needs at each month end"),
    DerivedTable("need_outcomes", _MONTH.format(c="identified_month"), "each allocated family's needs and their status"),
    DerivedTable("family_outcomes", "meeting_date", "each allocated family's outcome and claim status"),
    DerivedTable("claim_evidence", "event_date", "the source rows behind each allocated family's needs"),
    DerivedTable("decision_discrepancies", "meeting_date", "meeting decisions that do not fit the data"),
)


def expire_derived(con: duckdb.DuckDBPyConnection, today: dt.date, years: float = DERIVED_RETENTION_YEARS) -> dict[str, int]:
    """Delete derived rows older than `years`; each table's count goes to retention_log."""
    ensure_tables(con, RETENTION_LOG)
    cutoff = years_before(today, years)
    removed = {}
    for table in DERIVED_TABLES:
        if not table_exists(con, table.name):
            continue
        removed[table.name] = con.execute(f'DELETE FROM "{table.name}" WHERE ({table.aged_by}) < DATE \'{cutoff}\'').fetchall()[0][0]
        con.execute(
            "INSERT INTO retention_log VALUES (?, ?, ?, ?, ?)",
            [dt.datetime.now().replace(microsecond=0), table.name, years, cutoff, removed[table.name]],
        )
    return removed


def expire_exports(folder: Path, today: dt.date, days: int = SUBJECT_ACCESS_RETENTION_DAYS) -> list[str]:
    """Remove subject access exports (`<out>/subject_access/<request>/`) written more than `days`
    ago; returns the requests removed (their references, no names)."""
    if not folder.is_dir():
        return []
    cutoff = dt.datetime.combine(today - dt.timedelta(days=days), dt.time())
    gone = []
    for export in sorted(p for p in folder.iterdir() if p.is_dir()):
        if dt.datetime.fromtimestamp(export.stat().st_mtime) < cutoff:
            shutil.rmtree(export)
            gone.append(export.name)
    return gone


def expire_monthly_folders(folder: Path, today: dt.date, years: float = DERIVED_RETENTION_YEARS) -> list[str]:
    """Remove the month folders (`<folder>/YYYY-MM/`: the packs as the meetings received them, the
    outcomes reports) whose month ended more than `years` ago; returns the months removed."""
    if not folder.is_dir():
        return []
    cutoff = years_before(today, years)
    gone = []
    for month in sorted(p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d{4}-\d{2}", p.name)):
        if month_end(int(month.name[:4]), int(month.name[5:])) < cutoff:
            shutil.rmtree(month)
            gone.append(month.name)
    return gone


def landing_past_retention(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(source, file) for every landing file all of whose rows are past their retention: each row
    it loaded removed under retention, or replaced by a later row of the same key (the partner's
    restatement of the record) that was removed so, and each record quarantined from it removed
    too. A row replaced by one still held keeps its file: the record it restates is within
    retention."""
    return con.execute(
        """SELECT f.source, f.file FROM landed_files f
           WHERE f.status = 'loaded' AND f.received > 0
             AND coalesce(f.expired, 0) + coalesce(f.superseded, 0) = f.loaded AND coalesce(f.quarantine_expired, 0) = f.quarantined
             AND NOT EXISTS (
                 SELECT 1 FROM superseded_rows s
                 WHERE s.source = f.source AND s._file = f.file AND NOT EXISTS (
                     SELECT 1 FROM retention_keys k WHERE k.source = s.source AND k._file = s.replaced_by_file AND k._row = s.replaced_by_row))
           ORDER BY f.source, f.file"""
    ).fetchall()


def delete_landing_files(landing: Path, files: list[tuple[str, str]]) -> int:
    """The council's switch: delete the landing files past retention (names from the warehouse's own record)."""
    deleted = 0
    for source, name in files:
        path = landing / source / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
            deleted += 1
    return deleted
