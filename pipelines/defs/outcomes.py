"""Dagster asset tracking allocated families' needs month by month until they last."""

import dagster as dg
import polars as pl

from reports import markdown_page
from models.outcomes import (
    SUSTAIN_MONTHS,
    early_help_closures,
    identification_months,
    needs_by_month,
    programme_report,
    track_outcomes,
)
from models.lists import linked_cases
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from warehouse import (
    read_table,
    record_audit,
    replace_tables,
    write_atomically,
    write_text_atomically,
)

OUTCOMES = "outcomes"


@dg.asset(partitions_def=PARTITIONS, group_name=OUTCOMES, kinds={"duckdb", "html"}, deps=["locality_lists"])
def family_outcomes(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """For every family a meeting allocated: each need identified on its list, checked at every
    month end since (improved or not, sustained for 6 months), the early help case's closure,
    and the claim status, with the source rows behind each need (`claim_evidence`). Writes the
    programme report and the claim evidence under `<out>/outcomes/<month>/`."""
    registry = settings.registry()
    with settings.warehouse() as con:
        allocated = read_table(con, "allocated_families")
        allocations = identification_months(allocated, read_table(con, "list_audit")) if allocated is not None else None
        if allocations is None or allocations.is_empty():
            allocations = pl.DataFrame(schema={"family_ref": pl.String, "meeting_date": pl.Date, "lead_agency": pl.String, "identified_month": pl.String, "locality": pl.String, "listed_needs": pl.List(pl.String)})
        history = needs_by_month(con, registry, settings.council_programme, allocations, settings.reference_month, read_table(con, "list_audit_members"))
        closures = early_help_closures(linked_cases(con), history.members, allocations)
        tracking = track_outcomes(allocations, history.needs, closures, settings.reference_month)
        evidence = history.evidence.join(tracking.needs.select("family_ref", "need", "status", "months_sustained"), on=["family_ref", "need"])
        replace_tables(
            con,
            {
                "outcome_months": tracking.monthly,
                "need_outcomes": tracking.needs,
                "family_outcomes": tracking.families,
                "programme_report": tracking.report,
                "claim_evidence": evidence,
            },
        )
    folder = settings.output / "outcomes" / settings.reference_month
    report = programme_report(tracking, settings.reference_month, settings.council_programme, payment_claims=settings.payment_claims)
    write_text_atomically(report, folder / "programme_report.md")
    write_text_atomically(markdown_page(report, f"earlyhelp outcomes to {settings.reference_month}"), folder / "programme_report.html")
    write_atomically(folder / "claim_evidence.csv", evidence.drop("person_id").write_csv)
    with settings.warehouse() as con:
        record_audit(con, "outcomes report written", f"{folder}: {tracking.families.height} families, {evidence.height} evidence rows", context.run_id)
    statuses = dict(tracking.families.group_by("claim_status").len().sort("claim_status").iter_rows())
    context.log.info(f"family_outcomes: {tracking.families.height:,} allocated families tracked over {len(history.needs)} months")
    return dg.MaterializeResult(
        metadata={
            "families_tracked": tracking.families.height,
            "needs_identified": tracking.needs.height,
            "needs_sustained": int((tracking.needs["status"] == "sustained").sum()) if tracking.needs.height else 0,
            "claim_status": dg.MetadataValue.json(statuses),
            "months_recomputed": len(history.needs),
            "sustain_months": SUSTAIN_MONTHS,
            "programme_report": dg.MetadataValue.path(str(folder / "programme_report.html")),
        }
    )


OUTCOME_ASSETS = [family_outcomes]
