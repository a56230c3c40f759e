"""The contract suites see what ingestion loaded: Great Expectations validates an Arrow-backed
frame, and observes and fails exactly as it would on the plain pandas copy it was once given."""

from __future__ import annotations

import datetime as dt
import gc
import json
import re
import weakref
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data_contracts import load_contracts
from expectations import ContractValidator, frame_for_validation
from ingestion.load import read_source


def test_the_suites_observe_and_fail_alike_on_the_arrow_frame_and_the_pandas_copy(examples, tmp_path):
    contract = load_contracts()["school_attendance"]
    loaded = read_source(contract, examples, today=dt.date(2026, 11, 23)).raw
    assert loaded.height
    # what ingestion never lets through, put in by hand: a required field blank, a column the contract lacks
    broken = loaded.with_columns(pl.lit(None, dtype=pl.String).alias("surname"), pl.lit("x").alias("not_in_contract"))
    con = duckdb.connect()
    con.register("broken_view", broken)
    con.execute("CREATE TABLE broken AS SELECT * FROM broken_view")
    validator = ContractValidator(tmp_path / "gx")
    arrow = validator.validate(contract, frame_for_validation(con.sql("SELECT * FROM broken")))
    plain = validator.validate(contract, con.sql("SELECT * FROM broken").df())
    assert not arrow.success and arrow.failed == plain.failed
    assert {"expect_table_columns_to_match_set", "expect_column_values_to_not_be_null on surname"} <= set(arrow.failed)
    assert [(o["expectation"], o["column"], o["passed"], o["observed"]) for o in arrow.observed] == [
        (o["expectation"], o["column"], o["passed"], o["observed"]) for o in plain.observed
    ]


@pytest.fixture
def school(examples):
    """The spec's school attendance example as loaded: its contract, and a fresh frame of it each call."""
    contract = load_contracts()["school_attendance"]
    con = duckdb.connect()
    con.register("loaded", read_source(contract, examples, today=dt.date(2026, 11, 23)).raw)
    yield contract, lambda: frame_for_validation(con.sql("SELECT * FROM loaded"))
    con.close()


def test_a_validated_table_is_not_kept_once_its_suite_has_run(school, tmp_path):
    # the validator lives as long as the run's process: a frame it kept would be carried through
    # every step after the suites (a county's raw tables, 1.4 GB at 1.2M residents)
    contract, frame = school
    validator = ContractValidator(tmp_path / "gx")
    given = frame()
    validated = weakref.ref(given)
    assert validator.validate(contract, given).evaluated
    del given
    gc.collect()
    assert validated() is None
    # and the next suite on the same validator still runs
    assert validator.validate(contract, frame()).evaluated


def test_data_docs_templates_are_compiled_once_a_process(school, tmp_path, monkeypatch):
    # Great Expectations makes a Jinja environment per view of every page: without the shared
    # bytecode cache, each validation's page compiled its templates again (most of a page's time)
    import jinja2

    contract, frame = school
    first = ContractValidator(tmp_path / "first").validate(contract, frame())
    compiled = []
    made = jinja2.Environment.compile

    def compile(environment, source, name=None, filename=None, *args, **kwargs):
        if name is not None:  # a template from a file; strings made on the fly are not cached by Jinja
            compiled.append(name)
        return made(environment, source, name, filename, *args, **kwargs)

    monkeypatch.setattr(jinja2.Environment, "compile", compile)
    second = ContractValidator(tmp_path / "second").validate(contract, frame())
    assert compiled == [], compiled
    assert second.page and first.page and second.observed == first.observed
    # the page is Great Expectations' whole page: the first's but for its run's stamps
    stamps = re.compile(r"\d{8}T\d{6}\.\d+Z|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ|dataContextId=[0-9a-f-]+")
    pages = [stamps.sub("", (tmp_path / name / result.page).read_text()) for name, result in (("first", first), ("second", second))]
    assert pages[0] == pages[1] and "school_attendance_contract" in pages[1] and len(pages[1]) > 10_000


def test_great_expectations_does_not_read_a_config_variables_file_at_every_setting(school, tmp_path, monkeypatch):
    # its file-backed context read and parsed uncommitted/config_variables.yml at every read of a
    # setting (593 times for ten suites); the project names none, so there is nothing to read
    from great_expectations.core.config_provider import _ConfigurationVariablesConfigurationProvider

    contract, frame = school
    validator = ContractValidator(tmp_path / "gx")
    reads = []
    made = _ConfigurationVariablesConfigurationProvider.get_values
    monkeypatch.setattr(_ConfigurationVariablesConfigurationProvider, "get_values", lambda provider: reads.append(1) or made(provider))
    assert validator.validate(contract, frame()).evaluated
    again = ContractValidator(tmp_path / "gx")  # a later run's, on the project the first made
    assert again.validate(contract, frame()).success is not None
    assert reads == []


