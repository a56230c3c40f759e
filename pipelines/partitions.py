"""The reference month as a Dagster partition: one partition per month, from the start of
Troubled Families phase 2, up to the last month that has ended."""

import dagster as dg

MONTHS = dg.MonthlyPartitionsDefinition(start_date="2015-01", fmt="%Y-%m", end_offset=0)
