"""The warehouse catalogue: how DuckDB is opened, the tables earlyhelp keeps, and how they
and the output files are written.

- Connections: every DuckDB connection is memory bounded and spills to disk beyond it
  (`bounded`, `scratch`); the warehouse file is opened through `open_warehouse`
  (encrypted at rest when a key is configured).
- Tables: the ledger tables ingestion and audit append to are declared once here
  (`LEDGER_TABLES`, their DDL generated); `table_exists`, `read_table`; `replace_tables`
  replaces several in one transaction. `linked_rows` is the one join of a source's raw
  rows to the person each row is linked to.
- Files: written beside their target and renamed over it, owner-only (`write_atomically`).

DuckDB's default is to use up to 80% of the machine's memory for its buffers, and every
connection is its own database instance; a run holds a few at once (the warehouse and the
linkage scratch database) beside Polars frames. Each is capped at EARLYHELP_DUCKDB_MEMORY
(default 1536MB), spilling larger intermediate results to a temporary folder, so the run's
peak stays within an ordinary server's memory.
"""

from __future__ import annotations

import ctypes
import datetime as dt
import gc
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import duckdb
import polars as pl

#: The warehouse's file name inside a run's output folder.
WAREHOUSE_FILE = "warehouse.duckdb"
MEMORY_ENV = "EARLYHELP_DUCKDB_MEMORY"
#: A DuckDB database keeps what it has held up to its cap, so the cap is what a run carries from
#: step to step: at 1.2M residents 1GB ran as fast as 3GB (316 and 315 s) and peaked 0.7 GB lower.
#: Since linkage got faster, 1GB is short where DuckDB holds a step's data: at 1.2M residents
#: person_links spilled 1,005 MB of the scratch database (8.4M pairs of profiles compared) and
#: 552 MB of the warehouse to disk, person_records, family_members and indicators 150-240 MB each;
#: at 1536MB 183 and 113 MB in person_links, 18 MB in family_members. A 1.2M cold run 120.9 /
#: 118.8 s at 1GB, 113.5 / 113.9 s at 1536MB, 112.7 / 111.8 s at 2GB, peaking 3,796 / 3,857,
#: 3,919 / 3,830 and 3,964 / 4,031 MiB (the run's peak comes later, in Python, while persons are
#: clustered; 2GB brings DuckDB's to it).
DEFAULT_MEMORY = "1536MB"
#: Files and folders earlyhelp writes are its owner's alone: many name people.
OWNER_ONLY_UMASK = 0o077


def owner_only() -> None:
    """From here on, every file and folder this process creates (the warehouse and its WAL,
    DuckDB's spill files, the Dagster instance, Data Docs, packs, reports, exports) is
    readable by its owner only, whichever library creates it."""
    os.umask(OWNER_ONLY_UMASK)


class UnsafeFolder(RuntimeError):
    """A folder earlyhelp would write personal data to is shared with other users."""


def private_folder(path: Path) -> Path:
    """`path` as a folder only its owner can enter: created 0700, or refused when it exists
    owned by another user or open to others (a shared temporary folder must not hold spills)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise UnsafeFolder(f"{path} belongs to another user: earlyhelp will not spill data there")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def spill_folder() -> Path:
    """Where DuckDB spills intermediate results: the user's runtime folder (XDG_RUNTIME_DIR,
    private by design), else a folder of this user's own in the system's temporary folder."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    return private_folder(base / f"earlyhelp-duckdb-{os.getuid()}")


def memory_limit() -> str:
    """The memory cap of each DuckDB database a run opens ($EARLYHELP_DUCKDB_MEMORY, else DEFAULT_MEMORY)."""
    return os.environ.get(MEMORY_ENV, DEFAULT_MEMORY)


