"""Months, as the pipeline counts them: a reference month ends on its last day, and a window
of N months ends with the reference month.

>>> import datetime as dt
>>> reference_date("2026-10")
datetime.date(2026, 10, 31)
>>> window_start(dt.date(2026, 10, 31), 12)
datetime.date(2025, 11, 1)
>>> shift_months(dt.date(2026, 10, 31), -12)
datetime.date(2025, 10, 31)
>>> previous_month("2026-01")
'2025-12'
"""

from __future__ import annotations

import datetime as dt


def month_end(year: int, month: int) -> dt.date:
    return dt.date(year + (month == 12), month % 12 + 1, 1) - dt.timedelta(days=1)


def reference_date(month: str) -> dt.date:
    """'YYYY-MM' -> the last day of that month."""
    year, mon = (int(p) for p in month.split("-"))
    return month_end(year, mon)


def window_start(reference: dt.date, months: int) -> dt.date:
    """The first day of a window of `months` whole months ending with the reference month."""
    index = reference.year * 12 + reference.month - 1 - months + 1
    return dt.date(index // 12, index % 12 + 1, 1)


def shift_months(day: dt.date, months: int) -> dt.date:
    """The last day of the month `months` after (or before) the month of `day`."""
    index = day.year * 12 + day.month - 1 + months
    return month_end(index // 12, index % 12 + 1)


def previous_month(month: str) -> str:
    year, mon = (int(p) for p in month.split("-"))
    index = year * 12 + mon - 2
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def years_before(day: dt.date, years: float) -> dt.date:
    """The day `years` (a whole number and a fraction) before `day`: a retention's cutoff."""
    whole, part = divmod(years, 1)
    year = day.year - int(whole)
    earlier = day.replace(year=year, day=min(day.day, 28)) if day.month == 2 else day.replace(year=year)
    return earlier - dt.timedelta(days=round(part * 365.25))
