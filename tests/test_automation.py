"""The schedule, the landing-folder sensor and the monthly partitions, evaluated as Dagster would."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import dagster as dg
import duckdb
import pytest

from pipelines.cli import run_pipeline
from pipelines.defs.scoring import lists_ordered_by_model
from pipelines.definitions import ALL_ASSETS, ALL_CHECKS, defs
from pipelines.partitions import MONTHS
from pipelines.resources import default_settings
from tests.conftest import MONTH


def test_every_definition_loads_with_partitions_schedule_and_sensor():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("monthly_run")
    assert job.partitions_def == MONTHS
    assert {s.name for s in defs.schedules} == {"monthly_before_meetings"}
    assert {s.name for s in defs.sensors} == {"new_partner_files", "audit_succeeded_runs", "audit_failed_runs"}
    assert all(a.partitions_def == MONTHS for a in defs.resolve_asset_graph().assets_defs if a.keys)


def test_partitions_begin_three_years_back_unless_the_council_says_otherwise(monkeypatch):
    from pipelines.partitions import DEFAULT_MONTHS_BACK, first_month

    monkeypatch.delenv("EARLYHELP_FIRST_MONTH", raising=False)
    assert DEFAULT_MONTHS_BACK == 36
    assert first_month(dt.date(2026, 12, 2)) == "2023-12" and first_month(dt.date(2026, 1, 31)) == "2023-01"
    # the UI shows the months a council's three years of files can fill, not a decade of empty ones
    today = dt.date.today()
    keys = MONTHS.get_partition_keys()
    assert keys[0] == first_month(today) and len(keys) == DEFAULT_MONTHS_BACK
    assert keys[-1] == (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")  # the last month that has ended
    monkeypatch.setenv("EARLYHELP_FIRST_MONTH", "2019-04")
    assert first_month(dt.date(2026, 12, 2)) == "2019-04"


def _asks_for_the_model(request: dg.RunRequest) -> bool:
    """Whether a run request would evaluate the scorecard model: its lists ordered by it, or `retrain`."""
    config = request.run_config or {}
    retrain = (((config.get("ops") or {}).get("scorecard_model") or {}).get("config") or {}).get("retrain", False)
    return lists_ordered_by_model(config) or bool(retrain)


def test_schedule_runs_the_month_just_ended_early_in_the_next(dagster_instance):
    schedule = next(s for s in defs.schedules if s.name == "monthly_before_meetings")
    assert schedule.cron_schedule == "0 6 3 * *"
    context = dg.build_schedule_context(instance=dagster_instance, scheduled_execution_time=dt.datetime(2026, 12, 3, 6))
    result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-11"]
    # the README's word: the schedule's runs never evaluate the scorecard model
    assert not any(_asks_for_the_model(r) for r in result.run_requests)


def test_sensor_requests_a_run_only_when_landing_files_change(tmp_path, monkeypatch, dagster_instance):
    landing = tmp_path / "landing"
    (landing / "ae_attendances").mkdir(parents=True)
    monkeypatch.setenv("EARLYHELP_LANDING", str(landing))
    sensor = next(s for s in defs.sensors if s.name == "new_partner_files")

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(instance=dagster_instance, cursor=cursor, definitions=defs))

    extract = landing / "ae_attendances" / "ae_2026-10.csv"
    extract.write_text("ATTENDANCE_ID\n1\n")
    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == [MONTHS.get_last_partition_key()]
    assert not any(_asks_for_the_model(r) for r in first.run_requests), "the sensor's runs never evaluate the model"
    assert tick(first.cursor).run_requests == [] and tick(first.cursor).skip_message
    (landing / "truth.csv").write_text("not a partner's file\n")  # outside the contracts' folders
    assert tick(first.cursor).run_requests == []
    extract.write_text("ATTENDANCE_ID\n1\n2\n")  # a partner replaces its file
    os.utime(extract, ns=(1, 1))
    changed = tick(first.cursor)
    assert len(changed.run_requests) == 1 and changed.cursor != first.cursor


def test_a_month_that_has_not_ended_is_refused_clearly(village, tmp_path):
    with pytest.raises(ValueError, match="not a reference month"):
        run_pipeline(village, "2099-01", tmp_path / "out")


def _sensor(name: str):
    return next(s for s in defs.sensors if s.name == name)


def _audit(out):
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute("SELECT action, run_id, run_by, detail FROM audit_log WHERE action LIKE 'run %' ORDER BY recorded_at").fetchall()
    finally:
        con.close()


def test_runs_the_schedule_or_the_ui_start_are_audited_by_dagster(village, tmp_path, monkeypatch, dagster_instance):
    """A run Dagster itself executes (here for the schedule's tick), not the CLI, gets its audit
    entry from the run-status sensor; so does a failed run, with its failed steps."""
    out = tmp_path / "out"
    monkeypatch.setenv("EARLYHELP_LANDING", str(village))
    monkeypatch.setenv("EARLYHELP_OUT", str(out))
    instance = dagster_instance
    result = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS], resources={"settings": default_settings()}, instance=instance, partition_key=MONTH,
        tags={"dagster/schedule_name": "monthly_before_meetings", "dagster/user": "analyst@county.example.gov.uk"},
    )
    assert result.success and _audit(out) == []
    context = dg.build_run_status_sensor_context(
        sensor_name="audit_succeeded_runs", dagster_instance=instance, dagster_run=result.dagster_run, dagster_event=result.get_run_success_event(),
    )
    _sensor("audit_succeeded_runs")(context)
    _sensor("audit_succeeded_runs")(context)  # a sensor tick repeated writes nothing twice
    ((action, run_id, by, detail),) = _audit(out)
    assert (action, run_id, by) == ("run succeeded", result.run_id, "analyst@county.example.gov.uk")
    assert f"month {MONTH}" in detail and "schedule monthly_before_meetings" in detail and str(village) in detail

    empty = tmp_path / "empty_landing"
    empty.mkdir()
    monkeypatch.setenv("EARLYHELP_LANDING", str(empty))
    failed = dg.materialize(
        [*ALL_ASSETS, *ALL_CHECKS], resources={"settings": default_settings()}, instance=instance, partition_key=MONTH,
        tags={"dagster/sensor_name": "new_partner_files"}, raise_on_error=False,
    )
    assert not failed.success
    (failure,) = [e.dagster_event for e in instance.all_logs(failed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE)]
    _sensor("audit_failed_runs")(dg.build_run_status_sensor_context(
        sensor_name="audit_failed_runs", dagster_instance=instance, dagster_run=failed.dagster_run, dagster_event=failure,
    ).for_run_failure())
    entries = _audit(out)
    assert [e[0] for e in entries] == ["run succeeded", "run failed"] and entries[1][1] == failed.run_id
    assert "sensor new_partner_files" in entries[1][3] and "failed steps:" in entries[1][3]


def test_earlyhelp_run_keeps_its_history_in_postgresql_when_the_instance_says_so(village, tmp_path, monkeypatch, postgres_url):
    """A council server's DAGSTER_HOME whose dagster.yaml keeps history in PostgreSQL: the run, its
    steps' times (the next run's estimate) and its events are there, not in files."""
    import io

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"storage:\n  postgres:\n    postgres_url: {postgres_url}\ntelemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    shown = io.StringIO()
    result = run_pipeline(village, MONTH, tmp_path / "out", progress=shown)
    assert result.success and "governance_pack" in shown.getvalue()
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        (run,) = instance.get_runs()
        assert run.run_id == result.run_id and run.job_name == "monthly_run" and run.tags["dagster/partition"] == MONTH
        from pipelines.progress import previous_step_seconds

        assert "person_links" in previous_step_seconds(instance, "monthly_run")
    assert not list(home.glob("**/*.db")), "no SQLite history beside PostgreSQL"


def _run_command(landing, out) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", MONTH, "--out", str(out)]


def _holder(lock) -> str:
    """The id of the run holding the warehouse, once a run started apart holds it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and len(lock.read_text()) > 20):
        time.sleep(0.1)
    return lock.read_text().strip()


