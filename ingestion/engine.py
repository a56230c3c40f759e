"""DuckDB connections as earlyhelp opens them: memory bounded, spilling to disk beyond it.

DuckDB's default is to use up to 80% of the machine's memory for its buffers, and every
connection is its own database instance; a run holds a few at once (the warehouse and the
linkage scratch database) beside Polars frames. Each is capped at EARLYHELP_DUCKDB_MEMORY
(default 3GB), spilling larger intermediate results to a temporary folder, so the run's
peak stays within an ordinary server's memory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import duckdb

MEMORY_ENV = "EARLYHELP_DUCKDB_MEMORY"
DEFAULT_MEMORY = "3GB"


def bounded(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Cap a connection's memory and give it a folder to spill to; returns it."""
    spill = Path(tempfile.gettempdir()) / "earlyhelp-duckdb"
    spill.mkdir(exist_ok=True)
    con.execute(f"SET memory_limit = '{os.environ.get(MEMORY_ENV, DEFAULT_MEMORY)}'")
    con.execute(f"SET temp_directory = '{spill.as_posix()}'")
    return con


def scratch() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for intermediate work, memory bounded."""
    return bounded(duckdb.connect())
