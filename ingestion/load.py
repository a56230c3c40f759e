"""Ingest one source's landing folder through its contract, and write it to the warehouse.

The landing folder is taken whole on every run, so a rerun over the same files
gives the same tables (idempotent) and a later file can restate an earlier
one; files the last run loaded and that have not changed are not read again
(`read_source`'s `previous`), and the tables come out as a reading of every
file would leave them. For each source:

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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
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
from ingestion.validate import Validated, typed_expr, validate_rows
from ingestion.validate import IN_FUTURE
from warehouse import EXPIRED_KEYS, LANDED_FILES, LEDGER_TABLES, QUARANTINE, SET_ASIDE_FIELDS, ensure_tables, in_one_piece, read_table, register, scratch, table_exists, transaction

FILE = "_file"
SHA = "_sha256"
FILE_ORDER = "_file_order"
KEY = "_natural_key"
PROVENANCE = (FILE, SHA, ROW)
#: A row's file and row as one integer: the file's place (in a batch, among the files) above these
#: bits, the row's number below them. A file of 2**32 rows or more could not be read into memory.
ROW_BITS = 32


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
    contract_sha256: str | None = None  # the contract the file was checked under
    validated_on: dt.date | None = None  # the day it was checked (the future-date rule's today)
    # the latest date retention counts from among the rows it loaded: a quarantined record of the
    # file whose date cannot be read is kept no longer than its file's other records
    latest_retention_date: dt.date | None = None


@dataclass
class RowsChange:
    """How a load changes the rows the warehouse keeps for a source: the rows that go (_file,
    _row: replaced by a new file's, or past retention), and how many it then holds."""

    removed: pl.DataFrame
    current: int


@dataclass
class SourceIngest:
    source: str
    raw: pl.DataFrame
    quarantine: pl.DataFrame
    superseded: pl.DataFrame
    files: list[FileReport]
    set_aside: pl.DataFrame  # SET_ASIDE_FIELDS' columns
    expired_keys: pl.DataFrame = field(default_factory=lambda: EXPIRED_KEYS.empty().drop("source"))  # rows removed under retention
    files_read: int = 0  # files read and checked this time (the rest were unchanged since the last load)
    # the rows (_file, _row) the warehouse's table held, in its order, when this load took the
    # unchanged files' rows from it: the table is then changed in place (`write_source`)
    held_before: pl.DataFrame | None = None
    # where the unchanged files' rows were left in the warehouse (not read whole): `raw` is then
    # only the rows this load adds to them, and this says which of them go
    in_place: RowsChange | None = None

    @property
    def received(self) -> int:
        return sum(f.received for f in self.files)

    @property
    def loaded(self) -> int:
        """The rows the source holds once this load is written."""
        return self.in_place.current if self.in_place is not None else self.raw.height

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
            "rows_current": self.loaded,
            "fields_set_aside": sum(f.set_aside for f in self.files),
            "files_read": self.files_read,
        }


QUARANTINE_SCHEMA = QUARANTINE.schema


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def contract_digest(contract: Contract) -> str:
    return hashlib.sha256(contract.path.read_bytes()).hexdigest()


