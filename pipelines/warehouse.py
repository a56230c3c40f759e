"""Writing to the warehouse: tables replaced together in one transaction, files replaced atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb
import polars as pl


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