def test_a_suite_the_project_holds_is_not_written_once_an_expectation(school, tmp_path, monkeypatch):
    # a suite built by adding its expectations one by one, under a name the project already held
    # (every month's run), wrote the stored suite at each addition
    from great_expectations.data_context.store.expectations_store import ExpectationsStore

    contract, frame = school
    first = ContractValidator(tmp_path / "gx").validate(contract, frame())
    added = []
    made = ExpectationsStore.add_expectation
    monkeypatch.setattr(ExpectationsStore, "add_expectation", lambda store, *args, **kwargs: added.append(1) or made(store, *args, **kwargs))
    again = ContractValidator(tmp_path / "gx").validate(contract, frame())
    assert added == []
    assert again.evaluated == first.evaluated > 3 and again.observed == first.observed


def test_great_expectations_keeps_a_suites_latest_results_and_their_pages(school, tmp_path):
    # building a page, it walks every result and every page it holds: a project that only grew
    # made every month's suites slower than the last
    from expectations import RESULTS_KEPT

    contract, frame = school
    validator = ContractValidator(tmp_path / "gx")
    for _ in range(RESULTS_KEPT + 2):
        latest = validator.validate(contract, frame())
    gx = tmp_path / "gx" / "gx" / "uncommitted"
    results = sorted(gx.glob("validations/school_attendance_contract/*/*/*.json"))
    assert len(results) == RESULTS_KEPT
    pages = sorted(gx.glob("data_docs/local_site/validations/school_attendance_contract/*/*/*.html"))
    assert len(pages) == RESULTS_KEPT and [p.parent.name for p in pages] == [r.parent.name for r in results]
    # the one kept last is the latest run's, whose page the offline index links to
    assert results[-1].parent.name == Path(latest.page).parent.name


def test_a_suite_run_in_its_own_process_gives_what_it_gives_here_and_leaves_no_table_in_memory(examples, tmp_path, monkeypatch):
    # `earlyhelp run` validates in a process of its own, which imports Great Expectations while the
    # run starts; the table goes there through shared memory, which must not outlive the suite
    from multiprocessing.shared_memory import SharedMemory

    from expectations import table_for_validation, worker

    contract = load_contracts()["school_attendance"]
    loaded = read_source(contract, examples, today=dt.date(2026, 11, 23)).raw
    con = duckdb.connect()
    for name, frame in (("loaded", loaded), ("broken", loaded.with_columns(pl.lit(None, dtype=pl.String).alias("surname")))):
        con.register(f"{name}_view", frame)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM {name}_view")
    names = []
    written = worker._in_shared_memory

    def recorded(table):
        with written(table) as (name, size):
            names.append(name)
            where = Path("/dev/shm") / name.lstrip("/")
            if where.exists():  # Linux: its owner's alone, as every file a run writes
                assert where.stat().st_mode & 0o777 == 0o600
            yield name, size

    monkeypatch.setattr(worker, "_in_shared_memory", contextmanager(recorded))
    here = ContractValidator(tmp_path / "here")
    apart = worker.SuiteProcess()
    try:
        for table in ("loaded", "broken"):
            mine = here.validate(contract, frame_for_validation(con.sql(f"SELECT * FROM {table}")), "inputs")
            theirs = apart.submit(tmp_path / "apart", contract, table_for_validation(con.sql(f"SELECT * FROM {table}")), "inputs").result()
            stamped = ("validated_at", "data_docs", "page")
            assert {k: v for k, v in asdict(theirs).items() if k not in stamped} == {k: v for k, v in asdict(mine).items() if k not in stamped}
            assert (tmp_path / "apart" / theirs.page).is_file()  # its page, written there
        assert mine.success is False and theirs.failed == ["expect_column_values_to_not_be_null on surname"]
    finally:
        apart.close()
    assert len(names) == 2
    for name in names:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name)


