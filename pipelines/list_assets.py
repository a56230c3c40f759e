"""Dagster asset for the monthly locality lists and their packs, with an audit of every list produced."""

import datetime as dt
import hashlib

import dagster as dg
import polars as pl

from features.calendar import previous_month
from models.lists import ListSettings, build_lists, case_flags, family_addresses, linked_cases
from reports.packs import write_packs
from pipelines.partitions import MONTHS
from pipelines.resources import EarlyhelpSettings
from pipelines.score_assets import (
    MODEL_SCORES,
    family_scores,
    registry_for,
    scorecard_model,
)
from warehouse import read_table, record_audit, replace_tables, who_ran
from rules import programme

LISTS = "lists"


class ListConfig(dg.Config):
    include_already_known: bool = True  # families open to children's social care: shown, flagged
    no_further_action_months: int = 6  # after NO_FURTHER_ACTION, not relisted this long unless a new event
    order_by: str = "score"  # "model": order within each list by the scorecard model (off unless it earns its place)


@dg.asset(partitions_def=MONTHS, group_name=LISTS, kinds={"duckdb", "html"}, deps=[family_scores, scorecard_model])
def locality_lists(context: dg.AssetExecutionContext, config: ListConfig, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """One list per locality for the reference month: eligible families ranked, with members,
    needs, score and reasons, and flags; packs (HTML, XLSX, CSV) and a summary under
    `<out>/packs/<month>/`; every list recorded in `list_audit`."""
    with settings.warehouse() as con:
        members = con.sql("SELECT * FROM family_members").pl()
        records = con.sql("SELECT record_key, address, address_date, postcode, house_number FROM person_records").pl()
        links = con.sql("SELECT record_key, person_id FROM person_links").pl()
        cases = linked_cases(con)
        if config.order_by not in ("score", "model"):
            raise ValueError(f"order_by must be 'score' or 'model', not {config.order_by!r}")
        model_scores = read_table(con, MODEL_SCORES) if config.order_by == "model" else None
        audit = read_table(con, "list_audit")
        previous = audit.filter(pl.col("month") == previous_month(settings.reference_month)) if audit is not None else None
        result = build_lists(
            con.sql("SELECT * FROM family_scores").pl(),
            members,
            family_addresses(records, links, members),
            con.sql("SELECT postcode, ward, locality FROM raw_postcode_localities").pl(),
            case_flags(cases, members, settings.reference_date, ListSettings().step_down_months),
            _scores_of(read_table(con, "family_scores_history"), previous_month(settings.reference_month)),
            previous,
            read_table(con, "raw_meeting_outcomes"),
            settings.reference_date,
            ListSettings(include_already_known=config.include_already_known, no_further_action_months=config.no_further_action_months, order_by=config.order_by),
            model_scores,
        )
        ordered_by = config.order_by if config.order_by != "model" or model_scores is not None else "score (no model trained this month)"
        if ordered_by != config.order_by:
            context.log.warning("locality_lists: order_by=model, but the scorecard model could not be trained this month; ordered by score")
        registry = registry_for(settings)
        configuration = f"programme={settings.programme}; registry_sha256={hashlib.sha256(registry.path.read_bytes()).hexdigest()[:16]}; include_already_known={config.include_already_known}; ordered_by={ordered_by}"
        entry = result.lists.select(
            pl.lit(settings.reference_month).alias("month"), "locality", "family_ref", "rank", "needs",
            pl.lit(context.run_id).alias("run_id"),
            pl.lit(dt.datetime.now().replace(microsecond=0)).alias("produced_at"),
            pl.lit(configuration).alias("configuration"),
            pl.lit(who_ran()).alias("run_by"),
        )
        kept = audit.filter(pl.col("month") != settings.reference_month) if audit is not None else None
        # who was on each list, so outcomes are tracked for the people the meeting saw
        shown = read_table(con, "list_audit_members")
        shown_now = result.members.select(pl.lit(settings.reference_month).alias("month"), "family_ref", "person_id")
        shown_kept = shown.filter(pl.col("month") != settings.reference_month) if shown is not None else None
        replace_tables(
            con,
            {
                "locality_lists": result.lists,
                "locality_list_members": result.members,
                "allocated_families": result.allocated,
                "decision_discrepancies": result.discrepancies,
                "list_audit": pl.concat([kept, entry], how="diagonal_relaxed") if kept is not None else entry,
                "list_audit_members": pl.concat([shown_kept, shown_now]) if shown_kept is not None else shown_now,
            },
        )
    folder = settings.output / "packs" / settings.reference_month
    written = write_packs(result.lists, result.members, settings.reference_month, folder, result.unplaced, programme(settings.programme))
    with settings.warehouse() as con:
        record_audit(con, "locality packs written", f"{folder}: {len(written)} files, {result.lists.height} families for {settings.reference_month}", context.run_id)
    per_locality = dict(result.lists.group_by("locality").len().sort("locality").iter_rows())
    context.log.info(f"locality_lists: {result.lists.height:,} families across {len(per_locality)} localities; packs in {folder}")
    return dg.MaterializeResult(
        metadata={
            "families_listed": result.lists.height,
            "ordered_by": ordered_by,
            "families_by_locality": dg.MetadataValue.json(per_locality),
            "eligible_without_locality": result.unplaced,
            "allocated_not_relisted": result.allocated.height,
            "decision_discrepancies": result.discrepancies.height,
            "packs": dg.MetadataValue.path(str(folder)),
            "files": len(written),
        }
    )


def _scores_of(history: pl.DataFrame | None, month: str) -> pl.DataFrame | None:
    return history.filter(pl.col("month") == month) if history is not None else None


LIST_ASSETS = [locality_lists]
