"""Great Expectations suites generated from the data contracts, and their validation.

Row-level rules (formats, codes, check digits) are enforced in ingestion, where
a failing row is quarantined with its reason. The suites here validate each
loaded table as a whole, from the same contract, as the second line: required
columns complete, codes in their sets, shapes as declared, numbers in range,
and the table not empty where a source must send data. Their results are
Dagster asset checks and Data Docs.

Results are asked for as BOOLEAN_ONLY, so no value from the data (a name, a
date of birth) ever reaches Data Docs, logs or Dagster metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from data_contracts import Contract

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

@dataclass
class SuiteResult:
    source: str
    success: bool
    evaluated: int
    failed: list[str] = field(default_factory=list)  # "expectation on column", never values
    data_docs: str | None = None


#: The least share of rows whose required, set-aside field still holds a value: below it, a
#: partner's extract has gone wrong as a whole rather than row by row.
SET_ASIDE_MOSTLY = 0.95


def suite_for(contract: Contract):
    """The expectation suite a contract implies, over the canonical (loaded) column names."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=f"{contract.source}_contract")
    E = gx.expectations
    if not contract.may_be_empty:
        suite.add_expectation(E.ExpectTableRowCountToBeBetween(min_value=1))
    suite.add_expectation(E.ExpectTableColumnsToMatchSet(column_set=[c.name for c in contract.columns] + ["_file", "_sha256", "_row"], exact_match=True))
    for column in contract.columns:
        name = column.name
        if column.required and column.set_aside:
            # a broken value was set aside and loads empty; most rows must still carry one
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=name, mostly=SET_ASIDE_MOSTLY))
        elif column.required:
            suite.add_expectation(E.ExpectColumnValuesToNotBeNull(column=name))
        if column.allowed_values is not None:
            suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=name, value_set=list(column.allowed_values)))
        if column.pattern is not None:
            suite.add_expectation(E.ExpectColumnValuesToMatchRegex(column=name, regex=column.pattern))
        if column.logical_type == "integer" and (column.minimum is not None or column.maximum is not None):
            suite.add_expectation(E.ExpectColumnValuesToBeBetween(column=name, min_value=column.minimum, max_value=column.maximum))
    return suite


class ContractValidator:
    """Runs contract suites against pandas frames in one file-backed GX project, building Data Docs."""

    def __init__(self, project_root: Path):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        project_root.mkdir(parents=True, exist_ok=True)
        self._gx = gx
        self.context = gx.get_context(mode="file", project_root_dir=str(project_root))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_or_update_pandas("earlyhelp_warehouse")

    def validate(self, contract: Contract, frame) -> SuiteResult:
        gx = self._gx
        name = contract.source
        try:
            asset = self.datasource.get_asset(name)
        except LookupError:
            asset = self.datasource.add_dataframe_asset(name=name)
        try:
            batch = asset.get_batch_definition("whole_table")
        except KeyError:
            batch = asset.add_batch_definition_whole_dataframe("whole_table")
        suite = self.context.suites.add_or_update(suite_for(contract))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}_contract", data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=f"{name}_contract",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "BOOLEAN_ONLY"},
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        failed, evaluated = [], 0
        for run in outcome.run_results.values():
            for result in run.results:
                evaluated += 1
                if not result.success:
                    config = result.expectation_config
                    column = config.kwargs.get("column")
                    failed.append(f"{config.type}" + (f" on {column}" if column else ""))
        sites = self.context.get_docs_sites_urls()
        return SuiteResult(
            source=name,
            success=bool(outcome.success),
            evaluated=evaluated,
            failed=failed,
            data_docs=sites[0]["site_url"] if sites else None,
        )