def test_the_suite_process_started_for_a_run_ends_once_its_suites_are_done(monkeypatch):
    from expectations import worker

    monkeypatch.setattr(worker, "_PROCESS", [])  # this test's own, whatever earlier tests started
    started = worker.start_suite_process(for_one_run=True)
    assert worker.start_suite_process() is started  # one a process
    processes = list(started._pool._processes.values())
    assert processes
    worker.suites_done()
    assert not worker._PROCESS and not any(p.is_alive() for p in processes)
    kept = worker.start_suite_process()  # not for one run (a test's, the daemon's): kept for the next
    try:
        worker.suites_done()
        assert worker._PROCESS == [kept]
    finally:
        kept.close()


def test_a_run_validates_only_the_files_its_last_passing_result_does_not_speak_for():
    """A file's rows validated once under the same suite and contract are not validated again;
    anything that could change what they give (another suite, a failure) validates the whole table."""
    from expectations import SuiteResult, files_to_validate

    passed = SuiteResult("school_attendance", True, 5, inputs="suite 1", files={"a.csv": "1", "b.csv": "2"})
    assert files_to_validate(None, "suite 1", {"a.csv": "1"}) is None
    assert files_to_validate(passed, "suite 2", {"a.csv": "1", "b.csv": "2"}) is None
    assert files_to_validate(SuiteResult("school_attendance", False, 5, inputs="suite 1", files=passed.files), "suite 1", passed.files) is None
    assert files_to_validate(passed, "suite 1", {"a.csv": "1", "b.csv": "2"}) == {}
    # a row removed (a later file replaced it, or retention) leaves the others validated
    assert files_to_validate(passed, "suite 1", {"b.csv": "2"}) == {}
    # a new file, and a file of the same name with other bytes
    assert files_to_validate(passed, "suite 1", {"a.csv": "1", "b.csv": "9", "c.csv": "3"}) == {"b.csv": "9", "c.csv": "3"}
    # a table emptied since: its row count is then what the suite must see; still empty: as before
    assert files_to_validate(passed, "suite 1", {}) is None
    assert files_to_validate(SuiteResult("meeting_outcomes", True, 2, inputs="suite 1"), "suite 1", {}) == {}


def test_suites_set_going_as_their_tables_are_written_give_the_checks_what_validating_there_gives(village, tmp_path, monkeypatch):
    """A run whose suite process was started for it (`earlyhelp run`) hands each source's table
    over as soon as the table is written, so the suites run while the next sources load: the
    checks take those results, the same as validating in the checks, and no table is left in memory."""
    from multiprocessing.shared_memory import SharedMemory

    from expectations import worker
    from pipelines.cli import run_pipeline
    from tests.conftest import MONTH

    class Started(dict):
        sources: list[str] = []

        def __setitem__(self, key, value):
            self.sources.append(key[1])
            super().__setitem__(key, value)

    names = []
    written = worker._in_shared_memory

    def recorded(table):
        with written(table) as (name, size):
            names.append(name)
            yield name, size

    monkeypatch.setattr(worker, "_in_shared_memory", contextmanager(recorded))
    monkeypatch.setattr(worker, "_STARTED", Started())
    results, checks = {}, {}
    for way in ("set going", "in the checks", "large tables in the checks"):
        monkeypatch.setattr(worker, "_PROCESS", [])
        monkeypatch.setattr(worker, "SET_GOING_ROWS", 2_000 if way.startswith("large") else 500_000)
        worker._STARTED.sources.clear()
        if way != "in the checks":
            worker.start_suite_process(for_one_run=True)
        out = tmp_path / way.replace(" ", "_")
        result = run_pipeline(village, MONTH, out)
        assert result.success
        evaluations = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        checks[way] = {
            c.asset_key.path[-1]: (c.passed, *(c.metadata[k].value for k in ("expectations", "validated_this_run", "files_validated_this_run", "rows_validated_this_run")))
            for c in evaluations if c.check_name == "meets_contract"
        }
        stamped = ("validated_at", "data_docs", "page")
        results[way] = {source: {k: v for k, v in r.items() if k not in stamped} for source, r in json.loads((out / "great_expectations" / "results.json").read_text()).items()}
        if way == "set going":
            # every source's suite was set going at its load, and every one taken by its check
            assert sorted(worker._STARTED.sources) == sorted(c.source for c in load_contracts().values())
            assert not worker._STARTED and not worker._PROCESS
            assert len(names) == len(load_contracts())  # each table handed over once: no check validated again
        elif way == "in the checks":
            assert worker._STARTED.sources == []
            for process in worker._PROCESS:
                process.close()
        else:
            # a table of more rows than the bound waits for its check
            with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
                rows = {c.source: con.execute(f'SELECT count(*) FROM "{c.raw_table}"').fetchall()[0][0] for c in load_contracts().values()}
            small = sorted(source for source, n in rows.items() if n <= 2_000)
            assert small and len(small) < len(rows) and sorted(worker._STARTED.sources) == small
            assert not worker._STARTED and not worker._PROCESS
    for way in ("set going", "large tables in the checks"):
        assert checks[way] == checks["in the checks"] and len(checks[way]) == len(load_contracts())
        assert results[way] == results["in the checks"]
    assert names
    for name in names:
        with pytest.raises(FileNotFoundError):
            SharedMemory(name)


