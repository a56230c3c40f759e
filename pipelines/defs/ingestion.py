"""Ingestion: one asset per source's raw table. The logic lives in ingestion/; these
functions only wire it to the warehouse and Dagster."""

import dagster as dg
import polars as pl

from data_contracts import Contract, load_contracts
from expectations.worker import start_validating
from ingestion.load import previous_load, read_source, write_source
from pipelines.apart import apart
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from reports.partner_quality import partner_quality, write_partner_reports

INGESTION = "ingestion"


def _raw_asset(contract: Contract) -> dg.AssetsDefinition:
    @dg.asset(
        partitions_def=PARTITIONS,
        name=contract.raw_table,
        group_name=INGESTION,
        kinds={"duckdb", "polars"},
        description=(
            f"{contract.title}: every row of `<landing>/{contract.source}/` loaded through its data "
            f"contract ({contract.path.name} v{contract.version}), bad rows quarantined with reasons, "
            "later rows replacing earlier ones with the same natural key."
        ),
        metadata={"contract": dg.MetadataValue.path(str(contract.path)), "natural_key": ", ".join(contract.natural_key)},
    )
    @apart(key=contract.source)
    def raw_table(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
        today = settings.run_date
        # the council's own contract for this extract (on a deployment, its authority's)
        council_contract = settings.contracts()[contract.source]
        with settings.warehouse() as con:
            # files loaded before and unchanged are not read again (a monthly run reads its new month)
            previous = None if settings.read_every_file else previous_load(con, council_contract)
            result = read_source(council_contract, settings.landing, today=today, previous=previous)
            write_source(con, council_contract, result, today)
            summary, rows = result.summary(), result.loaded
            refused = {f.file: f.message for f in result.files if f.status == "refused"}
            ignored = sorted({c for f in result.files for c in f.ignored_columns})
            # the rows are in the warehouse: let go of them before the table is handed to its
            # contract suite, which is set going now, to run while the next sources load
            del result, previous
            start_validating(settings.suites_project, council_contract, con, settings.read_every_file)
        context.log.info(
            f"{contract.source}: {summary['files']} files, {summary['rows_received']:,} rows received, "
            f"{summary['rows_loaded']:,} loaded, {summary['rows_quarantined']:,} quarantined, "
            f"{summary['rows_superseded']:,} replaced by later files, {summary['rows_expired']:,} past retention; "
            f"{summary['files_read']} files read, the rest unchanged since the last run"
        )
        return dg.MaterializeResult(
            metadata={
                **summary,
                "refused_files": dg.MetadataValue.json(refused),
                "columns_not_in_contract": dg.MetadataValue.json(ignored),
                "dagster/row_count": rows,
            }
        )

    return raw_table


RAW_ASSETS = [_raw_asset(c) for c in load_contracts().values()]


@dg.asset(
    partitions_def=PARTITIONS,
    group_name=INGESTION,
    kinds={"duckdb", "html"},
    deps=[dg.AssetKey(c.raw_table) for c in load_contracts().values()],
)
def partner_quality_reports(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """For each source, the data-quality report to send back to its partner: files, rows
    quarantined and fields set aside by column and reason, the rows to correct, the trend;
    `<out>/partner_reports/<month>/<source>.html` and `.csv` (no value from any row)."""
    with settings.warehouse() as con:
        reports = partner_quality(con, settings.reference_month, list(settings.contracts()))
    folder = settings.output / "partner_reports" / settings.reference_month
    written = write_partner_reports(reports, settings.reference_month, folder)
    figures = {r.source: {"quarantined_rows": r.problems.filter(pl.col("kind") == "quarantined")["row"].len(), "fields_set_aside": r.problems.filter(pl.col("kind") == "set aside").height} for r in reports}
    by_reason = {r.source: {f"{k}: {c} {reason.split(' ', 1)[-1] if reason.startswith(c) else reason}": n for k, c, reason, n in r.by_reason.iter_rows()} for r in reports}
    return dg.MaterializeResult(
        metadata={
            "by_source": dg.MetadataValue.json(figures),
            "by_column_and_reason": dg.MetadataValue.json(by_reason),
            "reports": dg.MetadataValue.path(str(folder)),
            "files": len(written),
        }
    )
