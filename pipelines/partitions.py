"""The reference month as a Dagster partition: one partition per month, up to the last month
that has ended, from the first month the council's files can hold a whole history for; and, on
a deployment serving several councils (EARLYHELP_AUTHORITIES names its authorities file,
governance.authorities), the authority as a second dimension: one run per authority and month.

Partners send three years of files, and a derived table keeps six, so by default the
partitions begin 36 months before this month: a council that backfills further sets
EARLYHELP_FIRST_MONTH (YYYY-MM). Starting in 2015 showed 140 empty months in the UI.
"""

import datetime as dt
import os
from pathlib import Path

import dagster as dg

from governance.authorities import AUTHORITIES_ENV, Authority, load_authorities

#: How many months back the partitions begin by default.
DEFAULT_MONTHS_BACK = 36

#: The partition dimensions' names, and the run tags Dagster gives a multi-partitioned run.
AUTHORITY, MONTH = "authority", "month"
AUTHORITY_TAG, MONTH_TAG, PARTITION_TAG = f"dagster/partition/{AUTHORITY}", f"dagster/partition/{MONTH}", "dagster/partition"


def first_month(today: dt.date | None = None) -> str:
    configured = os.environ.get("EARLYHELP_FIRST_MONTH", "")
    if configured:
        return configured
    today = today or dt.date.today()
    index = today.year * 12 + today.month - 1 - DEFAULT_MONTHS_BACK
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


MONTHS = dg.MonthlyPartitionsDefinition(start_date=first_month(), fmt="%Y-%m", end_offset=0)


def deployment_authorities() -> dict[str, Authority]:
    """The authorities this deployment serves; empty for one council (the default)."""
    configured = os.environ.get(AUTHORITIES_ENV, "")
    return load_authorities(Path(configured)) if configured else {}


AUTHORITIES = deployment_authorities()

#: What every asset is partitioned by: the month, or each authority's months.
PARTITIONS = (
    dg.MultiPartitionsDefinition({AUTHORITY: dg.StaticPartitionsDefinition(sorted(AUTHORITIES)), MONTH: MONTHS})
    if AUTHORITIES else MONTHS
)


def partition_key(month: str, authority: str | None = None) -> str | dg.MultiPartitionKey:
    """The partition a run for this month (and authority, on a deployment) is for."""
    if AUTHORITIES:
        if authority not in AUTHORITIES:
            raise ValueError(f"authority must be one of {', '.join(sorted(AUTHORITIES))}, not {authority!r}")
        return dg.MultiPartitionKey({AUTHORITY: authority, MONTH: month})
    if authority is not None:
        raise ValueError(f"an authority is named only on a deployment serving several councils ({AUTHORITIES_ENV})")
    return month


def month_and_authority(tags: dict[str, str]) -> tuple[str | None, str | None]:
    """A run's month and authority, from the tags Dagster gives a partitioned run."""
    if MONTH_TAG in tags:
        return tags[MONTH_TAG], tags.get(AUTHORITY_TAG)
    return tags.get(PARTITION_TAG), None
