"""Dagster asset writing the IG pack and the ATRS record for the run's month."""

import dagster as dg
import polars as pl

from governance.atrs import atrs_record
from governance.dpia import RunConfiguration, dpia_sections, safeguards
from governance.ig_pack import ig_pack
from governance.retention import delete_landing_files, expire_derived, expire_exports, expire_monthly_folders, landing_past_retention
from governance.usage import field_uses
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from reports import markdown_page
from warehouse import read_table, record_audit, write_text_atomically

GOVERNANCE = "governance"


def _source_counts(con, contracts) -> dict[str, dict[str, int]]:
    files = read_table(con, "landed_files")
    counts: dict[str, dict[str, int]] = {}
    for contract in contracts.values():
        mine = files.filter((pl.col("source") == contract.source) & (pl.col("status") != "duplicate")) if files is not None else None
        held = read_table(con, contract.raw_table, "count(*) AS n")
        counts[contract.source] = {
            "received": int(mine["received"].sum()) if mine is not None else 0,
            "loaded": int(mine["loaded"].sum()) if mine is not None else 0,
            "quarantined": int(mine["quarantined"].sum()) if mine is not None else 0,
            "expired": int(mine["expired"].fill_null(0).sum()) if mine is not None and "expired" in mine.columns else 0,
            "current": int(held["n"][0]) if held is not None else 0,
        }
    return counts


@dg.asset(partitions_def=PARTITIONS, group_name=GOVERNANCE, kinds={"duckdb"}, deps=["family_outcomes", "scorecard_model"])
def retention(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """Derived rows past their retention removed (score history, list audit, outcomes, claim
    evidence), month folders of packs and outcomes reports as old, old subject access exports
    removed, and landing files whose every row is past
    retention reported (deleted only when the council switches it on); counts in retention_log."""
    today = settings.run_date
    with settings.warehouse() as con:
        removed = expire_derived(con, today, settings.derived_retention_years)
        stale = landing_past_retention(con)
        exports = expire_exports(settings.output / "subject_access", today, settings.subject_access_retention_days)
        months = {
            folder: expire_monthly_folders(settings.output / folder, today, settings.derived_retention_years) for folder in ("packs", "outcomes")
        }
        deleted = delete_landing_files(settings.landing, stale) if settings.delete_expired_landing else 0
        record_audit(
            con, "retention applied",
            f"derived rows removed: {sum(removed.values())}; subject access exports removed: {len(exports)}; "
            f"month folders removed: {', '.join(f'{k} {len(v)}' for k, v in months.items())}; "
            f"landing files past retention: {len(stale)} ({deleted} deleted)", context.run_id,
        )
    if stale and not deleted:
        context.log.warning(f"retention: {len(stale)} landing files hold only rows past retention; the council decides whether to delete them (EARLYHELP_DELETE_EXPIRED_LANDING=1)")
    return dg.MaterializeResult(
        metadata={
            "derived_rows_removed": dg.MetadataValue.json(removed),
            "subject_access_exports_removed": len(exports),
            "month_folders_removed": dg.MetadataValue.json(months),
            "landing_files_past_retention": dg.MetadataValue.json([f"{s}/{f}" for s, f in stale]),
            "landing_files_deleted": deleted,
        }
    )


def run_configuration(con, settings: EarlyhelpSettings) -> RunConfiguration:
    """How this month's lists were made (their audit entry) and what the meetings have recorded."""
    audit = read_table(con, "list_audit")
    mine = audit.filter(pl.col("month") == settings.reference_month) if audit is not None else None
    decisions = read_table(con, "meeting_decisions")
    latest = decisions.sort("meeting_date").group_by("family_ref").agg(pl.col("decision").last()) if decisions is not None else None
    return RunConfiguration.from_audit(
        mine["configuration"][0] if mine is not None and mine.height else None,
        programme=settings.council_programme,
        **({"council": settings.authority.name, "shared_deployment": True} if settings.authority is not None else {}),
        decisions_recorded=decisions.height if decisions is not None else 0,
        recorders=decisions.filter(~pl.col("recorded_by").str.starts_with("not recorded"))["recorded_by"].n_unique() if decisions is not None else 0,
        consent_declined=latest.filter(pl.col("decision") == "CONSENT_DECLINED").height if latest is not None else 0,
        derived_retention_years=settings.derived_retention_years,
        subject_access_retention_days=settings.subject_access_retention_days,
    )


@dg.asset(partitions_def=PARTITIONS, group_name=GOVERNANCE, kinds={"html"}, deps=["family_outcomes", "scorecard_model", "retention"])
def governance_pack(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """The IG pack (every source's owner, purpose, lawful basis, agreement, retention, and each
    field's classification and uses, with unused fields flagged) and the Algorithmic
    Transparency Recording Standard record, under `<out>/governance/`."""
    contracts, registry = settings.contracts(), settings.registry()
    with settings.warehouse() as con:
        counts = _source_counts(con, contracts)
        scores = read_table(con, "family_scores", "count(*) AS families, count(*) FILTER (WHERE eligible) AS eligible")
        listed = read_table(con, "locality_lists", "locality")
        lists = listed.group_by("locality").len("n").sort("locality") if listed is not None else None
        received = sum(c["received"] for c in counts.values())
        run = {
            "month": settings.reference_month,
            "families": int(scores["families"][0]) if scores is not None else "-",
            "eligible": int(scores["eligible"][0]) if scores is not None else "-",
            "listed": int(lists["n"].sum()) if lists is not None else "-",
            "by_locality": ", ".join(f"{loc} {n}" for loc, n in lists.iter_rows()) if lists is not None else "-",
            "rows": {source: c["current"] for source, c in counts.items()},
            "quarantined_share": f"{sum(c['quarantined'] for c in counts.values()) / received:.2%}" if received else "-",
        }
        card_path = settings.output / "model_card.md"
        folder = settings.output / "governance"
        configuration = run_configuration(con, settings)
        pack = ig_pack(contracts, registry, counts, settings.run_date, dpia_sections(contracts, configuration))
        record = atrs_record(
            contracts, registry, settings.council_programme, run, card_path.read_text() if card_path.exists() else None, settings.run_date, safeguards(configuration)
        )
        write_text_atomically(pack, folder / "ig_pack.md")
        write_text_atomically(markdown_page(pack, "earlyhelp IG pack"), folder / "ig_pack.html")
        write_text_atomically(record, folder / "atrs_record.md")
        write_text_atomically(markdown_page(record, "earlyhelp ATRS record"), folder / "atrs_record.html")
        record_audit(con, "governance pack written", f"{folder}: ig_pack, atrs_record for {settings.reference_month}", context.run_id)
    unused = [f"{u.source}.{u.field}" for u in field_uses(contracts, registry) if u.unused]
    context.log.info(f"governance_pack: IG pack and ATRS record in {folder}; {len(unused)} fields flagged for removal")
    return dg.MaterializeResult(
        metadata={
            "ig_pack": dg.MetadataValue.path(str(folder / "ig_pack.html")),
            "atrs_record": dg.MetadataValue.path(str(folder / "atrs_record.html")),
            "fields_flagged_for_removal": dg.MetadataValue.json(unused),
        }
    )


GOVERNANCE_ASSETS = [retention, governance_pack]
