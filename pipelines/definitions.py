"""Every Dagster definition of earlyhelp. `dagster dev` loads this module (pyproject's [tool.dagster])."""

from __future__ import annotations

import dagster as dg

from pipelines.assets import RAW_ASSETS, person_records
from pipelines.automation import landing_sensor, monthly_schedule
from pipelines.checks import RAW_CHECKS
from pipelines.governance_assets import GOVERNANCE_ASSETS
from pipelines.linkage_assets import LINKAGE_ASSETS
from pipelines.list_assets import LIST_ASSETS
from pipelines.outcome_assets import OUTCOME_ASSETS
from pipelines.partitions import MONTHS
from pipelines.resources import default_settings
from pipelines.score_assets import SCORE_ASSETS, SCORE_CHECKS

ALL_ASSETS = [*RAW_ASSETS, person_records, *LINKAGE_ASSETS, *SCORE_ASSETS, *LIST_ASSETS, *OUTCOME_ASSETS, *GOVERNANCE_ASSETS]
ALL_CHECKS = [*RAW_CHECKS, *SCORE_CHECKS]

monthly_run = dg.define_asset_job(
    "monthly_run",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    partitions_def=MONTHS,
    description="Ingest every partner extract, link records to persons and families, compute indicators and family scores, write the locality lists for the reference month, track allocated families' outcomes, and write the IG pack and ATRS record.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[monthly_run],
    schedules=[monthly_schedule(monthly_run)],
    sensors=[landing_sensor(monthly_run)],
    resources={"settings": default_settings()},
    # one DuckDB warehouse takes one writer: steps run one after another in the run's process
    executor=dg.in_process_executor,
)
