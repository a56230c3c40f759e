"""The schedule, the landing-folder sensor and the monthly partitions, evaluated as Dagster would."""

from __future__ import annotations

import datetime as dt
import os

import dagster as dg
import pytest

from pipelines.cli import run_pipeline
from pipelines.definitions import defs
from pipelines.partitions import MONTHS


def test_every_definition_loads_with_partitions_schedule_and_sensor():
    dg.Definitions.validate_loadable(defs)
    job = defs.resolve_job_def("monthly_run")
    assert job.partitions_def == MONTHS
    assert {s.name for s in defs.schedules} == {"monthly_before_meetings"}
    assert {s.name for s in defs.sensors} == {"new_partner_files"}
    assert all(a.partitions_def == MONTHS for a in defs.resolve_asset_graph().assets_defs if a.keys)


def test_schedule_runs_the_month_just_ended_early_in_the_next():
    schedule = next(s for s in defs.schedules if s.name == "monthly_before_meetings")
    assert schedule.cron_schedule == "0 6 3 * *"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=dt.datetime(2026, 12, 3, 6))
        result = schedule.evaluate_tick(context)
    assert [r.partition_key for r in result.run_requests] == ["2026-11"]


def test_sensor_requests_a_run_only_when_landing_files_change(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    (landing / "ae_attendances").mkdir(parents=True)
    monkeypatch.setenv("EARLYHELP_LANDING", str(landing))
    sensor = next(s for s in defs.sensors if s.name == "new_partner_files")

    def tick(cursor):
        with dg.instance_for_test() as instance:
            return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, definitions=defs))

    extract = landing / "ae_attendances" / "ae_2026-10.csv"
    extract.write_text("ATTENDANCE_ID\n1\n")
    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == [MONTHS.get_last_partition_key()]
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
