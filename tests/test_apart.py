"""Heavy steps run in child processes (pipelines/apart.py): through real Dagster materialisations."""

from __future__ import annotations

import os
import signal

import dagster as dg
import pytest

from pipelines.apart import apart
from pipelines.resources import EarlyhelpSettings

STEP_ENV = "EARLYHELP_TEST_APART"


class Threshold(dg.Config):
    at_least: int = 1


@dg.asset
@apart
def counted_in_a_child(context: dg.AssetExecutionContext, config: Threshold, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    context.log.info(f"counted with threshold {config.at_least}")
    return dg.MaterializeResult(metadata={
        "pid": os.getpid(), "threshold": config.at_least, "month": settings.reference_month,
        "environment": os.environ.get(STEP_ENV, ""), "folder": os.getcwd(),
    })


@dg.asset_check(asset=counted_in_a_child)
@apart
def checked_in_a_child(context: dg.AssetCheckExecutionContext, settings: EarlyhelpSettings) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True, severity=dg.AssetCheckSeverity.WARN, metadata={"pid": os.getpid()})


@dg.asset
@apart
def refused_in_a_child(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> None:
    context.log.info("read the file before refusing it")
    raise ValueError("school_attendance/2026-09.csv row 3, column ATTENDANCE_PCT: not a number")


@dg.asset
@apart
def killed_in_a_child(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> None:
    os.kill(os.getpid(), signal.SIGKILL)  # as the kernel does to a process out of memory


def _settings(tmp_path, apart_: bool) -> EarlyhelpSettings:
    return EarlyhelpSettings(landing_dir=str(tmp_path), output_dir=str(tmp_path / "out"), month="2026-09", steps_apart=apart_)


@pytest.mark.parametrize("steps_apart", [True, False])
def test_a_body_marked_apart_runs_in_a_child_with_the_runs_settings_config_and_environment(tmp_path, monkeypatch, steps_apart):
    monkeypatch.setenv(STEP_ENV, "set after the server started")
    monkeypatch.chdir(tmp_path)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [counted_in_a_child, checked_in_a_child], resources={"settings": _settings(tmp_path, steps_apart)}, instance=instance,
            run_config={"ops": {"counted_in_a_child": {"config": {"at_least": 3}}}},
        )
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert result.success
    # the child's log lines are the step's
    assert "counted with threshold 3" in logs
    metadata = {k: v.value for k, v in result.asset_materializations_for_node("counted_in_a_child")[0].metadata.items()}
    assert (metadata["pid"] != os.getpid()) is steps_apart
    # the run's settings, config, environment and working folder as they are when the step starts
    assert (metadata["threshold"], metadata["month"], metadata["environment"], metadata["folder"]) == (3, "2026-09", "set after the server started", str(tmp_path))
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.severity == dg.AssetCheckSeverity.WARN and (check.metadata["pid"].value != os.getpid()) is steps_apart


def test_an_error_in_a_child_fails_the_step_with_its_message_and_the_childs_log(tmp_path):
    with dg.instance_for_test() as instance:
        result = dg.materialize([refused_in_a_child], resources={"settings": _settings(tmp_path, True)}, instance=instance, raise_on_error=False)
        assert not result.success
        [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        raised = failure.step_failure_data.error.cause  # under Dagster's "error occurred while executing"
        assert raised.cls_name == "ValueError" and "row 3, column ATTENDANCE_PCT" in raised.message
        # the child's own traceback travels with it
        assert raised.cause.cls_name == "ChildTraceback" and 'raise ValueError("school_attendance' in raised.cause.message
        logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
        assert "read the file before refusing it" in logs


def test_a_child_killed_mid_step_fails_the_step_saying_so(tmp_path):
    result = dg.materialize([killed_in_a_child], resources={"settings": _settings(tmp_path, True)}, raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    raised = failure.step_failure_data.error.cause
    assert raised.cls_name == "StepProcessLost" and "ended without a result" in raised.message
