"""Dagster asset for the monthly locality lists and their packs, with an audit of every list produced."""

import hashlib

import dagster as dg

from models.lists import ListSettings, monthly_lists
from models.needs_analysis import needs_analysis as build_needs_analysis
from pipelines.apart import apart
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from reports.needs_analysis import write_needs_analysis
from reports.packs import write_packs
from rules import programme
from warehouse import record_audit, replace_tables, who_ran

LISTS = "lists"


class ListConfig(dg.Config):
    include_already_known: bool = True  # families open to children's social care: shown, flagged
    no_further_action_months: int = 6  # after NO_FURTHER_ACTION, not relisted this long unless a new event
    order_by: str = "score"  # "model": order within each list by the scorecard model (off unless it earns its place)
    list_front_door_nfa: bool = False  # also list families whose children's front door contacts keep ending in no further action


@dg.asset(partitions_def=PARTITIONS, group_name=LISTS, kinds={"duckdb", "html"}, deps=["family_scores", "scorecard_model"])
@apart
def locality_lists(context: dg.AssetExecutionContext, config: ListConfig, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """One list per locality for the reference month: eligible families ranked, with members,
    needs, score and reasons, and flags; packs (HTML, XLSX, CSV) and a summary under
    `<out>/packs/<month>/`; every list recorded in `list_audit`."""
    list_settings = ListSettings(**config.model_dump())
    registry_sha = hashlib.sha256(settings.registry().path.read_bytes()).hexdigest()[:16]
    configuration = (
        f"programme={settings.council_programme}; registry_sha256={registry_sha}; include_already_known={config.include_already_known}; "
        f"list_front_door_nfa={config.list_front_door_nfa}"
    )
    with settings.warehouse() as con:
        lists = monthly_lists(
            con, settings.reference_month, settings.reference_date, list_settings, configuration, context.run_id, who_ran(), settings.registry(),
            programme(settings.council_programme), settings.contracts(),
        )
        replace_tables(con, lists.tables)
    if lists.ordered_by != config.order_by:
        context.log.warning("locality_lists: order_by=model, but the scorecard model could not be trained this month; ordered by score")
    result = lists.result
    folder = settings.output / "packs" / settings.reference_month
    written = write_packs(result.lists, result.members, settings.reference_month, folder, lists.summary, programme(settings.council_programme), lists.view)
    decisions = lists.tables["meeting_decisions"]
    with settings.warehouse() as con:
        record_audit(con, "locality packs written", f"{folder}: {len(written)} files, {result.lists.height} families for {settings.reference_month}", context.run_id)
        if decisions.height or lists.rows_without_decision:
            recorders = sorted(decisions["recorded_by"].unique().to_list())
            record_audit(
                con, "meeting decisions honoured",
                f"{decisions.height} decisions recorded by {', '.join(recorders) or 'no one named'}; {lists.rows_without_decision} returned rows without a decision",
                context.run_id,
            )
    per_locality = dict(result.lists.group_by("locality").len().sort("locality").iter_rows())
    context.log.info(f"locality_lists: {result.lists.height:,} families across {len(per_locality)} localities; packs in {folder}")
    return dg.MaterializeResult(
        metadata={
            "families_listed": result.lists.height,
            "ordered_by": lists.ordered_by,
            "families_by_locality": dg.MetadataValue.json(per_locality),
            "eligible_without_locality": result.unplaced,
            "allocations_waiting": lists.summary.waiting.height,
            "allocated_not_relisted": result.allocated.height,
            "decision_discrepancies": result.discrepancies.height,
            "meeting_decisions": decisions.height,
            "returned_rows_without_decision": lists.rows_without_decision,
            "packs": dg.MetadataValue.path(str(folder)),
            "files": len(written),
        }
    )


@dg.asset(partitions_def=PARTITIONS, group_name=LISTS, kinds={"duckdb", "html"}, deps=["locality_lists"])
@apart
def needs_analysis(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """The partnership's needs analysis, with no personal data and every count under 5
    suppressed (with secondary suppression): families and children with each need by locality
    and ward, the needs that occur together, the last 12 months by month, and the meetings'
    decisions, as HTML and CSV under `<out>/needs_analysis/<month>/`."""
    with settings.warehouse(read_only=True) as con:
        analysis = build_needs_analysis(con, settings.reference_month, settings.reference_date, settings.registry(), programme(settings.council_programme))
    folder = settings.output / "needs_analysis" / settings.reference_month
    written = write_needs_analysis(analysis, folder)
    context.log.info(f"needs_analysis: {len(written)} files in {folder}")
    return dg.MaterializeResult(
        metadata={"needs_analysis": dg.MetadataValue.path(str(folder / "needs_analysis.html")), "files": len(written)}
    )


LIST_ASSETS = [locality_lists, needs_analysis]
