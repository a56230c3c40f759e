"""Asset checks on the raw tables. Blocking checks stop downstream assets when a
source is unusable (missing, empty, failing its contract, rows unaccounted for),
with the reason in the check's description and metadata (counts and names of
columns and files only, never values)."""


from collections.abc import Iterator

import dagster as dg

from data_contracts import Contract, load_contracts
from expectations import write_offline_index
from expectations.worker import validated
from pipelines.apart import apart
from pipelines.resources import EarlyhelpSettings

MEETS_CONTRACT = "meets_contract"
ROWS_ACCOUNTED = "rows_accounted_for"
RECEIVED = "source_received"
QUARANTINE_SHARE = "quarantine_share"
#: Above this share of quarantined rows a source is flagged for the partner's attention.
QUARANTINE_WARNING_SHARE = 0.05


def _file_rows(settings: EarlyhelpSettings, source: str) -> list[dict]:
    with settings.warehouse(read_only=True) as con:
        cursor = con.execute(
            "SELECT file, status, received, loaded, quarantined, superseded, coalesce(expired, 0) AS expired, message FROM landed_files WHERE source = ? ORDER BY file",
            [source],
        )
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _checks_for(contract: Contract) -> dg.AssetChecksDefinition:
    """The source's four checks, run as one step (any one of them may still be run alone): the
    three counts read `landed_files` once between them, and the suite runs after them, so its
    failure leaves their results given. As four steps, each started and recorded by Dagster on its
    own, the counts were thirty of a run's 66 steps, at 84 ms each for milliseconds of work; a
    1.2M county's month of ingestion with its checks took 20.7 rather than 19.9 s (medians of
    three, alternating)."""
    asset = dg.AssetKey(contract.raw_table)
    must_arrive = not contract.may_be_empty
    specs = [
        dg.AssetCheckSpec(MEETS_CONTRACT, asset=asset, blocking=True, description=f"Every row the table holds has passed the Great Expectations suite generated from {contract.path.name}: the rows of files new since its last passing result are validated, as one batch (the whole table the first time, or after a change to the suite or contract, or a failure)."),
        dg.AssetCheckSpec(ROWS_ACCOUNTED, asset=asset, blocking=True, description="For every file, rows received = rows loaded + rows quarantined (a duplicate file is recorded, not loaded); the table holds every loaded row not replaced by a later one or removed under retention."),
        dg.AssetCheckSpec(RECEIVED, asset=asset, blocking=must_arrive, description="The source sent at least one file that could be read, and not every file was refused."),
        dg.AssetCheckSpec(QUARANTINE_SHARE, asset=asset, description=f"Warns when more than {QUARANTINE_WARNING_SHARE:.0%} of received rows were quarantined."),
    ]

    @apart(key=contract.source)
    def meets_contract(context: dg.AssetCheckExecutionContext, settings: EarlyhelpSettings) -> dg.AssetCheckResult:
        project = settings.suites_project
        with settings.warehouse(read_only=True) as con:
            # the suite started as the table was written (`start_validating`), or run now
            result, validated_now = validated(project, settings.contracts()[contract.source], con, settings.read_every_file)
        if validated_now:
            context.log.info(f"{contract.source}: {result.validated_rows:,} rows of {result.validated_files} of the table's {len(result.files)} files validated against its contract suite")
        else:
            # every row the table holds was validated under this suite: a source that sent
            # nothing new this month (the gazetteer, say) is not validated again
            context.log.info(f"{contract.source}: every loaded file's rows are as validated at {result.validated_at}; that result stands")
        index = write_offline_index(project, result)
        return dg.AssetCheckResult(
            asset_key=asset, check_name=MEETS_CONTRACT,
            passed=result.success,
            description=None if result.success else "Failed: " + "; ".join(result.failed),
            metadata={
                "expectations": result.evaluated, "failed": dg.MetadataValue.json(result.failed),
                "data_docs": dg.MetadataValue.path(str(index)), "great_expectations_site": result.data_docs or "",
                "validated_at": result.validated_at, "validated_this_run": validated_now,
                "files_validated_this_run": result.validated_files if validated_now else 0,
                "rows_validated_this_run": result.validated_rows if validated_now else 0,
            },
        )

    def rows_accounted(files: list[dict], current: int) -> dg.AssetCheckResult:
        broken = [f["file"] for f in files if f["status"] != "duplicate" and f["received"] != f["loaded"] + f["quarantined"]]
        expected = sum(f["loaded"] - f["superseded"] - f["expired"] for f in files if f["status"] != "duplicate")
        passed = not broken and current == expected
        return dg.AssetCheckResult(
            asset_key=asset, check_name=ROWS_ACCOUNTED,
            passed=passed,
            description=None if passed else f"Rows not accounted for in {broken or 'the current table'}",
            metadata={"files_checked": len(files), "current_rows": current, "expected_current_rows": expected},
        )

    def received(files: list[dict]) -> dg.AssetCheckResult:
        usable = [f for f in files if f["status"] == "loaded" and f["loaded"] > 0]
        refused = {f["file"]: f["message"] for f in files if f["status"] == "refused"}
        if not files:
            reason = f"No file in the landing folder's {contract.source}/ folder"
        elif not usable:
            reason = f"None of the {len(files)} files loaded a row"
        else:
            reason = None
        return dg.AssetCheckResult(
            asset_key=asset, check_name=RECEIVED,
            passed=reason is None or not must_arrive,
            severity=dg.AssetCheckSeverity.ERROR if must_arrive else dg.AssetCheckSeverity.WARN,
            description=reason,
            metadata={"files": len(files), "files_loaded": len(usable), "refused": dg.MetadataValue.json(refused)},
        )

    def quarantine_share(files: list[dict]) -> dg.AssetCheckResult:
        files = [f for f in files if f["status"] != "duplicate"]
        received = sum(f["received"] for f in files)
        quarantined = sum(f["quarantined"] for f in files)
        share = quarantined / received if received else 0.0
        return dg.AssetCheckResult(
            asset_key=asset, check_name=QUARANTINE_SHARE,
            passed=share <= QUARANTINE_WARNING_SHARE,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"rows_received": received, "rows_quarantined": quarantined, "share": round(share, 4)},
        )

    @dg.multi_asset_check(specs=specs, name=f"{contract.raw_table}_checks", can_subset=True)
    def checks(context: dg.AssetCheckExecutionContext, settings: EarlyhelpSettings) -> Iterator[dg.AssetCheckResult]:
        selected = {key.name for key in context.selected_asset_check_keys}
        if selected - {MEETS_CONTRACT}:
            files = _file_rows(settings, contract.source)
            if ROWS_ACCOUNTED in selected:
                with settings.warehouse(read_only=True) as con:
                    current = con.execute(f'SELECT count(*) FROM "{contract.raw_table}"').fetchall()[0][0]
                yield rows_accounted(files, current)
            if RECEIVED in selected:
                yield received(files)
            if QUARANTINE_SHARE in selected:
                yield quarantine_share(files)
        if MEETS_CONTRACT in selected:
            yield meets_contract(context, settings=settings)

    return checks


RAW_CHECKS = [_checks_for(contract) for contract in load_contracts().values()]
