"""The pipeline through real Dagster materialisations, on a real DuckDB file and real files."""

from __future__ import annotations

import shutil
import subprocess
import sys

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines.cli import run_pipeline
from pipelines.definitions import defs
from tests.conftest import MONTH


def test_definitions_load():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_school_attendance", "raw_ae_attendances", "person_records"} <= keys
    assert defs.resolve_job_def("monthly_run") is not None
    checks = {k.name for k in graph.asset_check_keys}
    assert {"meets_contract", "rows_accounted_for", "source_received"} <= checks


@pytest.fixture(scope="module")
def village_run(village, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    result = run_pipeline(village, MONTH, out)
    return result, out


def test_village_runs_end_to_end(village_run, village):
    result, out = village_run
    assert result.success
    checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    received = dict(con.execute("SELECT source, sum(received) FROM landed_files GROUP BY source").fetchall())
    truth = pl.read_csv(village / "truth.csv").group_by("source").len()
    assert received == {**dict(truth.iter_rows()), "postcode_localities": received["postcode_localities"]}
    mentions = con.execute("SELECT count(*) FROM person_records").fetchall()[0][0]
    current = sum(con.execute(f"SELECT count(*) FROM raw_{s}").fetchall()[0][0] for s in truth["source"])
    assert mentions == current
    assert con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0
    assert (out / "great_expectations").is_dir()
    docs = list((out / "great_expectations").rglob("index.html"))
    assert docs, "Data Docs are published"


def test_rerun_gives_identical_tables(village_run, village):
    _, out = village_run
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    before = con.sql("SELECT * FROM person_records ORDER BY record_key").pl()
    con.close()
    assert run_pipeline(village, MONTH, out).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    assert con.sql("SELECT * FROM person_records ORDER BY record_key").pl().equals(before)


def test_no_personal_data_in_dagster_metadata_or_logs(village_run, village):
    result, out = village_run
    truth_people = pl.read_csv(next((village / "domestic_abuse").glob("*.csv")), infer_schema=False)
    surnames = {s for s in truth_people["SURNAME"].drop_nulls().to_list() if len(s) > 4}
    with dg.DagsterInstance.from_config(str(out / ".dagster")) as instance:
        text = " ".join(str(r.dagster_event.event_specific_data) + " " + (r.user_message or "") for r in instance.all_logs(result.run_id) if r.dagster_event) + " ".join(
            r.user_message or "" for r in instance.all_logs(result.run_id)
        )
    leaked = [s for s in surnames if s in text]
    assert not leaked


def test_missing_source_blocks_person_records(village, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    shutil.rmtree(landing / "worklessness")
    result = run_pipeline(landing, MONTH, tmp_path / "out")
    assert not result.success
    failed = {
        (e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name)
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    }
    assert ("raw_worklessness", "source_received") in failed
    materialised = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "raw_school_attendance" in materialised and "person_records" not in materialised


def test_cli_generate_and_run(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    cli = [sys.executable, "-m", "pipelines.cli"]
    gen = subprocess.run([*cli, "generate", "--people", "600", "--seed", "2", "--month", MONTH, "--out", str(landing)], capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    assert "600 residents" in gen.stdout
    run = subprocess.run([*cli, "run", "--landing", str(landing), "--month", MONTH, "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded" in run.stdout and "ae_attendances" in run.stdout and "quarantined" in run.stdout
    bad = subprocess.run([*cli, "run", "--landing", str(landing), "--month", "2026-13", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr
