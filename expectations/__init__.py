"""Great Expectations suites generated from the data contracts, and their validation.

Row-level rules (formats, codes, shapes, ranges, check digits) are enforced in
ingestion, where a failing row is quarantined with its reason: each is checked
once, there. The suites here validate what only the loaded table as a whole can
show, from the same contract: the table not empty where a source must send data,
its columns exactly the contract's, required columns complete, and a required
field set aside in no more than a few rows (a partner's extract gone wrong as a
whole rather than row by row). Their results are Dagster asset checks and Data Docs.

Each of those is a fact of rows or of an extract, so a file's rows validated once under a
suite need not be again: a run validates, as one batch, the rows of the files its table holds
that the last passing result under the same suite did not (`files_to_validate`); the first
run, or one after a change to the suite or the contract, or after a failure, validates the
whole table. A month's run at 1.2M residents validated the ten school months again for the
one new.

Results are asked for as BASIC with no sample of unexpected values: counts and shares
(rows checked, rows failing, the share) reach Data Docs, and no value from the data (a name,
a date of birth) ever does, nor logs or Dagster metadata.

Great Expectations' own Data Docs index draws its table with scripts from public CDNs, so on
a council machine without internet it is empty, and building it walks every validation result
ever stored (slower month after month). Only each validation's own page is built;
`write_offline_index` writes the index (`great_expectations/index.html`), which needs nothing
from outside: every source's latest result, each expectation with what was observed, and a
link to Great Expectations' page.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from data_contracts import Contract

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

@dataclass
class SuiteResult:
    source: str
    success: bool
    evaluated: int
    failed: list[str] = field(default_factory=list)  # "expectation on column", never values
    data_docs: str | None = None  # Great Expectations' page of this validation (file URI)
    observed: list[dict] = field(default_factory=list)  # expectation, column, passed, observed: counts and shares only
    page: str | None = None  # Great Expectations' page of this validation, relative to the project folder
    validated_at: str = ""
    inputs: str = ""  # `validation_inputs`: the suite, the contract and Great Expectations' version it was under
    files: dict[str, str] = field(default_factory=dict)  # the table's files (name: reading, `file_readings`) this result speaks for: those it validated and, where it validated only the new, those the last result spoke for
    validated_files: int = 0  # of them, the files whose rows this validation read
    validated_rows: int = 0  # and their rows


#: A suite's latest results, and their pages, that Great Expectations keeps (`ContractValidator._keep_latest_results`).
RESULTS_KEPT = 12

#: What Great Expectations is asked to return: counts and shares, never a sample of the values.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 0, "include_unexpected_rows": False}


#: The least share of rows whose required, set-aside field still holds a value: below it, a
#: partner's extract has gone wrong as a whole rather than row by row.
SET_ASIDE_MOSTLY = 0.95
#: How many rows of a batch may lack such a field however few rows it has: a month validates
#: only the rows of its new files, and a small source's month may be a few dozen rows, where two
#: postcodes keyed wrong (one in 120 is, spec v2) are more than 5%. So few slips say nothing of
#: the extract as a whole; from 100 rows, 5% allows as many, and a batch of no more rows may lack
#: the field in every one.
SET_ASIDE_FEW = 5


def set_aside_mostly(rows: int | None) -> float:
    """The share of a batch of `rows` rows that must hold a required, set-aside field's value
    (None: the share the contract states, SET_ASIDE_MOSTLY)."""
    if not rows:
        return SET_ASIDE_MOSTLY
    return max(0.0, min(SET_ASIDE_MOSTLY, 1 - SET_ASIDE_FEW / rows))


def suite_plan(contract: Contract, rows: int | None = None) -> list[tuple[str, dict]]:
    """The expectations a contract implies, as (Great Expectations class, arguments) over the
    canonical (loaded) column names, for a batch of `rows` rows (`set_aside_mostly`): plain data,
    so a suite can be known unchanged without building it."""
    plan: list[tuple[str, dict]] = []
    if not contract.may_be_empty:
        plan.append(("ExpectTableRowCountToBeBetween", {"min_value": 1}))
    plan.append(("ExpectTableColumnsToMatchSet", {"column_set": [c.name for c in contract.columns] + ["_file", "_sha256", "_row"], "exact_match": True}))
    for column in contract.columns:
        if column.required and column.set_aside:
            # a broken value was set aside and loads empty; most rows must still carry one
            plan.append(("ExpectColumnValuesToNotBeNull", {"column": column.name, "mostly": set_aside_mostly(rows)}))
        elif column.required:
            plan.append(("ExpectColumnValuesToNotBeNull", {"column": column.name}))
    # codes, shapes and ranges are not checked again here: ingestion checked every row against
    # them and quarantined each failure with its reason (at 1.2M residents, checking them again in
    # pandas was most of the suites' time)
    return plan


def suite_for(contract: Contract, rows: int | None = None):
    """The expectation suite a contract implies for a batch of `rows` rows (`suite_plan`), built in Great Expectations."""
    import great_expectations as gx

    # given whole, not added one by one: a suite of a name the project holds writes the stored
    # suite again at every `add_expectation` (91 writes for ten suites, a fifth of a month's suites)
    return gx.ExpectationSuite(
        name=f"{contract.source}_contract",
        expectations=[getattr(gx.expectations, expectation)(**arguments) for expectation, arguments in suite_plan(contract, rows)],
    )


def validation_inputs(contract: Contract) -> str:
    """What a validation's result rests on besides the rows: the suite, the contract the rows
    were loaded under (`ingestion.load.contract_digest`: a changed contract loads every file
    again) and Great Expectations' version. Under the same inputs a file's rows, once validated,
    give the same result again."""
    from importlib.metadata import version

    from ingestion.load import contract_digest

    text = json.dumps({"suite": suite_plan(contract), "set_aside_few": SET_ASIDE_FEW, "contract": contract_digest(contract), "great_expectations": version("great_expectations")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def file_readings(con, contract: Contract) -> dict[str, str]:
    """Each file the source's table holds rows of, with the reading its rows come from: its SHA-256
    and the day ingestion checked it (`landed_files`). A file read again on a later day, the same
    bytes, can hold rows and fields it did not before (a date then in the future, loaded now), so
    a suite's result speaks for a file's rows as one reading had them."""
    from warehouse import table_exists

    shas = con.execute(f'SELECT _file, any_value(_sha256) FROM "{contract.raw_table}" GROUP BY ALL').fetchall()
    recorded = shas and table_exists(con, "landed_files")
    days = dict(con.execute("SELECT file, validated_on FROM landed_files WHERE source = ?", [contract.source]).fetchall()) if recorded else {}
    return {name: f"{sha} {days[name]}" if days.get(name) else sha for name, sha in shas}


def files_to_validate(last: SuiteResult | None, inputs: str, loaded: dict[str, str]) -> dict[str, str] | None:
    """Of the files a source's table holds rows of (`loaded`, name: reading), those whose rows a
    run validates: None for the whole table (no earlier result under these inputs, or one that
    failed, or a table emptied since, whose row count is then the point); else those the last
    result does not speak for as read now, validated as one batch ({}: none, and the last result
    stands). Rows a later file replaced or retention removed leave the rest validated."""
    if last is None or not last.success or last.inputs != inputs:
        return None
    if not loaded:
        return {} if not last.files else None
    return {name: reading for name, reading in loaded.items() if last.files.get(name) != reading}


@dataclass
class TableValidation:
    """What a run validates of a source's loaded table (`what_to_validate`): the rows of the files
    `new` (None: every row; {}: none, and `last` stands), under `inputs`, the table holding `loaded`."""

    source: str
    table: str
    inputs: str
    loaded: dict[str, str]
    new: dict[str, str] | None
    last: SuiteResult | None

    @property
    def stands(self) -> bool:
        return self.new == {}

    def rows_sql(self) -> str:
        from warehouse import sql_literal

        rows = f'SELECT * FROM "{self.table}"'
        return rows if self.new is None else rows + f""" WHERE _file IN ({", ".join(sql_literal(name) for name in sorted(self.new))})"""

    def recorded(self, result: SuiteResult, rows: int) -> SuiteResult:
        """The suite's result on `rows_sql`'s `rows` rows, as it speaks for the table."""
        return replace(result, files=self.loaded, validated_files=len(self.loaded if self.new is None else self.new), validated_rows=rows)


def what_to_validate(project_root: Path, contract: Contract, con, every_file: bool = False) -> TableValidation:
    """What a run validates of the contract's loaded table in the warehouse `con` (every row
    where `every_file`), from the table's files and the source's latest result in `project_root`."""
    inputs = validation_inputs(contract)
    loaded = file_readings(con, contract)
    last = latest_result(project_root, contract.source)
    new = None if every_file else files_to_validate(last, inputs, loaded)
    return TableValidation(contract.source, contract.raw_table, inputs, loaded, new, last)


def latest_result(project_root: Path, source: str) -> SuiteResult | None:
    """The source's latest result recorded by `write_offline_index`, if any."""
    store = project_root / "results.json"
    recorded = json.loads(store.read_text()).get(source) if store.exists() else None
    if not recorded:
        return None
    fields = SuiteResult.__dataclass_fields__
    return SuiteResult(**{k: v for k, v in recorded.items() if k in fields})


def table_for_validation(relation):
    """A DuckDB relation as the Arrow table `frame_for_validation` makes its frame of."""
    table = relation.arrow()
    return table.read_all() if hasattr(table, "read_all") else table


def frame_for_validation(data):
    """A DuckDB relation (or its Arrow table, `table_for_validation`) as the pandas frame Great
    Expectations validates, its columns backed by Arrow: no copy of every string into a Python
    object (at 280,000 school rows, 0.1 s where `.df()` took 2.5 s), and the same observations
    (a test compares the two)."""
    import pandas as pd
    import pyarrow as pa

    table = data if isinstance(data, pa.Table) else table_for_validation(data)
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _no_batch_fingerprint() -> None:
    """Great Expectations fingerprints every pandas batch under 1 GB by hashing each of its cells,
    through Python for Arrow-backed columns: 95% of a suite's time on a 1.2M county's A&E table
    (8.2 of 8.6 s, py-spy), for a marker nothing here reads. What a result stands for is known
    from the files it validated (`SuiteResult.files`), so that hashing is switched off."""
    from great_expectations.execution_engine import pandas_execution_engine

    if hasattr(pandas_execution_engine, "HASH_THRESHOLD"):
        pandas_execution_engine.HASH_THRESHOLD = 0


@functools.cache
def _compile_templates_once() -> None:
    """Great Expectations makes a new Jinja environment for every view of every page it builds
    (`DefaultJinjaView.__init__`), so each validation's Data Docs page compiled its ~36 templates
    again (cProfile: most of the page's time). Every view's environment is given one bytecode
    cache held in memory for the process, so a template is compiled once a process; its source is
    part of its key, so a changed one is compiled again."""
    import jinja2
    from great_expectations.render.view.view import DefaultJinjaView

    class Compiled(jinja2.BytecodeCache):
        def __init__(self) -> None:
            self.code: dict[str, object] = {}

        def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            bucket.code = self.code.get(bucket.key)

        def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
            self.code[bucket.key] = bucket.code

    compiled = Compiled()
    made = DefaultJinjaView.__init__

    @functools.wraps(made)
    def init(view, *args, **kwargs) -> None:
        made(view, *args, **kwargs)
        view.env.bytecode_cache = compiled

    DefaultJinjaView.__init__ = init


