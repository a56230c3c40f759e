"""The data-quality report an analyst sends back to each partner after a run: what was received,
what was quarantined and which fields were set aside, by column and reason, with the file and
row numbers to correct, and the trend over the last months. It names files, rows, columns and
rules, never a value: it can go to the partner by ordinary email.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from reports import page, render
from warehouse import Table, ensure_tables, write_atomically, write_text_atomically

#: Each run's counts per partner, kept so the report shows whether a partner's extract is improving.
QUALITY_HISTORY = Table("data_quality_history", {
    "month": pl.String, "source": pl.String, "files": pl.Int64, "received": pl.Int64, "loaded": pl.Int64,
    "quarantined": pl.Int64, "set_aside": pl.Int64,
}, "per month and partner: rows received, loaded and quarantined, and fields set aside (counts only)")
TREND_MONTHS = 12
PROBLEM_COLUMNS = ["kind", "file", "row", "column", "reason"]


@dataclass
class PartnerQuality:
    source: str
    files: pl.DataFrame  # file, received, loaded, quarantined, set_aside
    by_reason: pl.DataFrame  # kind, column, reason, rows
    problems: pl.DataFrame  # kind, file, row, column, reason: every row to correct
    trend: pl.DataFrame  # month, received, quarantined, set_aside


def partner_quality(con: duckdb.DuckDBPyConnection, month: str, sources: list[str]) -> list[PartnerQuality]:
    """This month's figures per partner source, recorded in data_quality_history."""
    ensure_tables(con, QUALITY_HISTORY)
    reports = []
    for source in sources:
        files = con.sql(
            """SELECT file, received, loaded, quarantined, coalesce(set_aside, 0) AS set_aside FROM landed_files
               WHERE source = ? AND status <> 'duplicate' ORDER BY file""", params=[source]
        ).pl()
        problems = con.sql(
            """SELECT DISTINCT 'quarantined' AS kind, _file AS file, _row AS row, coalesce("column", '') AS "column", reason FROM quarantine WHERE source = ?
               UNION ALL
               SELECT 'set aside', _file, _row, "column", reason FROM set_aside_fields WHERE source = ?
               ORDER BY kind, file, row, "column\"""", params=[source, source]
        ).pl()
        by_reason = problems.group_by("kind", "column", "reason").agg(pl.col("row").len().alias("rows")).sort(["kind", "rows", "column"], descending=[False, True, False])
        totals = files.select(pl.len().alias("files"), *[pl.col(c).sum().cast(pl.Int64) for c in ("received", "loaded", "quarantined", "set_aside")])
        con.execute("DELETE FROM data_quality_history WHERE month = ? AND source = ?", [month, source])
        con.register("_totals", totals.with_columns(pl.lit(month).alias("month"), pl.lit(source).alias("source")))
        con.execute("INSERT INTO data_quality_history BY NAME SELECT * FROM _totals")
        con.unregister("_totals")
        trend = con.sql(
            "SELECT month, received, quarantined, set_aside FROM data_quality_history WHERE source = ? ORDER BY month DESC LIMIT ?", params=[source, TREND_MONTHS]
        ).pl().sort("month")
        reports.append(PartnerQuality(source, files, by_reason, problems, trend))
    return reports


def write_partner_reports(reports: list[PartnerQuality], month: str, folder: Path) -> list[Path]:
    """`<folder>/<source>.html` (for the partner to read) and `<source>.csv` (every row to correct)."""
    written = []
    for report in reports:
        body = render("partner_quality.html.j2", report=report, month=month)
        write_text_atomically(page(f"{report.source}: data quality, {month}", body), folder / f"{report.source}.html")
        write_atomically(folder / f"{report.source}.csv", report.problems.select(PROBLEM_COLUMNS).write_csv)
        written += [folder / f"{report.source}.html", folder / f"{report.source}.csv"]
    return written
