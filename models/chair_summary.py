"""The chair's summary of a month's locality meetings: one page a chair reads before the first
meeting and a partnership manager reads after the last.

Per locality: the families listed, how many are new and carried over, how many in the high
band, and the families allocated whose lead practitioner has not opened a case yet (an
allocation still waiting). Across the county: how many listed families meet each of the
programme's needs, what this month's meetings decided about the previous month's lists (from
the returned decision sheets), and the eligible families no locality covers. Counts, and the
references of the allocations waiting: no names, no addresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from features.calendar import previous_month
from rules import LEAD_PRACTITIONER_SERVICES, Programme


@dataclass(frozen=True)
class ChairSummary:
    month: str
    localities: pl.DataFrame  # locality, families, new, carried_over, high, waiting
    needs: pl.DataFrame  # need, families: listed families meeting it, measured: whether any indicator evidences it
    discussed_list: str  # the month of the lists this month's meetings discussed
    decisions: pl.DataFrame  # decision, one column per locality, all: each family's latest decision at meetings held this month
    waiting: pl.DataFrame  # family_ref, locality, meeting_date, lead_agency: allocated, no case opened since
    unplaced: int  # eligible families whose postcode no locality covers
    discrepancies: int  # returned decisions that do not fit the data (reported in the warehouse)
    need_word: str

    @property
    def listed(self) -> int:
        return int(self.localities["families"].sum()) if self.localities.height else 0


def last_locality(audit: pl.DataFrame) -> pl.DataFrame:
    """family_ref, locality: the locality of the latest list each family was on (list_audit)."""
    return audit.sort("month").group_by("family_ref").agg(pl.col("locality").last())


def allocations_waiting(allocated: pl.DataFrame, cases: pl.DataFrame, members: pl.DataFrame, audit: pl.DataFrame | None) -> pl.DataFrame:
    """Families a meeting allocated for which no early help or Family Help case has opened on or
    after the meeting: the lead practitioner has not started. Each with the locality of the
    list it was last on."""
    opened = (
        cases.filter(pl.col("service").is_in(LEAD_PRACTITIONER_SERVICES))
        .join(members.select("person_id", "family_ref"), on="person_id")
        .join(allocated.select("family_ref", "meeting_date"), on="family_ref")
        .filter(pl.col("open_date") >= pl.col("meeting_date"))
        .select("family_ref").unique()
    )
    waiting = allocated.join(opened, on="family_ref", how="anti")
    if audit is not None and audit.height:
        waiting = waiting.join(last_locality(audit), on="family_ref", how="left")
    else:
        waiting = waiting.with_columns(pl.lit(None, dtype=pl.String).alias("locality"))
    return waiting.select("family_ref", "locality", "meeting_date", "lead_agency").sort("meeting_date", "family_ref")


def chair_summary(
    month: str,
    lists: pl.DataFrame,
    programme: Programme,
    decision_values: list[str],
    decisions: pl.DataFrame,
    waiting: pl.DataFrame,
    unplaced: int,
    discrepancies: int,
    audit: pl.DataFrame | None,
    measured: set[str] | None = None,
) -> ChairSummary:
    """lists: this month's locality lists; decisions: every decision returned (meeting_decisions);
    audit: list_audit, to place last month's decisions in the localities that discussed them;
    measured: the needs some indicator of the registry evidences (all, when None)."""
    per_locality = lists.group_by("locality").agg(
        pl.len().alias("families"),
        (pl.col("status") == "new this month").sum().alias("new"),
        (pl.col("status") == "carried over").sum().alias("carried_over"),
        (pl.col("band") == "high").sum().alias("high"),
    )
    waiting_by_locality = waiting.filter(pl.col("locality").is_not_null()).group_by("locality").len("waiting")
    localities = (
        per_locality.join(waiting_by_locality, on="locality", how="full", coalesce=True)
        .with_columns(pl.exclude("locality").fill_null(0).cast(pl.Int64))
        .sort("locality")
    )
    met = lists.select(pl.col("needs").explode().alias("need")).drop_nulls().group_by("need").len("families")
    needs = pl.DataFrame({"need": list(programme.needs)}).join(met, on="need", how="left").with_columns(
        pl.col("families").fill_null(0),
        # a need no indicator of the registry evidences is "not measured", not nought
        pl.col("need").is_in(sorted(measured if measured is not None else programme.needs)).alias("measured"),
    )
    # the month's meetings discuss the list of the month before: a run for a month comes after it ends
    in_month = decisions.filter(pl.col("meeting_date").dt.strftime("%Y-%m") == month)
    latest = in_month.sort("meeting_date").group_by("family_ref").agg(pl.col("decision").last())
    listed_then = (
        audit.filter(pl.col("month") == previous_month(month)).select("family_ref", "locality") if audit is not None
        else pl.DataFrame(schema={"family_ref": pl.String, "locality": pl.String})
    )
    placed = latest.join(listed_then, on="family_ref", how="left").with_columns(pl.col("locality").fill_null("not on that month's lists"))
    wide = pl.DataFrame({"decision": decision_values})
    for locality in sorted(placed["locality"].unique().to_list()):
        counts = placed.filter(pl.col("locality") == locality).group_by("decision").len(locality)
        wide = wide.join(counts, on="decision", how="left")
    wide = wide.with_columns(pl.exclude("decision").fill_null(0)).with_columns(
        pl.sum_horizontal(pl.exclude("decision")).alias("all") if wide.width > 1 else pl.lit(0).alias("all")
    )
    return ChairSummary(
        month=month, localities=localities, needs=needs, discussed_list=previous_month(month), decisions=wide,
        waiting=waiting, unplaced=unplaced, discrepancies=discrepancies, need_word=programme.need_word,
    )