class ContractValidator:
    """Runs contract suites against pandas frames in one file-backed GX project, building Data Docs."""

    def __init__(self, project_root: Path):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        _no_batch_fingerprint()
        _compile_templates_once()
        project_root.mkdir(parents=True, exist_ok=True)
        self.project_root = project_root
        self._gx = gx
        self.context = gx.get_context(mode="file", project_root_dir=str(project_root))
        if self.context.variables.config_variables_file_path:
            # Great Expectations reads and parses its config variables file (YAML, with its long
            # commented template) at every read of any of its settings: 593 times for ten suites, a
            # quarter of their time. Nothing here uses config variables, so the project names none,
            # and the context is opened again without that provider.
            self.context.variables.config_variables_file_path = None
            self.context.variables.save()
            self.context = gx.get_context(mode="file", project_root_dir=str(project_root))
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        self.datasource = self.context.data_sources.add_or_update_pandas("earlyhelp_warehouse")

    def validate(self, contract: Contract, frame, inputs: str = "") -> SuiteResult:
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
        suite = self.context.suites.add_or_update(suite_for(contract, len(frame)))
        definition = self.context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{name}_contract", data=batch, suite=suite)
        )
        checkpoint = self.context.checkpoints.add_or_update(
            gx.Checkpoint(name=f"{name}_contract", validation_definitions=[definition], actions=[], result_format=RESULT_FORMAT)
        )
        try:
            outcome = checkpoint.run(batch_parameters={"dataframe": frame})
        finally:
            self._let_go_of_batches()
        # this validation's page only: Great Expectations' own index walks every result ever stored
        # (slower run after run) and needs the internet to show; `write_offline_index` is the index
        from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

        self.context.build_data_docs(resource_identifiers=[*outcome.run_results, ExpectationSuiteIdentifier(name=suite.name)], build_index=False)
        failed, evaluated, observed = [], 0, []
        for run in outcome.run_results.values():
            for result in run.results:
                evaluated += 1
                config = result.expectation_config
                column = config.kwargs.get("column")
                if not result.success:
                    failed.append(f"{config.type}" + (f" on {column}" if column else ""))
                observed.append({"expectation": config.type, "column": column or "", "passed": bool(result.success), "observed": _observed(result.result)})
        results, site = self._folders(suite.name)
        self._keep_latest_results(results, site)
        pages = sorted(site.rglob("*.html"))
        return SuiteResult(
            source=name,
            success=bool(outcome.success),
            evaluated=evaluated,
            failed=failed,
            data_docs=pages[-1].as_uri() if pages else None,
            observed=observed,
            page=pages[-1].relative_to(self.project_root).as_posix() if pages else None,
            validated_at=dt.datetime.now().replace(microsecond=0).isoformat(sep=" "),
            inputs=inputs,
        )

    def _folders(self, suite: str) -> tuple[Path, Path]:
        """Where Great Expectations keeps a suite's results, and their Data Docs pages."""
        uncommitted = self.project_root / "gx" / "uncommitted"
        return uncommitted / "validations" / suite, uncommitted / "data_docs" / "local_site" / "validations" / suite

    @staticmethod
    def _keep_latest_results(*folders: Path) -> None:
        """Great Expectations keeps a suite's latest RESULTS_KEPT results and their pages: building a
        page, it walks its whole store of results and its whole site of pages, so with every one
        kept each run's suites took longer than the last (ten suites 3.5 -> 4.9 s over 27 runs of
        one project). What a run shows is the latest (`results.json`, the offline index), and
        every run's figures stay in `data_quality_history`."""
        for held in folders:
            # <run name>/<run time>/: run times are written YYYYMMDDTHHMMSS.ffffffZ, so sort as they ran
            runs = sorted((run for run in held.glob("*/*") if run.is_dir()), key=lambda run: run.name)
            for old in runs[:-RESULTS_KEPT]:
                shutil.rmtree(old)

    def _let_go_of_batches(self) -> None:
        """Great Expectations' pandas engine keeps every batch it was given, frame and all, for as
        long as its datasource lives, which here is the process: one run in one process held each
        source's table after its suite (1.4 GB of a 1.2M county's raw tables, carried through
        linkage and families). Nothing reads a batch again once validated."""
        batches = self.datasource.get_execution_engine().batch_manager
        batches.reset_batch_cache()
        batches.batch_data_cache.clear()


def _observed(result: dict) -> str:
    """What a result observed, as counts and shares: never a value from a row."""
    value = result.get("observed_value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, list):
        return f"{len(value)} columns"
    if "unexpected_count" in result:
        checked = result.get("element_count") or 0
        share = result.get("unexpected_percent") or 0.0
        return f"{result['unexpected_count']:,} of {checked:,} rows failing ({share:.2f}%)"
    return ""


def write_offline_index(project_root: Path, result: SuiteResult) -> Path:
    """Record `result` and write `index.html` over every source's latest result: a page that
    opens without internet (Great Expectations' own index draws its table with remote scripts)."""
    from reports import page, render
    from warehouse import write_text_atomically

    store = project_root / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    results[result.source] = asdict(result)
    write_text_atomically(json.dumps(results, indent=1, sort_keys=True), store)
    index = project_root / "index.html"
    write_text_atomically(page("Data contracts: Great Expectations results", render("data_docs_index.html.j2", results=[results[k] for k in sorted(results)])), index)
    return index
