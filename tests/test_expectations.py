"""The contract suites see what ingestion loaded: Great Expectations validates an Arrow-backed
frame, and observes and fails exactly as it would on the plain pandas copy it was once given."""

from __future__ import annotations

import datetime as dt
import gc
import re
import weakref
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
