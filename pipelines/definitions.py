"""Every Dagster definition of earlyhelp. `dagster dev` loads this module (pyproject's [tool.dagster])."""

from __future__ import annotations

import dagster as dg

from pipelines.automation import landing_sensor, monthly_schedule, run_audit_sensors
from pipelines.defs.governance import GOVERNANCE_ASSETS
from pipelines.defs.ingestion import RAW_ASSETS, partner_quality_reports
from pipelines.defs.ingestion_checks import RAW_CHECKS
from pipelines.defs.linkage import LINKAGE_ASSETS
from pipelines.defs.lists import LIST_ASSETS
from pipelines.defs.outcomes import OUTCOME_ASSETS
from pipelines.defs.scoring import SCORE_ASSETS, SCORE_CHECKS
from pipelines.partitions import PARTITIONS
from pipelines.resources import default_settings

# one module per stage of the flow (pipelines/defs/), in the flow's order
ALL_ASSETS = [*RAW_ASSETS, partner_quality_reports, *LINKAGE_ASSETS, *SCORE_ASSETS, *LIST_ASSETS, *OUTCOME_ASSETS, *GOVERNANCE_ASSETS]
ALL_CHECKS = [*RAW_CHECKS, *SCORE_CHECKS]

monthly_run = dg.define_asset_job(
    "monthly_run",
    selection=dg.AssetSelection.assets(*ALL_ASSETS),
    partitions_def=PARTITIONS,
    description="Ingest every partner extract, link records to persons and families, compute indicators and family scores, write the locality lists for the reference month, track allocated families' outcomes, and write the IG pack and ATRS record.",
)

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[monthly_run],
    schedules=[monthly_schedule(monthly_run)],
    sensors=[landing_sensor(monthly_run), *run_audit_sensors()],
    resources={"settings": default_settings()},
    # one DuckDB warehouse takes one writer: steps run one after another in the run's process
    executor=dg.in_process_executor,
)
