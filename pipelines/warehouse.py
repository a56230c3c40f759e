"""The warehouse: opened (encrypted at rest when a key is configured), tables replaced together
in one transaction, files replaced atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from ingestion.engine import bounded

#: The environment variable holding the warehouse's encryption key (never logged, never stored).
KEY_ENV = "EARLYHELP_WAREHOUSE_KEY"


class WarehouseError(RuntimeError):
    """The warehouse cannot be opened as configured. The message never holds the key."""


@contextmanager
def open_warehouse(path: Path, read_only: bool = False, key: str | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse file. With a key (argument, else $EARLYHELP_WAREHOUSE_KEY)
    the file is DuckDB's encrypted format (AES-GCM). Writing it needs DuckDB's httpfs
    extension, whose OpenSSL does the encryption; without it DuckDB only offers an insecure
    fallback, which earlyhelp refuses to use."""
    key = key if key is not None else os.environ.get(KEY_ENV) or None
    if not key:
        con = bounded(duckdb.connect(str(path), read_only=read_only))
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
            options = "ENCRYPTION_KEY '" + key.replace("'", "''") + "'" + (", READ_ONLY" if read_only else "")
            literal = str(path).replace("'", "''")
            try:
                con.execute(f"ATTACH '{literal}' AS warehouse ({options})")
            except duckdb.Error as exc:
                raise WarehouseError(f"the warehouse {path.name} could not be opened with the configured key ({type(exc).__name__})") from None
            con.execute("USE warehouse")
            bounded(con)
        except BaseException:
            con.close()
            raise
    try:
        yield con
    finally:
        con.close()


def replace_tables(con: duckdb.DuckDBPyConnection, tables: dict[str, pl.DataFrame]) -> None:
    """Replace every named table, or none of them (a crash leaves the previous tables)."""
    con.execute("BEGIN TRANSACTION")
    try:
        for name, frame in tables.items():
            con.register("_incoming", frame)
            con.execute(f'CREATE OR REPLACE TABLE "{name}" AS SELECT * FROM _incoming')
            con.unregister("_incoming")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def read_table(con: duckdb.DuckDBPyConnection, name: str, columns: str = "*") -> pl.DataFrame | None:
    """A table as a frame, or None when it does not exist yet (the first run)."""
    exists = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]).fetchall()[0][0]
    return con.sql(f'SELECT {columns} FROM "{name}"').pl() if exists else None


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


def record_audit(con: duckdb.DuckDBPyConnection, action: str, detail: str, run_id: str = "", by: str | None = None) -> None:
    """Append to `audit_log`: every run and every export (lists, reports, subject access), with
    when, who, which run, and a detail of counts and paths (never a value from a row)."""
    import datetime as dt

    con.execute(
        """CREATE TABLE IF NOT EXISTS audit_log (
               recorded_at TIMESTAMP, action VARCHAR, run_id VARCHAR, run_by VARCHAR, detail VARCHAR)"""
    )
    con.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)",
        [dt.datetime.now().replace(microsecond=0), action, run_id, by or who_ran(), detail],
    )