@dataclass
class PreviousLoad:
    """What the warehouse holds of a source's last load: its files' reports (name order), the
    file, row and natural key of each current row (`kept_keys`, in the table's order: the rows
    themselves stay in the warehouse unless they must be read, `rows`), and the ledgers' rows for
    the source."""

    files: list[FileReport]
    kept_keys: pl.DataFrame  # _file, _row and the columns the natural key is made of (`key_columns`)
    quarantine: pl.DataFrame
    set_aside: pl.DataFrame
    superseded: pl.DataFrame  # _file, _row, replaced_by_file, replaced_by_row
    expired_keys: pl.DataFrame  # _file, _row, key_sha256
    judged_by_day: set[str]  # files with a value refused or set aside as in the future
    # the connection and table the rows are in, read while this load is read (`read_source`)
    con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    table: str = ""
    # the table's columns are those the contract gives a row (else it is written again whole)
    same_columns: bool = True

    def rows(self) -> pl.DataFrame:
        """Every current row, whole, in the table's order."""
        return self.con.sql(f'SELECT * FROM "{self.table}"').pl()

    def past_retention(self, contract: Contract, cutoff: dt.date) -> pl.DataFrame:
        """(_file, _row) of the current rows past retention on `cutoff` (`_past_retention`'s rule,
        read where the rows are)."""
        return self.con.sql(f'SELECT "{FILE}", "{ROW}" FROM "{self.table}" WHERE {_past_retention_sql(contract, cutoff)}').pl()

    def reusable(self, paths: list[Path], shas: dict[str, str], contract: Contract, today: dt.date) -> list[FileReport]:
        """The reports of the last load's first files that can stand for reading them again: each
        still in its place in name order with its bytes, under the same contract, checked no later
        than today, and with no value the day judged (a date in the future then, perhaps not now).
        They stop at the first file that cannot: it and every file after it are read again, as a
        later file's rows may replace its (`read_source`).

        A file gone from the landing folder (deleted once its rows were past retention, or
        archived) is passed over: its rows leave the table, and the files after it can still
        stand, as the rows it replaced come back only where it had replaced some of a kept file's
        (`still_replaced` then has every file read). Not where a kept file was loaded as its
        duplicate: that file's rows are loaded now."""
        digest = contract_digest(contract)
        present = {path.name for path in paths}
        gone = {report.file for report in self.files if report.file not in present}
        kept: list[FileReport] = []
        standing = iter(self.files)
        for path in paths:
            report = next((r for r in standing if r.file not in gone), None)
            if (
                report is None or report.file != path.name or not report.sha256 or report.sha256 != shas[path.name] or report.contract_sha256 != digest
                or report.validated_on is None or report.validated_on > today or (report.validated_on < today and report.file in self.judged_by_day)
                or report.duplicate_of in gone
            ):
                break
            kept.append(replace(report))  # copies: this load recounts what it replaced and removed
        return kept

    def still_replaced(self, kept: list[FileReport], loaded: list[pl.DataFrame]) -> bool:
        """Whether every kept file's row that a row of a file not kept had replaced (a file read
        again, or gone from the landing folder) is replaced again: that row loaded again (`loaded`:
        the rows this load read). The kept row is gone from the warehouse, so were its replacement
        not loaded now (its file gone) it could not stand again, as a reading of every file would
        have it: then every file is read. A file of the same bytes under the same contract loads
        each row it loaded before, and more as dates judged in the future come to pass; so a
        replacement counts as loaded again only from the bytes that made it. A file sent again
        under its name with other bytes (a partner's correction) may hold another record at that
        row, or none: the kept row may stand again, and only a reading of every file says."""
        files = pl.Series([r.file for r in kept], dtype=pl.String).implode()
        replaced = self.superseded.filter(pl.col(FILE).is_in(files) & ~pl.col("replaced_by_file").is_in(files))
        if replaced.is_empty():
            return True
        then = pl.DataFrame({FILE: [r.file for r in self.files], SHA: [r.sha256 for r in self.files]}, schema={FILE: pl.String, SHA: pl.String})
        again = pl.concat([f.select(FILE, SHA, ROW) for f in loaded]) if loaded else pl.DataFrame(schema={FILE: pl.String, SHA: pl.String, ROW: pl.Int64})
        again = again.join(then, on=[FILE, SHA], how="semi")
        return replaced.join(again, left_on=["replaced_by_file", "replaced_by_row"], right_on=[FILE, ROW], how="anti").is_empty()


