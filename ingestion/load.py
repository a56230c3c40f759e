"""Ingest one source's landing folder through its contract, and write it to the warehouse.

The landing folder is read whole on every run, so a rerun over the same files
gives the same tables (idempotent) and a later file can restate an earlier
one. For each source:

- files are taken in name order (partners name them by period); a file whose
  bytes equal an earlier file's is recorded as a duplicate and not loaded again;
- columns are matched to the contract case-insensitively after trimming;
  columns the contract does not name are never loaded (their names are
  reported); a file missing a column the contract requires is refused whole,
  and its rows are quarantined with that reason;
- every row is checked (ingestion.validate); rows that fail go to quarantine
  with file, row, column and reason; the rest load;
- a later row with the same natural key replaces an earlier one, so an event
  sent in two overlapping files counts once; the replaced rows are recorded.

For every file: received = loaded + quarantined (+ the rows of a duplicate file,
recorded as such). All writes for a source happen in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from data_contracts import Contract
from features.calendar import years_before
from ingestion.readers import (
    ROW,
    ExtractFile,
    FileRefused,
)
from ingestion.readers import column as file_column
from ingestion.readers import normalise_header, read_extract
from ingestion.validate import typed_expr, validate_rows
from warehouse import LANDED_FILES, LEDGER_TABLES, QUARANTINE, SET_ASIDE_FIELDS, ensure_tables, scratch

FILE = "_file"
SHA = "_sha256"
FILE_ORDER = "_file_order"
KEY = "_natural_key"
PROVENANCE = (FILE, SHA, ROW)


@dataclass
class FileReport:
    source: str
    file: str
    sha256: str
    status: str  # loaded, refused, duplicate
    received: int = 0
    loaded: int = 0
    quarantined: int = 0
    superseded: int = 0  # loaded rows later replaced by a row with the same natural key
    expired: int = 0  # loaded rows past the contract's retention, removed (counted, never kept)
    set_aside: int = 0  # fields left empty in loaded rows because their value broke its rule
    quarantine_expired: int = 0  # quarantined records past the contract's retention: counted, the record not kept
    duplicate_of: str | None = None
    message: str | None = None
    ignored_columns: list[str] = field(default_factory=list)
    missing_optional_columns: list[str] = field(default_factory=list)
    saved_by: str | None = None  # who last saved the file, as the file records it (XLSX)
    saved_at: dt.datetime | None = None


@dataclass
class SourceIngest:
    source: str
    raw: pl.DataFrame
    quarantine: pl.DataFrame
    superseded: pl.DataFrame
    files: list[FileReport]
    set_aside: pl.DataFrame  # SET_ASIDE_FIELDS' columns

    @property
    def received(self) -> int:
        return sum(f.received for f in self.files)

    @property
    def loaded(self) -> int:
        return self.raw.height

    @property
    def quarantined(self) -> int:
        return sum(f.quarantined for f in self.files)

    def summary(self) -> dict[str, int]:
        """Counts only: safe for logs and Dagster metadata."""
        return {
            "files": len(self.files),
            "files_refused": sum(f.status == "refused" for f in self.files),
            "files_duplicate": sum(f.status == "duplicate" for f in self.files),
            "rows_received": self.received,
            "rows_loaded": sum(f.loaded for f in self.files),
            "rows_quarantined": self.quarantined,
            "rows_superseded": sum(f.superseded for f in self.files),
            "rows_expired": sum(f.expired for f in self.files),
            "quarantined_expired": sum(f.quarantine_expired for f in self.files),
            "rows_duplicate_file": sum(f.received for f in self.files if f.status == "duplicate"),
            "rows_current": self.raw.height,
            "fields_set_aside": sum(f.set_aside for f in self.files),
        }


QUARANTINE_SCHEMA = QUARANTINE.schema


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def landing_files(landing: Path, source: str) -> list[Path]:
    folder = landing / source
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")), key=lambda p: p.name)


#: Beside the source folders, a synthetic county's truth (the spec's "Ground truth", and the
#: generator's truth about each resident and each row's property, for scoring linkage by group and
#: address matching): never read here.
TRUTH_FILES = ("truth.csv", "truth_people.csv", "truth_addresses.csv")


def not_covered(landing: Path, sources: list[str]) -> list[str]:
    """Folders and files in the landing folder that no contract covers, so nothing reads them:
    named in the run's summary, never silently skipped (names only: no content is read)."""
    if not landing.is_dir():
        return []
    return sorted(
        f"{p.name}/" if p.is_dir() else p.name
        for p in landing.iterdir()
        if not p.name.startswith(".") and p.name not in sources and p.name not in TRUTH_FILES
    )