def test_a_table_the_shared_memory_has_no_room_for_is_validated_in_the_runs_own_process(examples, tmp_path, monkeypatch):
    """A container's /dev/shm is 64 MB unless set larger: a table that does not fit is validated
    where it is, rather than the run being killed as it writes past the memory there is."""
    import errno
    import os

    from expectations import table_for_validation, worker

    contract = load_contracts()["school_attendance"]
    con = duckdb.connect()
    con.register("loaded", read_source(contract, examples, today=dt.date(2026, 11, 23)).raw)
    con.execute(f'CREATE TABLE "{contract.raw_table}" AS SELECT * FROM loaded')

    def no_room(descriptor, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    made = []

    class Recorded(worker.SharedMemory):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self.name)

    monkeypatch.setattr(worker, "SharedMemory", Recorded)
    monkeypatch.setattr(worker.os, "posix_fallocate", no_room)
    monkeypatch.setattr(worker, "_PROCESS", [])
    monkeypatch.setattr(worker, "_STARTED", {})
    process = worker.start_suite_process(for_one_run=True)
    try:
        # not set going: its check validates it, in the run's own process
        assert worker.start_validating(tmp_path / "gx", contract, con) is False and not worker._STARTED
        result, now = worker.validated(tmp_path / "gx", contract, con)
        assert now and result.success and result.validated_rows == con.execute("SELECT count(*) FROM loaded").fetchall()[0][0]
        alone = worker.validate_table(tmp_path / "alone", contract, table_for_validation(con.sql("SELECT * FROM loaded")))
        assert alone.success and alone.evaluated == result.evaluated
    finally:
        process.close()
    assert len(made) == 3  # each table's memory made (set going, its check, alone), and none left behind
    for name in made:
        with pytest.raises(FileNotFoundError):
            worker.SharedMemory(name)


def test_a_batch_of_a_few_rows_may_lack_a_few_set_aside_values_and_a_broken_extract_still_fails(examples, tmp_path):
    """A required field whose broken values are set aside (worklessness' postcode) must hold a value
    in 95% of a batch's rows, or all but SET_ASIDE_FEW of them in a batch under 100 rows: a month's
    new file of a small source may be a few dozen rows, where two postcodes keyed wrong are over 5%
    and say nothing of the extract as a whole; most of them gone still does."""
    from expectations import SET_ASIDE_FEW

    contract = load_contracts()["worklessness"]
    loaded = read_source(contract, examples, today=dt.date(2026, 11, 23)).raw
    assert loaded.height and loaded["postcode"].null_count() == 0
    validator = ContractValidator(tmp_path / "gx")

    def passes(rows: int, lacking: int) -> bool:
        batch = pl.concat([loaded] * (rows // loaded.height + 1)).head(rows).with_row_index("_i")
        batch = batch.with_columns(pl.when(pl.col("_i") < lacking).then(None).otherwise(pl.col("postcode")).alias("postcode")).drop("_i")
        con = duckdb.connect()
        con.register("batch", batch)
        try:
            result = validator.validate(contract, frame_for_validation(con.sql("SELECT * FROM batch")))
        finally:
            con.close()
        assert not result.success or not result.failed
        return result.success

    assert passes(33, 2) and passes(33, SET_ASIDE_FEW) and not passes(33, SET_ASIDE_FEW + 1) and not passes(33, 30)
    assert passes(200, 10) and not passes(200, 11)
    # a batch of no more rows than SET_ASIDE_FEW (a small source's month: two open cases) may lack
    # the field in every row; its suite is built, not refused by Great Expectations as a share below 0
    assert passes(2, 0) and passes(2, 2) and passes(SET_ASIDE_FEW, SET_ASIDE_FEW)
