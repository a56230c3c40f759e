"""The reference month as a Dagster partition: one partition per month, up to the last month
that has ended, from the first month the council's files can hold a whole history for.

Partners send three years of files, and a derived table keeps six, so by default the
partitions begin 36 months before this month: a council that backfills further sets
EARLYHELP_FIRST_MONTH (YYYY-MM). Starting in 2015 showed 140 empty months in the UI.
"""

import datetime as dt
import os

import dagster as dg

#: How many months back the partitions begin by default.
DEFAULT_MONTHS_BACK = 36


def first_month(today: dt.date | None = None) -> str:
    configured = os.environ.get("EARLYHELP_FIRST_MONTH", "")
    if configured:
        return configured
    today = today or dt.date.today()
    index = today.year * 12 + today.month - 1 - DEFAULT_MONTHS_BACK
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


MONTHS = dg.MonthlyPartitionsDefinition(start_date=first_month(), fmt="%Y-%m", end_offset=0)