def landing_fingerprint(landing: Path, sources: list[str]) -> str:
    """A digest of every landing file's name, size and modification time, per source folder:
    it changes when a partner adds, replaces or removes a file (reading no contents)."""
    digest = hashlib.sha256()
    for source in sorted(sources):
        for path in landing_files(landing, source):
            stat = path.stat()
            digest.update(f"{source}/{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _map_columns(extract: ExtractFile, contract: Contract, report: FileReport) -> pl.DataFrame | str:
    """Rename the partner's columns to canonical names; a missing required column refuses the file."""
    by_header = {normalise_header(h): h for h in extract.header}
    wanted = {normalise_header(c.partner_name): c for c in contract.columns}
    missing_required = [c.partner_name for key, c in wanted.items() if key not in by_header and c.required]
    if missing_required:
        # the header's other names are not reported: a file sent without its header has data there
        names = ", ".join(repr(n) for n in missing_required)
        unknown = sum(key not in wanted for key in by_header)
        return f"required column {names} is missing from the header ({unknown} header names are not in the contract)"
    report.ignored_columns = sorted(h.strip() for key, h in by_header.items() if key not in wanted)
    report.missing_optional_columns = [c.partner_name for key, c in wanted.items() if key not in by_header]
    columns = [pl.col(ROW)]
    for key, column in wanted.items():
        if key in by_header:
            columns.append(file_column(extract.header, by_header[key], offset=1).alias(column.name))
        else:
            columns.append(pl.lit(None, dtype=pl.String).alias(column.name))
    return extract.frame.select(columns)


PROBLEM_COLUMNS = {ROW: pl.Int64, "column": pl.String, "reason": pl.String}


def _known_columns(extract: ExtractFile, contract: Contract) -> pl.DataFrame:
    """The text of a file's columns that the contract names, under canonical names."""
    wanted = {normalise_header(c.partner_name): c.name for c in contract.columns}
    return extract.frame.select(
        ROW, *[file_column(extract.header, h, offset=1).alias(wanted[normalise_header(h)]) for h in extract.header if normalise_header(h) in wanted]
    )


def _record_json(frame: pl.DataFrame, names: list[str]) -> pl.Expr:
    return pl.struct([pl.col(n) for n in names]).struct.json_encode().alias("record")


def _quarantine_rows(source: str, report: FileReport, bad_rows: pl.DataFrame, problems: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    if bad_rows.height and names:
        records = bad_rows.select(ROW, _record_json(bad_rows, names))
    else:
        records = pl.DataFrame(schema={ROW: pl.Int64, "record": pl.String})
    joined = problems.join(records, on=ROW, how="left")
    return joined.select(
        pl.lit(source).alias("source"),
        pl.lit(report.file).alias(FILE),
        pl.lit(report.sha256).alias(SHA),
        pl.col(ROW),
        pl.col("column"),
        pl.col("reason"),
        pl.col("record"),
    ).cast(QUARANTINE_SCHEMA)


def _natural_key(contract: Contract) -> pl.Expr:
    parts = []
    for name in contract.natural_key:
        column = contract.column(name)
        value = pl.col(name).cast(pl.String).str.to_uppercase()
        if column.key_fallback:
            fallback = pl.concat_str([pl.col(f).cast(pl.String).str.to_uppercase().fill_null("") for f in column.key_fallback], separator="~")
            value = pl.when(value.is_null()).then(pl.lit("~") + fallback).otherwise(value)
        parts.append(value.fill_null(""))
    return pl.concat_str(parts, separator="|").alias(KEY)


def read_source(contract: Contract, landing: Path, today: dt.date) -> SourceIngest:
    """Read, check and reconcile every file of one source. Writes nothing."""
    date_formats = {
        normalise_header(c.partner_name): c.strptime_format for c in contract.columns if c.strptime_format
    }
    names = [c.name for c in contract.columns]
    reports: list[FileReport] = []
    loaded_frames: list[pl.DataFrame] = []
    quarantine_frames: list[pl.DataFrame] = []
    set_aside_frames: list[pl.DataFrame] = [SET_ASIDE_FIELDS.empty()]
    seen: dict[str, str] = {}
    for order, path in enumerate(landing_files(landing, contract.source)):
        if path.is_symlink():
            reports.append(FileReport(contract.source, path.name, "", "refused", message="a link, not a plain file: not followed, not read"))
            continue
        sha = sha256_of(path)
        report = FileReport(source=contract.source, file=path.name, sha256=sha, status="loaded")
        reports.append(report)
        if sha in seen:
            original = next(r for r in reports if r.file == seen[sha])
            report.status, report.duplicate_of, report.received = "duplicate", seen[sha], original.received
            report.message = f"same bytes as {seen[sha]}; loaded once"
            continue
        seen[sha] = path.name
        try:
            extract = read_extract(path, date_formats)
        except FileRefused as exc:
            report.status, report.message = "refused", str(exc)
            continue
        report.received = extract.frame.height
        report.saved_by, report.saved_at = extract.saved_by, extract.saved_at
        mapped = _map_columns(extract, contract, report)
        if isinstance(mapped, str):
            report.status, report.message = "refused", mapped
            report.quarantined = report.received
            known = _known_columns(extract, contract)
            problems = extract.frame.select(
                ROW, pl.lit(None, pl.String).alias("column"), pl.lit(f"file refused: {mapped}").alias("reason")
            )
            quarantine_frames.append(_quarantine_rows(contract.source, report, known, problems, known.columns[1:]))
            continue
        validated = validate_rows(mapped, contract, today)
        # A malformed record's fields cannot be placed in columns, so only the reader's
        # reason is kept for it, and its text is not: the file, its SHA-256 and the row
        # number point to it at the partner.
        malformed = list(extract.raw_records)
        problems = validated.problems.filter(~pl.col(ROW).is_in(malformed))
        if extract.row_problems:
            reader_problems = pl.DataFrame(
                {
                    ROW: [p.row for p in extract.row_problems],
                    "column": [p.column for p in extract.row_problems],
                    "reason": [f"{p.column or 'the record'} {p.reason}" for p in extract.row_problems],
                },
                schema=PROBLEM_COLUMNS,
            )
            problems = pl.concat([problems, reader_problems])
        bad = problems[ROW].unique()
        good = validated.good.filter(~pl.col(ROW).is_in(bad.implode()))
        aside = validated.set_aside.filter(~pl.col(ROW).is_in(bad.implode()))
        report.set_aside = aside.height
        set_aside_frames.append(aside.select(pl.lit(contract.source).alias("source"), pl.lit(path.name).alias(FILE), pl.lit(sha).alias(SHA), pl.all()))
        bad_rows = mapped.filter(pl.col(ROW).is_in(bad.implode()) & ~pl.col(ROW).is_in(malformed))
        report.loaded = good.height
        report.quarantined = bad.len()
        quarantine_frames.append(
            _quarantine_rows(contract.source, report, bad_rows, problems, [n for n in bad_rows.columns if n != ROW])
        )
        loaded_frames.append(
            good.with_columns(pl.lit(path.name).alias(FILE), pl.lit(sha).alias(SHA), pl.lit(order).alias(FILE_ORDER))
        )
    raw, superseded = _reconcile(contract, loaded_frames, names)
    if superseded.height:
        counts = dict(superseded.group_by(FILE).len().iter_rows())
        for report in reports:
            report.superseded = counts.get(report.file, 0)
    raw, expired = apply_retention(contract, raw, today)
    for report in reports:
        report.expired = expired.get(report.file, 0)
    quarantine = pl.concat(quarantine_frames) if quarantine_frames else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    quarantine, quarantine_expired = expire_quarantine(contract, quarantine, today)
    for report in reports:
        report.quarantine_expired = quarantine_expired.get(report.file, 0)
    set_aside = pl.concat(set_aside_frames).cast(SET_ASIDE_FIELDS.schema)
    # a set-aside field of a row later replaced, or past retention, goes with its row
    set_aside = set_aside.join(raw.select(FILE, ROW), on=[FILE, ROW], how="semi")
    return SourceIngest(contract.source, raw, quarantine, superseded, reports, set_aside)


def retention_cutoff(contract: Contract, today: dt.date) -> dt.date | None:
    """Rows dated before this day are past the contract's retention; None: nothing expires
    (no retention stated, or reference data with a retention of 0, replaced whole by each file)."""
    if not contract.retention_years or not (contract.custom.get("retentionDate") or contract.custom.get("eventDate")):
        return None
    return years_before(today, contract.retention_years)


def _past_retention(contract: Contract, typed: pl.DataFrame, cutoff: dt.date) -> pl.Series:
    """True for rows whose retention date (the contract's `retentionDate`, else its `eventDate`)
    is before the cutoff; a row whose date cannot be read is kept."""
    expression = contract.custom.get("retentionDate") or contract.custom["eventDate"]
    con = scratch()
    try:
        con.register("raw", typed)
        return con.sql(f"SELECT coalesce(({expression}) < DATE '{cutoff}', false) AS expired FROM raw").pl()["expired"]
    finally:
        con.close()


def apply_retention(contract: Contract, raw: pl.DataFrame, today: dt.date) -> tuple[pl.DataFrame, dict[str, int]]:
    """Drop rows past the contract's retention; returns the rows kept and how many were removed
    per file (counts only)."""
    cutoff = retention_cutoff(contract, today)
    if cutoff is None or raw.is_empty():
        return raw, {}
    expired = _past_retention(contract, raw, cutoff)
    counts = dict(raw.filter(expired).group_by(FILE).len().iter_rows())
    return raw.filter(~expired), counts


def expire_quarantine(contract: Contract, quarantine: pl.DataFrame, today: dt.date) -> tuple[pl.DataFrame, dict[str, int]]:
    """A quarantined record is kept no longer than the row would have been: its dates are read
    as well as they can be (a broken one is unreadable, and kept, for the partner to correct);
    returns the problems kept and how many records were removed per file (counts only)."""
    cutoff = retention_cutoff(contract, today)
    records = quarantine.filter(pl.col("record").is_not_null()).unique([FILE, ROW]).select(FILE, ROW, "record")
    if cutoff is None or records.is_empty():
        return quarantine, {}
    fields = pl.Struct({c.name: pl.String for c in contract.columns})
    text = records.with_columns(pl.col("record").str.json_decode(fields)).unnest("record")
    typed = text.select(FILE, ROW, *[typed_expr(c) for c in contract.columns])
    gone = typed.filter(_past_retention(contract, typed, cutoff)).select(FILE, ROW)
    counts = dict(gone.group_by(FILE).len().iter_rows())
    return quarantine.join(gone, on=[FILE, ROW], how="anti"), counts


def _empty_raw(contract: Contract) -> pl.DataFrame:
    dtypes = {"string": pl.String, "date": pl.Date, "timestamp": pl.Datetime("us"), "integer": pl.Int64, "boolean": pl.Boolean}
    schema = {c.name: dtypes[c.logical_type] for c in contract.columns}
    return pl.DataFrame(schema={**schema, FILE: pl.String, SHA: pl.String, ROW: pl.Int64, FILE_ORDER: pl.Int32})


def _reconcile(contract: Contract, frames: list[pl.DataFrame], names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Later rows replace earlier rows with the same natural key."""
    empty = _empty_raw(contract)
    frames = [f.select(names + [FILE, SHA, ROW, FILE_ORDER]).cast(empty.schema) for f in frames]
    combined = pl.concat(frames) if frames else empty
    if not contract.natural_key:
        return combined.drop(FILE_ORDER), pl.DataFrame(schema={FILE: pl.String, ROW: pl.Int64, "replaced_by_file": pl.String, "replaced_by_row": pl.Int64})
    combined = combined.with_columns(_natural_key(contract)).sort([FILE_ORDER, ROW])
    winner = combined.group_by(KEY, maintain_order=True).agg(
        pl.col(FILE).last().alias("replaced_by_file"), pl.col(ROW).last().alias("replaced_by_row")
    )
    ranked = combined.with_columns(pl.int_range(pl.len()).over(KEY).alias("_n"), pl.len().over(KEY).alias("_count"))
    current = ranked.filter(pl.col("_n") == pl.col("_count") - 1).drop("_n", "_count", KEY, FILE_ORDER)
    superseded = (
        ranked.filter(pl.col("_n") < pl.col("_count") - 1)
        .join(winner, on=KEY, how="left")
        .select(FILE, ROW, "replaced_by_file", "replaced_by_row")
    )
    return current, superseded


# ---------------------------------------------------------------- warehouse

def ensure_ingestion_tables(con: duckdb.DuckDBPyConnection) -> None:
    ensure_tables(con, *LEDGER_TABLES)


def write_source(con: duckdb.DuckDBPyConnection, contract: Contract, result: SourceIngest, today: dt.date | None = None) -> None:
    """Replace this source's tables and records in one transaction: all or nothing. Records
    the rows removed under the contract's retention in `retention_log` (counts only)."""
    today = today or dt.date.today()
    ensure_ingestion_tables(con)
    files = pl.DataFrame(
        [
            {**asdict(r), "ingested_at": dt.datetime.now().replace(microsecond=0)}
            for r in result.files
        ],
        schema=LANDED_FILES.schema,
    )
    superseded = result.superseded.select(pl.lit(contract.source).alias("source"), FILE, ROW, "replaced_by_file", "replaced_by_row")
    con.execute("BEGIN TRANSACTION")
    try:
        con.register("_raw", result.raw)
        con.register("_quarantine", result.quarantine)
        con.register("_files", files)
        con.register("_superseded", superseded)
        con.register("_set_aside", result.set_aside)
        con.execute(f'CREATE OR REPLACE TABLE "{contract.raw_table}" AS SELECT * FROM _raw')
        con.execute("DELETE FROM quarantine WHERE source = ?", [contract.source])
        con.execute("INSERT INTO quarantine SELECT source, _file, _sha256, _row, \"column\", reason, record FROM _quarantine")
        con.execute("DELETE FROM landed_files WHERE source = ?", [contract.source])
        con.execute("INSERT INTO landed_files BY NAME SELECT * FROM _files")
        removed = sum(r.expired for r in result.files)
        cutoff = retention_cutoff(contract, today)
        if cutoff is not None:
            con.execute(
                "INSERT INTO retention_log VALUES (?, ?, ?, ?, ?)",
                [dt.datetime.now().replace(microsecond=0), contract.source, contract.retention_years, cutoff, removed],
            )
        con.execute("DELETE FROM set_aside_fields WHERE source = ?", [contract.source])
        con.execute("INSERT INTO set_aside_fields BY NAME SELECT * FROM _set_aside")
        con.execute("DELETE FROM superseded_rows WHERE source = ?", [contract.source])
        con.execute("INSERT INTO superseded_rows SELECT * FROM _superseded")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        for name in ("_raw", "_quarantine", "_files", "_superseded", "_set_aside"):
            con.unregister(name)
