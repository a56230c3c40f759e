"""Memory a run's process lets go of, or keeps: what DuckDB has freed goes back to the system when
earlyhelp says so (`warehouse.return_freed_memory`); what a run imports is frozen without its
garbage (`warehouse.import_for_the_run`); what Polars frees in a run is kept for seconds, to be
taken again (`pipelines.POLARS_ALLOCATOR`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# In a process of its own, so nothing else the tests did is in its memory: a query that holds a
# few hundred MB, then the memory resident after it and after the purge. The allocator's
# background threads, which hand freed memory back within about a second anyway, are off, so
# that only the purge can; and the memory is read half a second after the query, once DuckDB's
# worker threads have freed what they held (on CI, a purge straight after the query once left
# 268 of 303 MB resident, most likely not yet freed: it never happened here, loaded or not).
SCRIPT = """
import time
import duckdb
from warehouse import bounded, return_freed_memory

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20

con = bounded(duckdb.connect())
con.execute("SET allocator_background_threads = false")
before = resident_mib()
con.sql("SELECT count(DISTINCT i::VARCHAR || 'x') FROM range(6000000) t(i)").fetchall()
time.sleep(0.5)
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


# A run's entry point imports what it keeps with the cycle collector held off, collects once and
# freezes the rest (`warehouse.import_for_the_run`); in a process of its own, since freezing is for
# the whole process. A module whose import leaves a cycle behind shows that the garbage is
# collected, not frozen with what lives on.
IMPORT_SCRIPT = """
import gc, sys, types, weakref
from warehouse import import_for_the_run

class Leftover:
    pass

left = []
def make_module():
    module = types.ModuleType("made_for_the_test")
    cycle = Leftover(); cycle.me = cycle
    left.append(weakref.ref(cycle))
    return module

class Finder:
    def find_spec(self, name, path=None, target=None):
        if name != "made_for_the_test":
            return None
        import importlib.util
        class Loader:
            def create_module(self, spec): return make_module()
            def exec_module(self, module): pass
        return importlib.util.spec_from_loader(name, Loader())

sys.meta_path.insert(0, Finder())
gc.enable()
import_for_the_run("made_for_the_test", "json")
print(gc.isenabled(), "made_for_the_test" in sys.modules and "json" in sys.modules, left[0]() is None,
      gc.get_freeze_count() > 0)
"""


def test_a_run_imports_what_it_keeps_once_and_freezes_it_without_the_garbage():
    shown = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    enabled, imported, garbage_gone, frozen = shown
    assert enabled == "True", "the collector runs again after the imports"
    assert imported == "True"
    assert garbage_gone == "True", "a cycle the imports left is collected, not frozen"
    assert frozen == "True", "what the imports made is frozen, so later collections do not walk it"


# Polars' allocator in a process started as a run's are (`pipelines` imported before Polars):
# what a step freed is kept for seconds, to be taken again without a page fault, rather than
# handed back within about one as Polars' own settings do (`pipelines.POLARS_ALLOCATOR`). Blocks
# of 4 MB, below the 8 MB from which jemalloc gives a block an arena of its own. With Polars imported
# first the memory goes back, so the test tells the two apart; a run started by a process that
# imported Polars (whose settings it then finds set) keeps it too; and a council that asks for
# Polars' own settings (`EARLYHELP_POLARS_ALLOCATOR`) gets them.
POLARS_SCRIPT = """
import os, sys, time
if sys.argv[1] == "run":
    import pipelines
import polars as pl

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20

before = resident_mib()
held = [pl.int_range(0, 500_000, eager=True) + i for i in range(100)]
full = resident_mib()
del held
time.sleep(2.5)
print(before, full, resident_mib())
"""
POLARS_OWN = "dirty_decay_ms:500,muzzy_decay_ms:1000"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Polars ships jemalloc on Linux")
def test_memory_a_runs_polars_keeps_what_it_freed_for_seconds():
    clean = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "EARLYHELP_POLARS_ALLOCATOR")}

    def kept(order: str, **environment: str) -> bool:
        shown = subprocess.run([sys.executable, "-c", POLARS_SCRIPT, order], cwd=ROOT, env={**clean, **environment}, capture_output=True, text=True, check=True).stdout
        before, full, after = (int(x) for x in shown.split())
        assert full - before > 300, "the blocks should have been held for this test to mean anything"
        return after - before > (full - before) / 2

    assert not kept("polars first"), "Polars' own settings hand freed memory back within about a second"
    assert kept("run"), "a run's Polars keeps what it freed for seconds"
    assert kept("run", _RJEM_MALLOC_CONF=POLARS_OWN), "so does a run started by a process that imported Polars"
    assert not kept("run", EARLYHELP_POLARS_ALLOCATOR=POLARS_OWN), "a council asking for Polars' own settings gets them"


# In a process of its own, whose imports are a run's (`pipelines.definitions`): a table read lazily
# (`warehouse.read_table`) is read when collected, as it then is, and loads no library the run
# does not otherwise load (DuckDB's own lazy scan imports pandas: 0.25-0.3 s of a month).
LAZY_SCRIPT = """
import sys
import duckdb
import pipelines.definitions
from warehouse import read_table

con = duckdb.connect()
con.execute("CREATE TABLE ids AS SELECT 'P' || lpad(i::VARCHAR, 8, '0') AS person_id, i % 7 AS n FROM range(1000) t(i)")
lazy = read_table(con, "ids", "person_id, n AS id", lazy=True)
con.execute("UPDATE ids SET n = n + 1")
collected = lazy.collect()
print("pandas" in sys.modules, collected.columns == ["person_id", "id"], collected.equals(read_table(con, "ids", "person_id, n AS id")), collected["id"].min())
"""


def test_a_table_read_lazily_is_read_when_collected_and_imports_nothing_a_run_does_not():
    shown = subprocess.run([sys.executable, "-c", LAZY_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert shown == ["False", "True", "True", "1"], shown
