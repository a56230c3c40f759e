"""Resources: where the landing folder, the outputs and the warehouse are, for one run."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb

from features import calendar

WAREHOUSE_FILE = "warehouse.duckdb"


class EarlyhelpSettings(dg.ConfigurableResource):
    """The landing folder a run reads, the folder it writes, and the reference month."""

    landing_dir: str
    output_dir: str
    month: str  # YYYY-MM, the reference month the lists are for
    registry_path: str = ""  # a council's own indicator registry; blank for the packaged one
    programme: str = "supporting_families"  # or troubled_families

    @property
    def landing(self) -> Path:
        return Path(self.landing_dir)

    @property
    def output(self) -> Path:
        path = Path(self.output_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def warehouse_path(self) -> Path:
        return self.output / WAREHOUSE_FILE

    @property
    def reference_date(self) -> dt.date:
        """The last day of the reference month."""
        return calendar.reference_date(self.month)

    @contextmanager
    def warehouse(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        con = duckdb.connect(str(self.warehouse_path), read_only=read_only)
        try:
            yield con
        finally:
            con.close()


def default_settings() -> EarlyhelpSettings:
    """Settings for `dagster dev`, from the environment, defaulting to the demo county's folders."""
    today = dt.date.today()
    last_month = (today.replace(day=1) - dt.timedelta(days=1)).strftime("%Y-%m")
    return EarlyhelpSettings(
        landing_dir=os.environ.get("EARLYHELP_LANDING", "data/landing"),
        output_dir=os.environ.get("EARLYHELP_OUT", "data/out"),
        month=os.environ.get("EARLYHELP_MONTH", last_month),
        registry_path=os.environ.get("EARLYHELP_REGISTRY", ""),
        programme=os.environ.get("EARLYHELP_PROGRAMME", "supporting_families"),
    )
