"""What DuckDB has freed goes back to the system when earlyhelp says so (`warehouse.return_freed_memory`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a process of its own, so nothing else the tests did is in its memory: a query that holds a
# few hundred MB, then the memory resident after it and after the purge.
SCRIPT = """
import duckdb
from warehouse import bounded, return_freed_memory

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20

con = bounded(duckdb.connect())
before = resident_mib()
con.sql("SELECT count(DISTINCT i::VARCHAR || 'x') FROM range(6000000) t(i)").fetchall()
held = resident_mib()
purged = return_freed_memory()
print(before, held, resident_mib(), purged)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="DuckDB ships jemalloc on Linux only")
def test_memory_duckdb_freed_goes_back_to_the_system_when_asked():
    shown = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    before, held, after = (int(x) for x in shown[:3])
    assert shown[3] == "True"
    assert held - before > 100, "the query should have held memory for this test to mean anything"
    # most of what the query left behind is handed back (here 270-300 of 300 MB)
    assert after - before < (held - before) / 2
