"""Resources: where the landing folder, the outputs and the warehouse are, for one run; on a
deployment serving several councils, the run's authority's (from its partition), never another's."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
from pydantic import PrivateAttr

from data_contracts import Contract, load_contracts
from features import calendar
from features.registry import Registry, load_registry
from governance.authorities import Authority
from governance.retention import DERIVED_RETENTION_YEARS, SUBJECT_ACCESS_RETENTION_DAYS
from pipelines import steps_apart_from_environment
from pipelines.partitions import AUTHORITIES, month_and_authority
from rules import DEFAULT_PROGRAMME
from warehouse import WAREHOUSE_FILE, HeldWarehouse, RunLock, open_warehouse


class EarlyhelpSettings(dg.ConfigurableResource):
    """The landing folder a run reads, the folder it writes, and the reference month."""

    landing_dir: str
    output_dir: str
    month: str = ""  # YYYY-MM, the reference month; a partitioned run's partition wins
    registry_path: str = ""  # a council's own indicator registry; blank for the packaged one
    programme: str = DEFAULT_PROGRAMME  # a name in rules.PROGRAMMES
    today: str = ""  # YYYY-MM-DD the run counts as today (retention, dates in the future); blank: the real date
    derived_retention_years: float = DERIVED_RETENTION_YEARS  # score history, list audit, outcomes, claim evidence
    subject_access_retention_days: int = SUBJECT_ACCESS_RETENTION_DAYS
    delete_expired_landing: bool = False  # the council's switch: delete landing files whose every row is past retention
    # read and check every landing file again, not only those new since the last run, compare
    # every pair of profiles again, not only those touching a profile new since then, and match
    # every address line to the gazetteer again, not only those new since then
    read_every_file: bool = False
    # heavy steps run in child processes, so the run's process does not carry one step's memory
    # into the next (pipelines/apart.py): less memory, more time; off by default
    steps_apart: bool = False
    # Supporting Families money moved into the Children and Families Grant (April 2025) with no
    # payment by results: outcomes are reported against the framework, and claims only where a
    # council says it still makes them
    payment_claims: bool = False

    def registry(self) -> Registry:
        """The council's own indicator registry when one is configured, else the packaged one."""
        if self._authority is not None:
            return load_registry(self._authority.registry)
        return load_registry(self.registry_path or None)

    def contracts(self) -> dict[str, Contract]:
        """The data contracts this council receives its extracts under, by source."""
        return load_contracts(self._authority.contracts) if self._authority is not None else load_contracts()

    @property
    def council_programme(self) -> str:
        """The programme the council runs under: its authority's on a deployment, else the configured one."""
        return self._authority.programme if self._authority is not None else self.programme

    @property
    def authority(self) -> Authority | None:
        """The council this run is for on a deployment serving several; None for a single council."""
        return self._authority

    @property
    def run_date(self) -> dt.date:
        """Today, or the configured day: reproducing a past run, or tests on a fixed county."""
        return dt.date.fromisoformat(self.today) if self.today else dt.date.today()

    _partition_month: str | None = PrivateAttr(default=None)
    _authority: Authority | None = PrivateAttr(default=None)
    _lock: RunLock | None = PrivateAttr(default=None)
    _held: HeldWarehouse | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # a run of one monthly partition (schedule, sensor, backfill, `earlyhelp run`) is for that
        # month, and on a deployment for that partition's authority: its folders, contracts, registry
        run = context.dagster_run
        month, authority = month_and_authority(dict(run.tags)) if run is not None else (None, None)
        self._partition_month = month
        if AUTHORITIES:
            if authority not in AUTHORITIES:
                raise ValueError("a run on a deployment serving several councils is for one authority: run an authority's partition")
            self._authority = AUTHORITIES[authority]
        # one run at a time on a warehouse, however it was started: a second waits, then refuses
        if run is not None:
            self._lock = RunLock(self.output, run.run_id).acquire()
            if self._lock.left_by:
                from pipelines.automation import audit_unfinished_run

                try:
                    audit_unfinished_run(context.instance, self._lock.left_by, run.run_id, self)
                except BaseException:
                    self._lock.release()
                    self._lock = None
                    raise
            # the run's steps share the warehouse opened once (`HeldWarehouse`); steps run apart
            # open it in their own processes, so it is not held for them
            if not self.steps_apart:
                try:
                    self._held = HeldWarehouse(self.warehouse_path)
                except BaseException:
                    self._lock.release()
                    self._lock = None
                    raise
        if self.steps_apart:
            from pipelines.apart import start_children

            start_children()
        if context.log is not None:
            context.log.info("heavy steps run in child processes of their own" if self.steps_apart else "every step runs in the run's own process")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            if self._held is not None:
                self._held.close()
                self._held = None
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    @property
    def reference_month(self) -> str:
        """YYYY-MM: the run's partition, else the configured month."""
        month = self._partition_month or self.month
        if not month:
            raise ValueError("no reference month: run a monthly partition, or configure the settings' month")
        return month

    @property
    def landing(self) -> Path:
        return self._authority.landing if self._authority is not None else Path(self.landing_dir)

    @property
    def output(self) -> Path:
        path = self._authority.output if self._authority is not None else Path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def warehouse_path(self) -> Path:
        return self.output / WAREHOUSE_FILE

    @property
    def suites_project(self) -> Path:
        """Great Expectations' project: the contract suites' results and Data Docs."""
        return self.output / "great_expectations"

    @property
    def reference_date(self) -> dt.date:
        """The last day of the reference month."""
        return calendar.reference_date(self.reference_month)

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the warehouse: within a run, to the warehouse the run holds open
        (`HeldWarehouse`, read-write whatever `read_only` asks), else to the file opened now."""
        if self._held is not None:
            with self._held.connection() as con:
                yield con
            return
        with open_warehouse(self.warehouse_path, read_only=read_only) as con:
            yield con


def council_switches() -> dict[str, bool]:
    """The council's switches, read from the environment in one place, so `earlyhelp run`,
    `earlyhelp dev` and a schedule's runs obey them alike: deleting the landing files past
    retention (EARLYHELP_DELETE_EXPIRED_LANDING=1) and calling families claimable
    (EARLYHELP_PAYMENT_CLAIMS=1)."""
    return {
        "delete_expired_landing": os.environ.get("EARLYHELP_DELETE_EXPIRED_LANDING", "") == "1",
        "payment_claims": os.environ.get("EARLYHELP_PAYMENT_CLAIMS", "") == "1",
    }


def default_settings() -> EarlyhelpSettings:
    """Settings for `dagster dev`, from the environment, defaulting to the demo county's folders.
    The month comes from the partition each run is for (EARLYHELP_MONTH only for unpartitioned use)."""
    return EarlyhelpSettings(
        landing_dir=os.environ.get("EARLYHELP_LANDING", "data/landing"),
        output_dir=os.environ.get("EARLYHELP_OUT", "data/out"),
        month=os.environ.get("EARLYHELP_MONTH", ""),
        registry_path=os.environ.get("EARLYHELP_REGISTRY", ""),
        programme=os.environ.get("EARLYHELP_PROGRAMME", DEFAULT_PROGRAMME),
        today=os.environ.get("EARLYHELP_TODAY", ""),
        **council_switches(),
        steps_apart=steps_apart_from_environment(),
    )
