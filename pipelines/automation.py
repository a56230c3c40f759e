"""When the monthly run happens: a schedule a few days into each month (for the month just
ended, ahead of that month's locality meetings), and a sensor that runs it again when
partners land new or changed files."""

import os

import dagster as dg

from data_contracts import load_contracts
from ingestion.load import landing_fingerprint
from pipelines.partitions import MONTHS
from pipelines.resources import default_settings

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
        description="Runs the last ended month again when a file in the landing folder is added, replaced or removed.",
    )
    def new_partner_files(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
        settings = default_settings()
        fingerprint = landing_fingerprint(settings.landing, [c.source for c in load_contracts().values()])
        if fingerprint == context.cursor:
            return dg.SkipReason("no landing file added, replaced or removed since the last run request")
        month = MONTHS.get_last_partition_key()
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"{month}-{fingerprint[:16]}", partition_key=month, tags={"earlyhelp/trigger": "landing files changed"})],
            cursor=fingerprint,
        )

    return new_partner_files