def previous_load(con: duckdb.DuckDBPyConnection, contract: Contract) -> PreviousLoad | None:
    """The source's last load as the warehouse holds it, or None before its first."""
    if not table_exists(con, contract.raw_table) or not table_exists(con, LANDED_FILES.name):
        return None
    ensure_ingestion_tables(con)
    fields = [f for f in FileReport.__dataclass_fields__]
    source = [contract.source]
    files = con.sql(f"SELECT {', '.join(fields)} FROM landed_files WHERE source = ? ORDER BY file", params=source).pl()
    problems = con.execute(
        "SELECT DISTINCT _file FROM quarantine WHERE source = $source AND contains(reason, $day) "
        "UNION SELECT DISTINCT _file FROM set_aside_fields WHERE source = $source AND contains(reason, $day)",
        {"source": contract.source, "day": IN_FUTURE},
    ).fetchall()
    columns = [c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position", [contract.raw_table]).fetchall()]
    keys = ", ".join(f'"{c}"' for c in (FILE, ROW, *key_columns(contract)) if c in columns)
    return PreviousLoad(
        files=[FileReport(**row) for row in files.iter_rows(named=True)],
        kept_keys=con.sql(f'SELECT {keys} FROM "{contract.raw_table}"').pl(),
        con=con, table=contract.raw_table, same_columns=columns == [*(c.name for c in contract.columns), *PROVENANCE],
        quarantine=con.sql("SELECT * FROM quarantine WHERE source = ?", params=source).pl().cast(QUARANTINE_SCHEMA),
        set_aside=con.sql("SELECT * FROM set_aside_fields WHERE source = ?", params=source).pl().cast(SET_ASIDE_FIELDS.schema),
        superseded=con.sql("SELECT _file, _row, replaced_by_file, replaced_by_row FROM superseded_rows WHERE source = ?", params=source).pl(),
        expired_keys=con.sql("SELECT _file, _row, key_sha256 FROM retention_keys WHERE source = ?", params=source).pl(),
        judged_by_day={f for (f,) in problems},
    )


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


def key_columns(contract: Contract) -> list[str]:
    """The columns a row's natural key is made of (`_natural_key`): the key's, and their fallbacks."""
    named = []
    for name in contract.natural_key:
        for c in (name, *contract.column(name).key_fallback):
            if c not in named:
                named.append(c)
    return named


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


def _open_file(contract: Contract, path: Path, sha: str, today: dt.date, date_formats: dict[str, str]) -> tuple[FileReport, ExtractFile | None, pl.DataFrame | None, pl.DataFrame | None]:
    """Read one landing file and name its columns as the contract does: (its report, the extract,
    its columns under canonical names, to be checked; or, for a file refused, its quarantine)."""
    report = FileReport(source=contract.source, file=path.name, sha256=sha, status="loaded", contract_sha256=contract_digest(contract), validated_on=today)
    try:
        extract = read_extract(path, date_formats)
    except FileRefused as exc:
        report.status, report.message = "refused", str(exc)
        return report, None, None, None
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
        return report, extract, None, _quarantine_rows(contract.source, report, known, problems, known.columns[1:])
    return report, extract, mapped, None


def _sort_rows(contract: Contract, report: FileReport, extract: ExtractFile, mapped: pl.DataFrame, validated: Validated, order: int) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """One file's rows once checked: (the rows that load, its quarantine, its set-aside fields)."""
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
    bad_rows = mapped.filter(pl.col(ROW).is_in(bad.implode()) & ~pl.col(ROW).is_in(malformed))
    report.loaded = good.height
    report.quarantined = bad.len()
    return (
        good.with_columns(pl.lit(report.file).alias(FILE), pl.lit(report.sha256).alias(SHA), pl.lit(order).alias(FILE_ORDER)),
        _quarantine_rows(contract.source, report, bad_rows, problems, [n for n in bad_rows.columns if n != ROW]),
        aside.select(pl.lit(contract.source).alias("source"), pl.lit(report.file).alias(FILE), pl.lit(report.sha256).alias(SHA), pl.all()),
    )


#: Files read one after another are checked as one frame until they hold this many bytes: checking
#: a file costs about 20 ms however few its rows (a hundred rules planned and run), and a source
#: sends a file a month. At 1.2M residents, the forty monthly files of anti-social behaviour took
#: 1.0 s to check one by one and 0.2 s as one.
CHECKED_TOGETHER_BYTES = 8 << 20


def _read_files(contract: Contract, chosen: list[tuple[int, Path]], shas: dict[str, str], today: dt.date, date_formats: dict[str, str]) -> list[tuple[FileReport, pl.DataFrame | None, pl.DataFrame | None, pl.DataFrame | None]]:
    """Read and check a batch of one source's files (their order and path): for each, (its report,
    the rows that load, its quarantine, its set-aside fields), as if each were checked alone."""
    opened = [_open_file(contract, path, shas[path.name], today, date_formats) for _, path in chosen]
    checkable = [i for i, (_, _, mapped, _) in enumerate(opened) if mapped is not None]
    parts: dict[str, dict[int, pl.DataFrame]] = {}
    if checkable:
        together = pl.concat([opened[i][2].with_columns(pl.col(ROW) + (i << ROW_BITS)) for i in checkable])
        validated = validate_rows(together, contract, today)
        del together
        for name in ("good", "problems", "set_aside"):
            frame = getattr(validated, name)
            split = frame.with_columns((pl.col(ROW) // (1 << ROW_BITS)).alias("_in_batch"), pl.col(ROW) % (1 << ROW_BITS))
            parts[name] = {key[0]: part for key, part in split.partition_by("_in_batch", as_dict=True, include_key=False).items()}
            parts[name][-1] = split.drop("_in_batch").head(0)
    results = []
    for i, ((order, _), (report, extract, mapped, refused)) in enumerate(zip(chosen, opened)):
        if mapped is None:
            results.append((report, None, refused, None))
            continue
        validated = Validated(*(parts[name].get(i, parts[name][-1]) for name in ("good", "problems", "set_aside")))
        results.append((report, *_sort_rows(contract, report, extract, mapped, validated, order)))
    return results


#: Batches of one source's landing files read at once, in threads: Polars lets go of the GIL while
#: it parses and checks a file, so another file's Python work (decoding, validation's Python, the
#: csv module where a file's records are not plain lines) runs meanwhile. Five 1.2M sources' files 21.3 ->
#: 18.5 s (medians of two, alternating), when every file's fields were counted by the csv module.
FILES_READ_AT_ONCE = 2


def read_source(contract: Contract, landing: Path, today: dt.date, previous: PreviousLoad | None = None) -> SourceIngest:
    """Read, check and reconcile every file of one source. Writes nothing.

    previous: what the warehouse holds of this source's last load (`previous_load`). Files it
    loaded whose name and SHA-256 are unchanged are not read or checked again while they are
    the first files in name order, under the same contract, read no later than `today` and
    with no value judged by the day (a date in the future; `PreviousLoad.reusable`): their rows,
    quarantine and counts are taken from the warehouse, and only the files after them are read
    (the new ones, and any the last load read that could not be kept). The tables come out as a
    reading of every file would give them (tests compare the two)."""
    date_formats = {
        normalise_header(c.partner_name): c.strptime_format for c in contract.columns if c.strptime_format
    }
    names = [c.name for c in contract.columns]
    paths = landing_files(landing, contract.source)
    # every file's digest, to know which are unchanged: two at a time, as hashlib lets go of the
    # interpreter while it hashes (a 1.2M county's 1.1 GB of landing files, 0.51 -> 0.29 s)
    with ThreadPoolExecutor(max_workers=FILES_READ_AT_ONCE) as pool:
        shas = dict(zip((p.name for p in paths), pool.map(lambda p: "" if p.is_symlink() else sha256_of(p), paths)))
    kept = previous.reusable(paths, shas, contract, today) if previous is not None else []
    kept_files = pl.Series([r.file for r in kept], dtype=pl.String).implode()
    reports: list[FileReport] = []
    loaded_frames: list[pl.DataFrame] = []
    quarantine_frames: list[pl.DataFrame] = []
    set_aside_frames: list[pl.DataFrame] = [SET_ASIDE_FIELDS.empty()]
    seen: dict[str, str] = {}
    for report in kept:
        reports.append(report)
        if report.status != "duplicate":
            seen[report.sha256] = report.file
    file_order = pl.DataFrame({FILE: [p.name for p in paths], FILE_ORDER: list(range(len(paths)))}, schema={FILE: pl.String, FILE_ORDER: pl.Int32})
    in_file_order = pl.col(FILE).replace_strict(file_order[FILE], file_order[FILE_ORDER], default=None, return_dtype=pl.Int32).alias(FILE_ORDER)
    if kept:
        quarantine_frames.append(previous.quarantine.filter(pl.col(FILE).is_in(kept_files)))
        set_aside_frames.append(previous.set_aside.filter(pl.col(FILE).is_in(kept_files)))
    # which files are read is known from their names and digests alone; they are read in batches
    # (`CHECKED_TOGETHER_BYTES`), two batches at a time, and taken in order, as if read one by one
    to_read = []
    for order, path in enumerate(paths):
        if order >= len(kept) and not path.is_symlink() and shas[path.name] not in seen:
            seen[shas[path.name]] = path.name
            to_read.append((order, path))
    batches: list[list[tuple[int, Path]]] = []
    held = CHECKED_TOGETHER_BYTES
    for order, path in to_read:
        if held >= CHECKED_TOGETHER_BYTES:
            batches.append([])
            held = 0
        batches[-1].append((order, path))
        held += path.stat().st_size

    with ThreadPoolExecutor(max_workers=FILES_READ_AT_ONCE) as pool:
        checked = pool.map(lambda batch: _read_files(contract, batch, shas, today, date_formats), batches)
        read = {done[0].file: done for batch in checked for done in batch}
    for path in paths[len(kept):]:
        sha = shas[path.name]
        if path.is_symlink():
            reports.append(FileReport(contract.source, path.name, "", "refused", message="a link, not a plain file: not followed, not read"))
            continue
        if path.name not in read:
            original = next(r for r in reports if r.file == seen[sha])
            reports.append(FileReport(
                contract.source, path.name, sha, "duplicate", received=original.received, duplicate_of=seen[sha],
                message=f"same bytes as {seen[sha]}; loaded once", contract_sha256=contract_digest(contract), validated_on=today,
            ))
            continue
        report, good, quarantined, aside = read.pop(path.name)
        reports.append(report)
        for frames, frame in ((loaded_frames, good), (quarantine_frames, quarantined), (set_aside_frames, aside)):
            if frame is not None:
                frames.append(frame)
    # the last load read files it did not keep (read again now, or gone): their rows leave the table
    partly = bool(kept) and len(kept) < len(previous.files)
    if partly and not previous.still_replaced(kept, loaded_frames):
        return read_source(contract, landing, today)
    latest = _latest_retention_dates(contract, loaded_frames)  # the files read now: the kept ones' stand
    for report in reports[len(kept):]:
        report.latest_retention_date = latest.get(report.file)
    kept_keys = previous.kept_keys.filter(pl.col(FILE).is_in(kept_files)) if partly else previous.kept_keys if kept else None
    # the unchanged files' rows stay in the warehouse where they can: only their keys are read, to
    # find those a new file sends again (`_reconciled_with_kept`); else they are read whole
    standing = _reconciled_with_kept(contract, kept_keys.with_columns(in_file_order), loaded_frames, names) if kept and previous.same_columns else None
    if standing is not None:
        sent_again, raw, superseded = standing
    else:
        if kept:
            # every row ranked again, the kept ones with the new (`_reconcile` puts them in file and row order)
            loaded_frames.insert(0, previous.rows().filter(pl.col(FILE).is_in(kept_files)).with_columns(in_file_order))
        raw, superseded = _reconcile(contract, loaded_frames, names)
    expired_before = previous.expired_keys.filter(pl.col(FILE).is_in(kept_files)) if kept else EXPIRED_KEYS.empty()
    if kept and contract.natural_key and expired_before.height:
        # a row past retention whose key a new file sends again is replaced by it, as it would be
        # had every file been read today: it counts as replaced, no longer as expired
        digests = key_digests(raw.filter(~pl.col(FILE).is_in(kept_files)), contract)
        restated = expired_before.join(digests.rename({FILE: "replaced_by_file", ROW: "replaced_by_row"}), on="key_sha256")
        superseded = pl.concat([superseded, restated.select(FILE, ROW, "replaced_by_file", "replaced_by_row")])
        expired_before = expired_before.join(restated.select(FILE, ROW), on=[FILE, ROW], how="anti")
    if kept:
        superseded = pl.concat([_repointed(previous.superseded.filter(pl.col(FILE).is_in(kept_files)), superseded), superseded])
    for report in reports:
        report.superseded = 0
    if superseded.height:
        counts = dict(superseded.group_by(FILE).len().iter_rows())
        for report in reports:
            report.superseded = counts.get(report.file, 0)
    raw, expired_now = apply_retention(contract, raw, today)
    in_place = None
    if standing is not None:
        # the kept rows past retention now, unless a new file replaced them
        cutoff = retention_cutoff(contract, today)
        past = previous.past_retention(contract, cutoff).join(sent_again, on=[FILE, ROW], how="anti") if cutoff is not None else sent_again.head(0)
        past = past.filter(pl.col(FILE).is_in(kept_files)) if partly else past
        expired_now = pl.concat([key_digests(kept_keys.join(past, on=[FILE, ROW], how="semi"), contract), expired_now])
        # the rows of the files read again go, and come back as this reading has them
        not_kept = previous.kept_keys.filter(~pl.col(FILE).is_in(kept_files)).select(FILE, ROW) if partly else sent_again.head(0)
        removed = pl.concat([sent_again, past, not_kept])
        in_place = RowsChange(removed, previous.kept_keys.height - removed.height + raw.height)
    expired_keys = pl.concat([expired_before.select(FILE, ROW, "key_sha256"), expired_now]).sort(FILE, ROW)
    expired = dict(expired_keys.group_by(FILE).len().iter_rows())
    for report in reports:
        report.expired = expired.get(report.file, 0)
    quarantine = pl.concat(quarantine_frames) if quarantine_frames else pl.DataFrame(schema=QUARANTINE_SCHEMA)
    quarantine, quarantine_expired = expire_quarantine(contract, quarantine, today, {r.file: r.latest_retention_date for r in reports})
    for i, report in enumerate(reports):
        # records removed in an earlier load are gone from its quarantine: their count carries over
        report.quarantine_expired = (report.quarantine_expired if i < len(kept) else 0) + quarantine_expired.get(report.file, 0)
    set_aside = pl.concat(set_aside_frames).cast(SET_ASIDE_FIELDS.schema)
    # a set-aside field of a row later replaced, or past retention, goes with its row
    if in_place is not None:
        from_kept = pl.col(FILE).is_in(kept_files)
        set_aside = pl.concat([
            set_aside.filter(from_kept).join(in_place.removed, on=[FILE, ROW], how="anti"),
            set_aside.filter(~from_kept).join(raw.select(FILE, ROW), on=[FILE, ROW], how="semi"),
        ])
    else:
        set_aside = set_aside.join(raw.select(FILE, ROW), on=[FILE, ROW], how="semi")
    return SourceIngest(
        contract.source, raw, quarantine, superseded.sort(FILE, ROW), reports, set_aside, expired_keys, files_read=len(reports) - len(kept),
        # rows of a file read again come back changed (a field set aside as in the future then, not
        # now) under the same file and row: only a table kept whole is changed by its rows' places
        held_before=previous.kept_keys.select(FILE, ROW) if kept and not partly and in_place is None else None, in_place=in_place,
    )


def _repointed(earlier: pl.DataFrame, now: pl.DataFrame) -> pl.DataFrame:
    """Rows replaced in an earlier load, pointed at the row that replaces their replacement now."""
    hop = now.select(pl.col(FILE).alias("replaced_by_file"), pl.col(ROW).alias("replaced_by_row"), pl.col("replaced_by_file").alias("_file2"), pl.col("replaced_by_row").alias("_row2"))
    return earlier.join(hop, on=["replaced_by_file", "replaced_by_row"], how="left").select(
        FILE, ROW, pl.coalesce("_file2", "replaced_by_file").alias("replaced_by_file"), pl.coalesce("_row2", "replaced_by_row").alias("replaced_by_row")
    )


def retention_cutoff(contract: Contract, today: dt.date) -> dt.date | None:
    """Rows dated before this day are past the contract's retention; None: nothing expires
    (no retention stated, or reference data with a retention of 0, replaced whole by each file)."""
    if _retention_date_sql(contract) is None:
        return None
    return years_before(today, contract.retention_years)


def _past_retention(contract: Contract, typed: pl.DataFrame, cutoff: dt.date, otherwise: str | None = None) -> pl.Series:
    """True for rows whose retention date (the contract's `retentionDate`, else its `eventDate`)
    is before the cutoff; a row whose date cannot be read is kept (`otherwise`: a column of the
    date to count from then)."""
    con = scratch()
    try:
        register(con, "raw", typed)
        return con.sql(f"SELECT {_past_retention_sql(contract, cutoff, otherwise)} AS expired FROM raw").pl()["expired"]
    finally:
        con.close()


def _retention_date_sql(contract: Contract) -> str | None:
    """SQL: the date a row's retention counts from (the contract's `retentionDate`, else its
    `eventDate`); None where its rows do not expire (no retention stated, or no date named)."""
    if not contract.retention_years:
        return None
    return contract.custom.get("retentionDate") or contract.custom.get("eventDate")


def _past_retention_sql(contract: Contract, cutoff: dt.date, otherwise: str | None = None) -> str:
    """SQL: true for a row (the contract's columns) past retention on `cutoff` (`_past_retention`);
    `otherwise`: the date to count from where the row's own cannot be read."""
    dated = f"coalesce(({_retention_date_sql(contract)}), {otherwise})" if otherwise else f"({_retention_date_sql(contract)})"
    return f"coalesce({dated} < DATE '{cutoff}', false)"


def _latest_retention_dates(contract: Contract, loaded: list[pl.DataFrame]) -> dict[str, dt.date]:
    """Each file's latest date retention counts from, among the rows `loaded` (each file's rows
    that load, as read); none where the contract counts retention from no date."""
    if _retention_date_sql(contract) is None or not loaded:
        return {}
    con = scratch()
    try:
        register(con, "loaded", pl.concat([frame.select(FILE, *(c.name for c in contract.columns)) for frame in loaded]))
        return {file: day for file, day in con.execute(f"SELECT {FILE}, max({_retention_date_sql(contract)}) FROM loaded GROUP BY ALL").fetchall() if day is not None}
    finally:
        con.close()


def apply_retention(contract: Contract, raw: pl.DataFrame, today: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Drop rows past the contract's retention; returns the rows kept and, for each row removed,
    its file, row and the digest of its natural key (`EXPIRED_KEYS`: never a field of the row)."""
    cutoff = retention_cutoff(contract, today)
    if cutoff is None or raw.is_empty():
        return raw, EXPIRED_KEYS.empty().drop("source")
    expired = _past_retention(contract, raw, cutoff)
    return raw.filter(~expired), key_digests(raw.filter(expired), contract)


def key_digests(rows: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """(file, row, SHA-256 of the natural key) for each row: how a row past retention is known
    again if a partner restates it, without keeping its key (the key: none when the contract has none)."""
    if not contract.natural_key or rows.is_empty():
        return rows.select(FILE, ROW, pl.lit(None, pl.String).alias("key_sha256"))
    keyed = rows.select(FILE, ROW, _natural_key(contract))
    con = scratch()
    try:
        register(con, "keyed", keyed)
        return con.sql(f'SELECT "{FILE}", "{ROW}", sha256("{KEY}") AS key_sha256 FROM keyed').pl()
    finally:
        con.close()


def expire_quarantine(contract: Contract, quarantine: pl.DataFrame, today: dt.date, latest: dict[str, dt.date | None] | None = None) -> tuple[pl.DataFrame, dict[str, int]]:
    """A quarantined record is kept no longer than the row would have been: its dates are read
    as well as they can be; one whose date cannot be read (a broken one, kept for the partner to
    correct) is kept as long as the latest date among the rows its file loaded (`latest`: by
    file, `FileReport.latest_retention_date`), and where its file loaded none, kept. Returns the
    problems kept and how many records were removed per file (counts only)."""
    cutoff = retention_cutoff(contract, today)
    records = quarantine.filter(pl.col("record").is_not_null()).unique([FILE, ROW]).select(FILE, ROW, "record")
    if cutoff is None or records.is_empty():
        return quarantine, {}
    fields = pl.Struct({c.name: pl.String for c in contract.columns})
    text = records.with_columns(pl.col("record").str.json_decode(fields)).unnest("record")
    typed = text.select(FILE, ROW, *[typed_expr(c) for c in contract.columns])
    files = pl.DataFrame({FILE: list((latest or {}).keys()), "_latest": list((latest or {}).values())}, schema={FILE: pl.String, "_latest": pl.Date})
    typed = typed.join(files, on=FILE, how="left")
    gone = typed.filter(_past_retention(contract, typed, cutoff, otherwise="_latest")).select(FILE, ROW)
    counts = dict(gone.group_by(FILE).len().iter_rows())
    return quarantine.join(gone, on=[FILE, ROW], how="anti"), counts


def _empty_raw(contract: Contract) -> pl.DataFrame:
    dtypes = {"string": pl.String, "date": pl.Date, "timestamp": pl.Datetime("us"), "integer": pl.Int64, "boolean": pl.Boolean}
    schema = {c.name: dtypes[c.logical_type] for c in contract.columns}
    return pl.DataFrame(schema={**schema, FILE: pl.String, SHA: pl.String, ROW: pl.Int64, FILE_ORDER: pl.Int32})


#: The rows a load found replaced, and what replaced each.
_REPLACED = {FILE: pl.String, ROW: pl.Int64, "replaced_by_file": pl.String, "replaced_by_row": pl.Int64}


def _reconcile(contract: Contract, frames: list[pl.DataFrame], names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Later rows replace earlier rows with the same natural key (a month's load ranks only its new
    rows against the kept rows' keys where it can: `_reconciled_with_kept`)."""
    empty = _empty_raw(contract)
    frames = [f.select(names + [FILE, SHA, ROW, FILE_ORDER]).cast(empty.schema) for f in frames]
    combined = pl.concat(frames) if frames else empty
    if not contract.natural_key:
        return combined.drop(FILE_ORDER), pl.DataFrame(schema=_REPLACED)
    # which row wins is worked out on the key and position alone (the last of its key, without a
    # window over two million string keys), and the winners taken from the full rows once, in order
    keyed = combined.select(_natural_key(contract), FILE, ROW, FILE_ORDER).with_row_index("_i").sort([FILE_ORDER, ROW])
    keyed = keyed.with_columns(pl.col(KEY).is_last_distinct().alias("_last"))
    winner = keyed.filter("_last").select(KEY, pl.col(FILE).alias("replaced_by_file"), pl.col(ROW).alias("replaced_by_row"))
    if keyed["_i"].is_sorted():
        # the files' rows came in file and row order, as they are read: the winners are a mask of
        # them, which Polars applies in milliseconds where taking them by position took 0.35 s
        # (school attendance's 1.66M rows at 1.2M residents)
        current = combined.drop(FILE_ORDER).filter(keyed["_last"])
    else:
        current = combined.drop(FILE_ORDER)[keyed.filter("_last")["_i"]]
    superseded = keyed.filter(~pl.col("_last")).join(winner, on=KEY, how="left").select(FILE, ROW, "replaced_by_file", "replaced_by_row")
    return current, superseded


def _rank_new_rows(contract: Contract, kept: pl.DataFrame, new: pl.DataFrame) -> tuple[pl.Series, pl.DataFrame, pl.DataFrame] | None:
    """(which `kept` rows a new file sends again, the new rows that stand, in order, and the rows
    replaced), where `kept` (FILE, ROW, FILE_ORDER and at least the key's columns) holds one row a
    key in file and row order; else None. The same rows, replacements and order as ranking them all
    (a month at 1.2M residents ranked 1.3M school rows for the 30,000 new)."""
    kept_keys = kept.select(_natural_key(contract), FILE, ROW)
    in_order = kept[FILE_ORDER].null_count() == 0 and (kept[FILE_ORDER].cast(pl.Int64) * (1 << 40) + kept[ROW]).is_sorted()
    # keys whose hashes are all distinct are: counting the hashes took a tenth of the time of
    # counting the keys (1.5M school rows at 1.2M residents, 0.03 against 0.32 s)
    if not in_order or (kept_keys[KEY].hash().n_unique() != kept.height and kept_keys[KEY].n_unique() != kept.height):
        return None
    keyed = new.select(_natural_key(contract), FILE, ROW, FILE_ORDER).with_row_index("_i").sort([FILE_ORDER, ROW])
    keyed = keyed.with_columns(pl.col(KEY).is_last_distinct().alias("_last"))
    winner = keyed.filter("_last").select(KEY, pl.col(FILE).alias("replaced_by_file"), pl.col(ROW).alias("replaced_by_row"))
    restated = kept_keys[KEY].is_in(winner[KEY].implode())
    replaced = pl.concat([kept_keys.filter(restated), keyed.filter(~pl.col("_last")).select(KEY, FILE, ROW)])
    superseded = replaced.join(winner, on=KEY, how="left").select(FILE, ROW, "replaced_by_file", "replaced_by_row")
    return restated, new[keyed.filter("_last")["_i"]].drop(FILE_ORDER), superseded


def _reconciled_with_kept(contract: Contract, kept: pl.DataFrame, frames: list[pl.DataFrame], names: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    """The new files' rows (`frames`) reconciled with the unchanged files' rows without reading
    these: `kept` gives only their file, row, place (FILE_ORDER) and key's columns, in the
    table's order. Returns (the kept rows a new file sends again: FILE, ROW; the new rows that
    stand; the rows replaced), as `_reconcile` would find them; None where `kept` is not one
    row a key in file and row order (then every row is read and ranked)."""
    empty = _empty_raw(contract)
    new = pl.concat([empty, *(f.select(names + [FILE, SHA, ROW, FILE_ORDER]).cast(empty.schema) for f in frames)])
    if not contract.natural_key:
        if kept[FILE_ORDER].null_count():
            return None
        return kept.head(0).select(FILE, ROW), new.drop(FILE_ORDER), pl.DataFrame(schema=_REPLACED)
    ranked = _rank_new_rows(contract, kept, new)
    if ranked is None:
        return None
    restated, standing, superseded = ranked
    return kept.filter(restated).select(FILE, ROW), standing, superseded


def _rows_changed(before: pl.DataFrame, raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """(rows removed: _file and _row, rows added: whole) that turn a table holding `before`
    (_file, _row, in the table's order) into `raw`, row for row and in order: where `raw` is what
    remains of `before`, in its order, then rows it did not hold (a load that kept the unchanged
    files' rows: `read_source`). Otherwise None, and the table is written whole."""
    key = [FILE, ROW]
    # a row's file and row as one number, the source's few files numbered: looked up rather than
    # joined on the name and row: 0.58 -> 0.30 s for a 1.2M county's 1.7M school rows
    if before.height and before[ROW].max() >= 1 << ROW_BITS or raw.height and raw[ROW].max() >= 1 << ROW_BITS:
        return None
    files = pl.concat([before[FILE], raw[FILE]]).unique()
    place_before, place_raw = (
        frame[FILE].replace_strict(files, pl.int_range(files.len(), eager=True), return_dtype=pl.Int64) * (1 << ROW_BITS) + frame[ROW] for frame in (before, raw)
    )
    held = place_raw.is_in(place_before.implode())
    remaining = int(held.sum())
    if not held.head(remaining).all():
        return None
    still = place_before.is_in(place_raw.implode())
    if not before.filter(still).equals(raw.select(key).head(remaining)):
        return None
    return before.filter(~still), raw.slice(remaining)


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
    try:
        with transaction(con):
            register(con, "_quarantine", result.quarantine)
            register(con, "_files", files)
            register(con, "_superseded", superseded)
            register(con, "_set_aside", result.set_aside)
            register(con, "_expired_keys", result.expired_keys)
            if result.in_place is not None:
                change = result.in_place.removed, result.raw
                if not table_exists(con, contract.raw_table) or con.table(f'"{contract.raw_table}"').columns != result.raw.columns:
                    raise RuntimeError(f"{contract.raw_table}: the table this load kept rows in has changed since it was read")
            else:
                change = _rows_changed(result.held_before, result.raw) if result.held_before is not None and table_exists(con, contract.raw_table) else None
            if change is not None and con.table(f'"{contract.raw_table}"').columns == result.raw.columns:
                # most of a month's rows are last month's: only the rows replaced or past retention
                # go, and the new files' rows are added, rather than the table written again whole
                removed, added = change
                register(con, "_removed", removed)
                register(con, "_added", in_one_piece(added))
                con.execute(f'DELETE FROM "{contract.raw_table}" t USING _removed r WHERE t."{FILE}" = r."{FILE}" AND t."{ROW}" = r."{ROW}"')
                con.execute(f'INSERT INTO "{contract.raw_table}" BY NAME SELECT * FROM _added')
            else:
                register(con, "_raw", in_one_piece(result.raw))
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
            con.execute("DELETE FROM retention_keys WHERE source = ?", [contract.source])
            con.execute("INSERT INTO retention_keys SELECT ?, _file, _row, key_sha256 FROM _expired_keys", [contract.source])
    finally:
        for name in ("_raw", "_quarantine", "_files", "_superseded", "_set_aside", "_expired_keys", "_removed", "_added"):
            con.unregister(name)
