"""When the monthly run happens: a schedule a few days into each month (for the month just
ended, ahead of that month's locality meetings), and a sensor that runs it again when
partners land new or changed files; and the audit of every run, however it started."""

import json
import os
import time

import dagster as dg
import duckdb

from data_contracts import load_contracts
from ingestion.load import landing_fingerprint
from pipelines.partitions import AUTHORITIES, MONTHS, month_and_authority, partition_key
from pipelines.resources import EarlyhelpSettings, default_settings
from warehouse import WAREHOUSE_FILE, open_warehouse, record_run, who_ran

#: Day of the month the schedule runs, for the month just ended; meetings follow in that month.
SCHEDULE_DAY = int(os.environ.get("EARLYHELP_SCHEDULE_DAY", "3"))
SCHEDULE_HOUR = int(os.environ.get("EARLYHELP_SCHEDULE_HOUR", "6"))


def monthly_schedule(job) -> dg.ScheduleDefinition:
    return dg.build_schedule_from_partitioned_job(
        job,
        name="monthly_before_meetings",
        day_of_month=SCHEDULE_DAY,
        hour_of_day=SCHEDULE_HOUR,
        description=f"Runs on day {SCHEDULE_DAY} of each month (EARLYHELP_SCHEDULE_DAY) for the month just ended, so the lists are ready before that month's locality meetings.",
    )


def landing_sensor(job) -> dg.SensorDefinition:
    @dg.sensor(
        name="new_partner_files",
        job=job,
        minimum_interval_seconds=300,
        description="Runs the last ended month again when a file in the landing folder is added, replaced or removed (on a deployment, for the authority whose landing folder changed).",
    )
    def new_partner_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        month = MONTHS.get_last_partition_key()
        # the cursor holds each landing folder's fingerprint: one council's, or each authority's by code
        seen = json.loads(context.cursor) if context.cursor and context.cursor.startswith("{") else {"": context.cursor}
        if AUTHORITIES:
            landings = {code: (a.landing, load_contracts(a.contracts)) for code, a in AUTHORITIES.items()}
        else:
            landings = {"": (default_settings().landing, load_contracts())}
        now, requests = {}, []
        for code, (landing, contracts) in landings.items():
            now[code] = landing_fingerprint(landing, [c.source for c in contracts.values()])
            if now[code] != seen.get(code):
                requests.append(dg.RunRequest(
                    run_key=f"{code + '-' if code else ''}{month}-{now[code][:16]}", partition_key=partition_key(month, code or None),
                    tags={"earlyhelp/trigger": "landing files changed"},
                ))
        if not requests:
            return dg.SkipReason("no landing file added, replaced or removed since the last run request")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(now) if AUTHORITIES else now[""])

    return new_partner_files


#: Seconds an audit entry waits for another process to let go of the warehouse file.
AUDIT_ATTEMPTS = 30


def _trigger(tags: dict[str, str]) -> str:
    for tag, said in (("dagster/schedule_name", "schedule"), ("dagster/sensor_name", "sensor"), ("dagster/backfill", "backfill")):
        if tag in tags:
            return f"{said} {tags[tag]}"
    return tags.get("earlyhelp/trigger", "launched by hand (UI or API)")


def audit_run(instance: dg.DagsterInstance, run: dg.DagsterRun, succeeded: bool, settings: EarlyhelpSettings | None = None,
              ended: str = "") -> bool:
    """Write the run's audit entry into its own warehouse: success or failure, the failed steps,
    how it started and who started it, the month and the folders (counts and paths only).
    `settings`: the run's own, where the caller has them (the CLI); else from the run's
    configuration, else the code location's (a run launched from the UI or the daemon).
    `ended`: how the run ended, where it could not say so itself."""
    settings_config = ((run.run_config or {}).get("resources") or {}).get("settings", {}).get("config") or {}
    settings = settings or (EarlyhelpSettings(**settings_config) if settings_config else default_settings())
    failed = sorted(
        {e.step_key for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE) if e.step_key}
    )
    tags = dict(run.tags)
    month, code = month_and_authority(tags)
    # on a deployment, the entry goes into the run's own authority's warehouse, never another's
    authority = AUTHORITIES.get(code) if code else None
    landing, output = (authority.landing, authority.output) if authority else (settings.landing, settings.output)
    who = tags.get("earlyhelp/run_by") or tags.get("dagster/user") or who_ran()
    detail = (
        (f"authority {authority.code}; " if authority else "")
        + f"month {month or settings.month or '-'}; {_trigger(tags)}; landing {landing}; "
        f"programme {authority.programme if authority else settings.programme}; "
        f"registry {(authority.registry or 'packaged') if authority else (settings.registry_path or 'packaged')}"
        + (f"; failed steps: {', '.join(failed)}" if failed else "")
        + (f"; {ended}" if ended else "")
    )
    output.mkdir(parents=True, exist_ok=True)
    path = output / WAREHOUSE_FILE
    for attempt in range(AUDIT_ATTEMPTS):
        try:
            with open_warehouse(path) as con:
                return record_run(con, run.run_id, succeeded, detail, who)
        except duckdb.IOException:  # another process has the file open for a moment: try again
            if attempt == AUDIT_ATTEMPTS - 1:
                raise
            time.sleep(1)
    return False


def audit_unfinished_run(instance: dg.DagsterInstance | None, run_id: str, found_by: str, settings: EarlyhelpSettings) -> None:
    """A run whose process died while it held the warehouse (killed, or its machine went down:
    `RunLock.left_by`, found by run `found_by` as it began) wrote no audit entry, and Dagster
    still shows it running. It is marked failed in Dagster, and its entry written as failed,
    saying how it ended; where this instance does not know it, the entry says that."""
    ended = f"ended without finishing: its process stopped before the run could record it (found by run {found_by})"
    run = instance.get_run_by_id(run_id) if instance is not None else None
    if run is None:
        with open_warehouse(settings.warehouse_path) as con:
            record_run(con, run_id, False, f"{ended}; the Dagster instance here holds no such run", "not known: the run could not record it")
        return
    if not run.is_finished:
        instance.report_run_failed(run, message=ended)
    audit_run(instance, run, False, settings, ended=ended)


def run_audit_sensors() -> list[dg.SensorDefinition]:
    """Every run of this code location, started from the CLI, the schedule, the landing sensor,
    the UI or a backfill, gets its entry in audit_log when it ends, succeeded or failed."""

    @dg.run_status_sensor(run_status=dg.DagsterRunStatus.SUCCESS, name="audit_succeeded_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                          description="Records every run that succeeded in its warehouse's audit_log.")
    def audit_succeeded_runs(context: dg.RunStatusSensorContext):
        audit_run(context.instance, context.dagster_run, succeeded=True)

    @dg.run_failure_sensor(name="audit_failed_runs", default_status=dg.DefaultSensorStatus.RUNNING,
                           description="Records every run that failed, with its failed steps, in its warehouse's audit_log.")
    def audit_failed_runs(context: dg.RunFailureSensorContext):
        audit_run(context.instance, context.dagster_run, succeeded=False)

    return [audit_succeeded_runs, audit_failed_runs]