def test_a_run_killed_holding_the_warehouse_is_audited_as_failed_by_the_next(village, tmp_path):
    """A run whose process is killed (or whose machine goes down) writes no audit entry, and
    Dagster shows it running for ever. Its id stays in the lock it held, so the next run on the
    warehouse marks it failed in Dagster and writes its entry, saying how it ended."""
    out = tmp_path / "out"
    cli = _run_command(village, out)
    first = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    lock = out / ".run.lock"
    killed = _holder(lock)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    assert lock.read_text().strip() == killed, "a killed run leaves its id in the lock"
    with dg.DagsterInstance.from_config(str(out / ".dagster")) as instance:
        assert not instance.get_run_by_id(killed).is_finished, "not vacuous: Dagster shows the killed run running"
    second = subprocess.run(cli, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    (failed, run_id, _, detail), (succeeded, now, _, _) = _audit(out)
    assert (failed, run_id, succeeded) == ("run failed", killed, "run succeeded")
    assert f"ended without finishing: its process stopped before the run could record it (found by run {now})" in detail and f"month {MONTH}" in detail
    with dg.DagsterInstance.from_config(str(out / ".dagster")) as instance:
        assert instance.get_run_by_id(killed).status == dg.DagsterRunStatus.FAILURE
    assert lock.read_text() == "", "a run that ends lets go of the lock emptied"


def test_the_lock_names_a_run_that_never_let_go_and_a_probe_leaves_it_so(tmp_path):
    """The lock of a run that ended is empty; one a killed run left names it, to the next run
    (not to the CLI's look at whether the warehouse is free, which leaves it as it was). A killed
    run this instance does not know still gets its entry, saying so."""
    from pipelines.automation import audit_unfinished_run
    from pipelines.resources import EarlyhelpSettings
    from warehouse import LOCK_FILE, PROBE, RunLock

    with RunLock(tmp_path, "ended") as lock:
        assert lock.left_by is None
    assert (tmp_path / LOCK_FILE).read_text() == ""
    (tmp_path / LOCK_FILE).write_text("killed")  # as a killed run leaves it
    with RunLock(tmp_path, PROBE) as probe:
        assert probe.left_by == "killed"
    assert (tmp_path / LOCK_FILE).read_text() == "killed", "the probe leaves it for the run"
    with RunLock(tmp_path, "next") as lock:
        assert lock.left_by == "killed" and (tmp_path / LOCK_FILE).read_text() == "next"
    settings = EarlyhelpSettings(landing_dir=str(tmp_path / "landing"), output_dir=str(tmp_path), month=MONTH)
    audit_unfinished_run(None, "killed", "next", settings)
    ((action, run_id, by, detail),) = _audit(tmp_path)
    assert (action, run_id, by) == ("run failed", "killed", "not known: the run could not record it")
    assert "ended without finishing" in detail and "found by run next" in detail and "holds no such run" in detail


def test_two_runs_on_one_warehouse_the_second_waits_then_refuses_naming_the_first(village, tmp_path):
    out = tmp_path / "out"
    cli = _run_command(village, out)
    first = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lock = out / ".run.lock"
    holder = _holder(lock)
    second = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "EARLYHELP_WAIT_SECONDS": "1"})
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 3, second.stderr[-2000:]
    assert f"is held by run {holder}" in second.stderr and "Nothing was written" in second.stderr
    assert "Traceback" not in second.stderr and "Traceback" not in first_err
    ((action, run_id, _, _),) = _audit(out)
    assert action == "run succeeded" and run_id == holder