def bounded(con: duckdb.DuckDBPyConnection, spill: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Cap a connection's memory and give it a private folder to spill to; returns it."""
    spill = private_folder(spill) if spill is not None else spill_folder()
    con.execute(f"SET memory_limit = '{memory_limit()}'")
    con.execute(f"SET temp_directory = '{spill.as_posix()}'")
    # memory DuckDB has freed goes back to the system within seconds: without its allocator's
    # background threads an open database (this process's scratch one) kept what its largest
    # query had held, about 900 MB after a query over 3.7M mentions, for the rest of the run
    con.execute("SET allocator_background_threads = true")
    # a long query's progress bar would cut across `earlyhelp`'s own output and the run's log
    con.execute("SET enable_progress_bar = false")
    return con


@contextmanager
def handoff_folder(warehouse: Path) -> Iterator[Path]:
    """A private folder, removed afterwards, for a large table passed as Parquet between two DuckDB
    connections (the warehouse's and the process's scratch database) rather than through Python,
    where it would be held whole, twice while converted. Beside the warehouse, in its own spill
    folder: on its disk, not in a runtime folder that may be memory."""
    spill = private_folder(warehouse.parent / f"{warehouse.name}.tmp")
    # one run holds a warehouse at a time (RunLock): another's folder is a killed run's, left behind
    for stale in spill.glob("handoff-*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=spill, prefix="handoff-") as folder:
        yield Path(folder)


def register(con: duckdb.DuckDBPyConnection, name: str, frame: pl.DataFrame) -> None:
    """`frame` as a view DuckDB can read under `name`, without a copy. Handed a Polars frame,
    DuckDB converts it to Arrow's older layout, copying every text value out of Polars' views:
    a county's 3.7M linked mentions (1.6 GB) cost 880 MB more the moment they were registered,
    each time. Arrow's newest layout is Polars' own, and DuckDB reads its text views as they are
    (the same column types and values either way)."""
    con.register(name, frame.to_arrow(compat_level=pl.CompatLevel.newest()) if isinstance(frame, pl.DataFrame) else frame)


#: Rows in one of DuckDB's row groups. A Parquet file a table is made from is written in row groups
#: of this many rows: Polars' own (262,144) left DuckDB part-filled groups, which the checkpoint at
#: close rewrote (3M rows: 0.6 s at close, against 0.02).
ROW_GROUP_ROWS = 122_880


def in_one_piece(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` as one chunk, to be written as a table. DuckDB writes a frame of several chunks (one
    concatenated from files, say) as part-filled row groups, which the checkpoint when the
    connection closes rewrites: school attendance's 1.66M rows at 1.2M residents cost 1.8 s there,
    and 0.05-0.16 s to put in one piece first."""
    return frame.rechunk() if frame.n_chunks() > 1 else frame


#: jemalloc's index for every arena at once (MALLCTL_ARENAS_ALL).
_ALL_ARENAS = 4096


@cache
def _duckdb_mallctl():
    """DuckDB's own jemalloc's control function, or None where DuckDB has none (macOS, Windows,
    musl) or does not export it."""
    try:
        import _duckdb

        library = ctypes.CDLL(_duckdb.__file__, mode=getattr(os, "RTLD_NOLOAD", 0))
        return library.duckdb_je_mallctl
    except (ImportError, OSError, AttributeError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the system says), for the work
    shared with worker processes: packs, the clusterer's groups."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def started_process(*modules: str) -> ProcessPoolExecutor:
    """A worker process for work shared out of this one (one pool of one process), started now
    and importing `modules` as it starts (`import_for_the_run`: it is the process's entry point),
    so that its start (a fresh interpreter importing Polars and the rest: half a second to two
    and a half) overlaps what this process does meanwhile, rather than delaying the first work
    handed to it. Spawned, not forked: a fork of a process running Polars' and DuckDB's threads
    may copy them mid-lock and hang. So a script that shares work must guard its main
    (`if __name__ == "__main__":`), as with any multiprocessing."""
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=import_for_the_run, initargs=modules)
    pool.submit(int)  # a pool starts its process at its first task
    return pool


def return_freed_memory() -> bool:
    """Hand the memory DuckDB has freed back to the system now, not seconds later. DuckDB's
    allocator (jemalloc, on Linux) keeps freed pages for its next queries and lets them go slowly:
    after person_links made a 1.2M county's profiles and pairs it still held 700 MB it had freed,
    through the clustering that followed in Polars (purging them took 60 ms). jemalloc's
    `arena.<i>.purge` for every arena, through DuckDB's copy of it; where there is none, nothing.
    Returns whether it was purged."""
    mallctl = _duckdb_mallctl()
    return mallctl is not None and mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None, ctypes.c_size_t(0)) == 0


@contextmanager
def without_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector held off while a loop makes millions of small containers
    that form no cycles (the clusterer's clusters, sets and dicts): each full collection walks
    every one of them again, so the collector's time grows with the loop's. Reference counting
    still frees everything at once; the collector runs again after, as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def import_for_the_run(*modules: str) -> None:
    """Import what a run's process keeps to its end (Dagster, Great Expectations, the
    definitions: some 640,000 objects) with the cycle collector held off, collect once, and freeze
    what is left, so that no later collection walks it again. A run's process spent 1.1-1.2 s in
    the collector (at 200,000 residents and at 1.2M alike), nearly all of it walking what the
    imports made; so, 0.46-0.52 s at 200,000, of which 0.3 s is the one collection (without it,
    225,000 objects the imports left behind would be kept to the end). For a process's entry
    point, not for a library call."""
    import importlib

    with without_cycle_collection():
        for module in modules:
            importlib.import_module(module)
        # before the collector is on again: its first collection would walk all of it once more
        gc.collect()
        gc.freeze()


_SCRATCH: dict[int, duckdb.DuckDBPyConnection] = {}


def scratch() -> duckdb.DuckDBPyConnection:
    """A connection to this process's in-memory DuckDB for intermediate work, memory bounded.
    Each is a connection of its own (its registrations and temp tables go when it is closed) to
    one database opened once: opening a database costs 25 ms, and ingestion asks for one per
    landing file (250 monthly files a county)."""
    database = _SCRATCH.get(os.getpid())  # a forked process opens its own
    if database is None:
        database = _SCRATCH[os.getpid()] = bounded(duckdb.connect())
    return database.cursor()


# ----------------------------------------------------------------- tables

_DUCKDB_TYPES = {pl.String: "VARCHAR", pl.Int64: "BIGINT", pl.Float64: "DOUBLE", pl.Date: "DATE", pl.Boolean: "BOOLEAN"}


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMP"
    if isinstance(dtype, pl.List):
        return _duckdb_type(dtype.inner) + "[]"
    return _DUCKDB_TYPES[dtype.base_type() if hasattr(dtype, "base_type") else dtype]


@dataclass(frozen=True)
class Table:
    """A table whose rows are appended run after run, so its schema is declared rather than
    taken from a frame."""

    name: str
    schema: dict[str, pl.DataType]
    description: str

    def ddl(self) -> str:
        columns = ", ".join(f'"{c}" {_duckdb_type(t)}' for c, t in self.schema.items())
        return f'CREATE TABLE IF NOT EXISTS "{self.name}" ({columns})'

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)


LANDED_FILES = Table("landed_files", {
    "source": pl.String, "file": pl.String, "sha256": pl.String, "status": pl.String,
    "received": pl.Int64, "loaded": pl.Int64, "quarantined": pl.Int64, "superseded": pl.Int64,
    "duplicate_of": pl.String, "message": pl.String, "ignored_columns": pl.List(pl.String),
    "missing_optional_columns": pl.List(pl.String), "ingested_at": pl.Datetime("us"), "expired": pl.Int64, "set_aside": pl.Int64,
    "quarantine_expired": pl.Int64, "saved_by": pl.String, "saved_at": pl.Datetime("us"),
    "contract_sha256": pl.String, "validated_on": pl.Date, "latest_retention_date": pl.Date,
}, "every landing file received: its outcome and its row counts (received = loaded + quarantined), the fields set aside in rows "
   "that loaded, who last saved it and when where the file records that (a returned XLSX pack: who recorded the decisions), "
   "the contract and day it was checked under (a monthly run reads again only what is new), and the latest date retention "
   "counts from among the rows it loaded (its quarantined records whose date cannot be read are kept no longer)")
RETENTION_LOG = Table("retention_log", {
    "removed_at": pl.Datetime("us"), "source": pl.String, "retention_years": pl.Float64, "cutoff": pl.Date, "rows_removed": pl.Int64,
}, "rows removed under retention, counts only: for a source, every row of its landing files past its contract's retention on "
   "that run's day (the warehouse holds none of them; not only those past it since the last run, so counts of runs are not to "
   "be added up); for a derived table, the rows that run deleted")
QUARANTINE = Table("quarantine", {
    "source": pl.String, "_file": pl.String, "_sha256": pl.String, "_row": pl.Int64, "column": pl.String, "reason": pl.String, "record": pl.String,
}, "rows refused, with the file, row, partner column and reason (the record kept for the partner's correction)")
SET_ASIDE_FIELDS = Table("set_aside_fields", {
    "source": pl.String, "_file": pl.String, "_sha256": pl.String, "_row": pl.Int64, "field": pl.String, "column": pl.String, "reason": pl.String, "value": pl.String,
}, "fields left empty in rows that loaded, because their value broke its rule: file, row, partner column, reason and the text as sent (for the partner's correction)")
SUPERSEDED_ROWS = Table("superseded_rows", {
    "source": pl.String, "_file": pl.String, "_row": pl.Int64, "replaced_by_file": pl.String, "replaced_by_row": pl.Int64,
}, "rows replaced by a later row with the same natural key")
EXPIRED_KEYS = Table("retention_keys", {
    "source": pl.String, "_file": pl.String, "_row": pl.Int64, "key_sha256": pl.String,
}, "for each row removed under retention: its file, row and the SHA-256 digest of its natural key (no field of the row), so that "
   "a monthly run reading only new files counts a row a partner sends again as replaced, as a reading of every file would")
AUDIT_LOG = Table("audit_log", {
    "recorded_at": pl.Datetime("us"), "action": pl.String, "run_id": pl.String, "run_by": pl.String, "detail": pl.String,
}, "every run and every export: when, who, which run, counts and paths (never a value from a row)")
#: The tables appended to run after run.
LEDGER_TABLES = (LANDED_FILES, RETENTION_LOG, QUARANTINE, SET_ASIDE_FIELDS, SUPERSEDED_ROWS, EXPIRED_KEYS, AUDIT_LOG)


def ensure_tables(con: duckdb.DuckDBPyConnection, *tables: Table) -> None:
    """Create the tables if missing, and add any column a warehouse of an earlier version lacks."""
    # what the warehouse holds, looked up once: a statement for every table and column (the ledger's
    # 7 tables and 60 columns, twice a source) took 0.6 s of each run, whatever the county's size
    if not tables:
        return
    columns = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = current_schema() AND table_name IN "
        f"({', '.join('?' for _ in tables)})", [t.name for t in tables],
    ).fetchall()
    held: dict[str, set[str]] = {}
    for name, column in columns:
        held.setdefault(name, set()).add(column)
    for table in tables:
        if table.name not in held:
            con.execute(table.ddl())
            continue
        for column, dtype in table.schema.items():
            if column not in held[table.name]:
                con.execute(f'ALTER TABLE "{table.name}" ADD COLUMN "{column}" {_duckdb_type(dtype)}')


def table_exists(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0] > 0


def table_columns(con: duckdb.DuckDBPyConnection, name: str) -> set[str]:
    """The columns the table `name` holds (none where there is no such table)."""
    return {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?", [name]).fetchall()}


#: A mention (`pr`, person_records) and its link to a person (`pl`, person_links) by the
#: mention's key, which is always right; `linkage.person_records.mention_join` gives the faster
#: join on record_position where that is right too.
MENTION_KEY_JOIN = "pl.record_key = pr.record_key"


def _mention_to_person(on: str = MENTION_KEY_JOIN, links: str = "person_links") -> str:
    """SQL: every mention (`pr`, person_records) with the person it is linked to (`pl.person_id`);
    `links`: person_links or a query of some of its rows (the mentions of those persons alone)."""
    return f"person_records pr JOIN {links} pl ON {on}"


def linked_mentions(columns: str = "pr.*, pl.person_id", on: str = MENTION_KEY_JOIN, links: str = "person_links") -> str:
    """SQL: every mention with the person it is linked to (`on`: the join's condition), or the
    mentions of the persons `links` holds (a query of person_links' rows)."""
    return f"SELECT {columns} FROM {_mention_to_person(on, links)}"


def linked_rows(source: str, columns: str = "r.*", mentions: str | None = None) -> str:
    """SQL: a source's raw rows (`r`) with their mention (`pr`) and the person each is linked
    to (`pl.person_id`): the one path from a partner's row to a person. `mentions`: a table made
    ahead from `linked_mentions` (its source, file and row at least), read instead as `m`, when
    many reads share one join of person_records to person_links (the indicators: at 1.2M
    residents that join was most of each indicator's time)."""
    def row_of(mention: str) -> str:
        return f"{mention}.source = '{source}' AND {mention}.file = r._file AND {mention}.row = r._row"

    if mentions is not None:
        return f'SELECT {columns} FROM "raw_{source}" r JOIN "{mentions}" m ON {row_of("m")}'
    return f'SELECT {columns} FROM "raw_{source}" r JOIN ({_mention_to_person()}) ON {row_of("pr")}'


#: The environment variable holding the warehouse's encryption key (never logged, never stored).
KEY_ENV = "EARLYHELP_WAREHOUSE_KEY"


class WarehouseError(RuntimeError):
    """The warehouse cannot be opened as configured. The message never holds the key."""


def sql_literal(text: str) -> str:
    """A value as an SQL string literal, for the few statements that cannot take a parameter
    (ATTACH, a view, a list of files DuckDB must stream past)."""
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def open_warehouse(path: Path, read_only: bool = False, key: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file. With a key (argument, else $EARLYHELP_WAREHOUSE_KEY)
    the file is DuckDB's encrypted format (AES-GCM). Writing it needs DuckDB's httpfs
    extension, whose OpenSSL does the encryption; without it DuckDB only offers an insecure
    fallback, which earlyhelp refuses to use."""
    con = _connect(path, read_only, key)
    try:
        yield con
    finally:
        con.close()
        # the next step in this process, most likely Polars', cannot use what DuckDB kept
        return_freed_memory()


def _key(key: str | None) -> str | None:
    """The warehouse's key: the one given, else $EARLYHELP_WAREHOUSE_KEY; None for none."""
    return key if key is not None else os.environ.get(KEY_ENV) or None


def _connect(path: Path, read_only: bool, key: str | None) -> duckdb.DuckDBPyConnection:
    """The warehouse opened as `open_warehouse` says: bounded, encrypted with a key, its files the
    owner's alone."""
    key = _key(key)
    # beside the warehouse, as DuckDB names it, but private: spills hold the warehouse's rows
    spill = path.parent / f"{path.name}.tmp"
    if not key:
        con = bounded(duckdb.connect(str(path), read_only=read_only), spill)
    else:
        con = duckdb.connect()
        try:
            if not read_only:
                try:
                    con.execute("LOAD httpfs")
                except duckdb.Error:
                    raise WarehouseError(
                        "an encrypted warehouse is written with DuckDB's httpfs extension (OpenSSL), which is not "
                        "installed: run `INSTALL httpfs` once on this server (with access to extensions.duckdb.org, "
                        "or from a downloaded copy), or unset " + KEY_ENV
                    ) from None
            options = "ENCRYPTION_KEY " + sql_literal(key) + (", READ_ONLY" if read_only else "")
            try:
                con.execute(f"ATTACH {sql_literal(str(path))} AS warehouse ({options})")
            except duckdb.Error as exc:
                raise WarehouseError(f"the warehouse {path.name} could not be opened with the configured key ({type(exc).__name__})") from None
            con.execute("USE warehouse")
            bounded(con, spill)
        except BaseException:
            con.close()
            raise
    # a warehouse written by an earlier version, or copied in, is made its owner's alone
    for written in (path, path.parent / f"{path.name}.wal"):
        if written.exists() and written.stat().st_mode & 0o077 and not read_only:
            os.chmod(written, 0o600)
    return con


class HeldWarehouse:
    """The warehouse kept open for a whole run, each step given a connection of its own to it
    (`connection`, a DuckDB cursor: its temporary tables and registered frames its own) rather
    than opening the file and closing it again. Opening a 1.2M county's warehouse took 20-25 ms
    and closing it a checkpoint, 60 times a run. Between steps (no connection open) the changes
    are checkpointed into the file, as closing it did, and the table blocks DuckDB read are let
    go, so the next step has the memory it had before (`_between_steps`). Held read-write: a
    step that only reads asks for no more than it did, but DuckDB opens one file one way in a
    process. Another process cannot open the file while it is held, as it could not while a step
    had it open; a run holds its output folder (`RunLock`) anyway."""

    def __init__(self, path: Path, key: str | None = None):
        self.path = path
        self._key = _key(key)
        self._con: duckdb.DuckDBPyConnection | None = _connect(path, False, self._key)
        self._open = 0

    @contextmanager
    def connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._con is None:
            raise RuntimeError(f"the warehouse {self.path.name} is no longer held: the run it was held for has ended")
        con = self._con.cursor()
        self._open += 1
        try:
            # a cursor is a connection of its own: these are the connection's, not the database's
            if self._key:
                con.execute("USE warehouse")
            con.execute("SET enable_progress_bar = false")
            yield con
        finally:
            con.close()
            self._open -= 1
            if not self._open:
                self._between_steps()
            return_freed_memory()

    def _between_steps(self) -> None:
        """What closing the file did, less the opening after: the step's changes are folded into
        the file (a checkpoint: without it, at 1.2M residents, the steps after person_links read
        tables whose changes were still in the log, and a cold run took 99.5-113.5 s against
        101.1-102.1 s with it), and the table blocks DuckDB read are let go
        (`_let_go_of_read_blocks`)."""
        self._con.execute("CHECKPOINT")
        self._let_go_of_read_blocks()

    def _let_go_of_read_blocks(self) -> None:
        """DuckDB keeps the table blocks it has read, up to its memory cap, for as long as the
        database is open: briefly capped low, it lets go of those no query holds (they are in
        the file), as closing the file did."""
        try:
            self._con.execute("SET memory_limit = '1MB'")
        except duckdb.Error:
            pass  # something it cannot let go of is still held: it keeps that
        finally:
            self._con.execute(f"SET memory_limit = '{memory_limit()}'")

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            return_freed_memory()


# ----------------------------------------------------------------- one run at a time

#: How long a run waits for the run that holds the warehouse before it refuses to start.
WAIT_ENV = "EARLYHELP_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 600.0
LOCK_FILE = ".run.lock"


class WarehouseBusy(RuntimeError):
    """Another run holds the warehouse; the message names it."""


#: The run id of a look at whether the warehouse is free (`earlyhelp run` before it starts its
#: run): it leaves the file as it found it.
PROBE = "(probe)"


class RunLock:
    """The warehouse's folder held by one run: an OS lock on `<out>/.run.lock` holding that
    run's id, released when the run ends, or by the OS when its process dies.

    A run that ends empties the file as it lets go; one whose process was killed (or whose
    machine went down) leaves its id there, which the next run to hold the folder finds
    (`left_by`): that run ended without finishing, and without its audit entry."""

    def __init__(self, folder: Path, run_id: str, wait_seconds: float | None = None):
        self.path = folder / LOCK_FILE
        self.run_id = run_id
        self.wait_seconds = float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)) if wait_seconds is None else wait_seconds
        self._fd: int | None = None
        self.left_by: str | None = None

    def acquire(self) -> RunLock:
        import fcntl
        import time

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 200, 0).decode("ascii", "replace").strip() or "another run"
                    os.close(fd)
                    raise WarehouseBusy(
                        f"the warehouse in {self.path.parent} is held by run {holder}; this run waited "
                        f"{self.wait_seconds:.0f} s ({WAIT_ENV}) and did not start. Nothing was written."
                    ) from None
                time.sleep(0.5)
        left = os.pread(fd, 200, 0).decode("ascii", "replace").strip()
        self.left_by = left if left and left not in (PROBE, self.run_id) else None
        if self.run_id != PROBE:
            os.ftruncate(fd, 0)
            os.pwrite(fd, self.run_id.encode("ascii", "replace"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            if self.run_id != PROBE:
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Every statement inside, or none of them: a crash leaves the tables as they were."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def replace_tables(
    con: duckdb.DuckDBPyConnection, tables: dict[str, pl.DataFrame | Path], also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
) -> None:
    """Replace every named table, or none of them (a crash leaves the previous tables). A table
    may be given as a Parquet file (`handoff_folder`), which DuckDB reads as it writes. `also`:
    what else to write in the same transaction (a table updated rather than replaced)."""
    with transaction(con):
        if also is not None:
            also(con)
        for name, frame in tables.items():
            if isinstance(frame, Path):
                con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM read_parquet({sql_literal(str(frame))})')
                continue
            register(con, "_incoming", in_one_piece(frame))
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
            con.unregister("_incoming")


def read_table(con: duckdb.DuckDBPyConnection, name: str, columns: str = "*", lazy: bool = False) -> pl.DataFrame | pl.LazyFrame | None:
    """A table as a frame, or None when it does not exist yet (the first run). `lazy`: read from
    `con` when collected, so the caller holds it only while it is used."""
    if not table_exists(con, name):
        return None
    query = f'SELECT {columns} FROM "{name}"'
    if not lazy:
        return con.sql(query).pl()
    # a read deferred to when it is collected, rather than DuckDB's lazy scan (`pl(lazy=True)`),
    # which imports pandas: 0.25-0.3 s of a month's family_members at 1.2M residents, for a
    # library the run's process otherwise never loads
    return pl.defer(lambda: con.sql(query).pl(), schema=con.sql(query).limit(0).pl().schema)


def write_atomically(path: Path, write) -> None:
    """Call write(tmp_path) beside the target, then rename over it, so readers never see
    half a file. Outputs are readable by their owner only: many name people."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_parquet_atomically(frame: pl.DataFrame, path: Path) -> None:
    write_atomically(path, frame.write_parquet)


def write_text_atomically(text: str, path: Path) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def who_ran() -> str:
    """The account running earlyhelp, for audit records."""
    import getpass

    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (some containers)
        return f"uid {os.getuid()}"


RUN_ACTIONS = ("run succeeded", "run failed")


def record_run(con: duckdb.DuckDBPyConnection, run_id: str, succeeded: bool, detail: str, by: str) -> bool:
    """The audit entry of one finished run, written once however many report it (the CLI and the
    run-status sensors both may): returns whether this call wrote it."""
    con.execute(AUDIT_LOG.ddl())
    already = con.execute(
        f"SELECT count(*) FROM audit_log WHERE run_id = ? AND action IN {RUN_ACTIONS}", [run_id]
    ).fetchall()[0][0]
    if already:
        return False
    record_audit(con, RUN_ACTIONS[0] if succeeded else RUN_ACTIONS[1], detail, run_id, by)
    return True


def record_audit(con: duckdb.DuckDBPyConnection, action: str, detail: str, run_id: str = "", by: str | None = None) -> None:
    """Append to `audit_log`: every run and every export (lists, reports, subject access), with
    when, who, which run, and a detail of counts and paths (never a value from a row)."""
    con.execute(AUDIT_LOG.ddl())
    con.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)",
        [dt.datetime.now().replace(microsecond=0), action, run_id, by or who_ran(), detail],
    )
