"""Outcomes that last: for every allocated family, each need identified, month by month.

The Supporting Families claim rule: a family can be claimed for when every need identified
shows a positive outcome sustained for 6 months after the case closes. Councils say this
evidence is the hardest part of the programme, so it is built here from the same
indicators that put the family on the list, recomputed as they stood at each month end:

- the needs identified are the headline needs (Supporting Families outcomes, or Troubled
  Families problems) the family met on the list the meeting discussed: the latest month
  the family was listed, up to the meeting's month (else the month before the meeting);
- a need is *improved* in a month when none of the indicators evidencing it is met at
  that month's end; it is *sustained* when it has stayed improved for at least
  `sustain_months` consecutive monthly checks up to the reference month (a relapse
  starts the count again);
- a family is *claimable* when its early help case (an EARLY_HELP or FAMILY_HELP case in `open_cases`
  for a member, opened on or after the list month) has closed, at least `sustain_months`
  whole months have passed since, and every need has stayed improved in every month since
  the closure. Every need sustained but no closure recorded is reported as such: the
  pipeline cannot know a case closed that nobody recorded.

Indicators look back over their windows (12 months for most), so a need counts as
improved only once its evidence has aged out of the window: deliberately conservative.
The tracking never decides a claim; it gives the evidence a claims officer checks.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl

from features import compute_indicators
from features.calendar import previous_month, reference_date
from features.registry import Registry
from rules import LEAD_PRACTITIONER_SERVICES
from rules import programme as programme_rule
from warehouse import register

SUSTAIN_MONTHS = 6

EVIDENCE_SCHEMA = {
    "family_ref": pl.String, "need": pl.String, "indicator_id": pl.String, "person_id": pl.String,
    "source": pl.String, "file": pl.String, "row": pl.Int64, "event_date": pl.Date,
}
CLAIMABLE = "claimable"
SUSTAINED_OPEN = "every need sustained; case closure not recorded or too recent"
IN_PROGRESS = "in progress"
NO_NEEDS = "no needs identified on the list month"


@dataclass
class OutcomeTracking:
    monthly: pl.DataFrame  # family_ref, need, month, met: each tracked month after identification
    needs: pl.DataFrame  # family_ref, need, identified_month, first_improved, months_sustained, status
    families: pl.DataFrame  # one row per allocated family: counts of needs and the claim status
    report: pl.DataFrame  # by locality and allocation month: families, needs identified/improved/sustained, claimable


def months_between(first: str, last: str) -> list[str]:
    """Months after `first` up to and including `last`, as 'YYYY-MM'.

    >>> months_between("2025-11", "2026-02")
    ['2025-12', '2026-01', '2026-02']
    """
    months: list[str] = []
    month = last
    while month > first:
        months.append(month)
        month = previous_month(month)
    return months[::-1]


def _month_index(month: pl.Expr) -> pl.Expr:
    """'YYYY-MM' -> a count of months, so that differences are whole months."""
    return month.str.slice(0, 4).cast(pl.Int32) * 12 + month.str.slice(5, 2).cast(pl.Int32)


def identification_months(allocations: pl.DataFrame, listed: pl.DataFrame | None) -> pl.DataFrame:
    """allocations: family_ref, meeting_date, lead_agency; listed: list_audit (month, locality,
    family_ref, needs). Adds `identified_month` (the list the meeting discussed), `locality`,
    and `listed_needs` (the needs printed on that list; null when the list was not audited)."""
    allocated = allocations.with_columns(pl.col("meeting_date").dt.strftime("%Y-%m").alias("meeting_month"))
    fallback = pl.col("meeting_date").dt.offset_by("-1mo").dt.strftime("%Y-%m")
    if listed is None or listed.is_empty():
        return allocated.with_columns(
            fallback.alias("identified_month"), pl.lit(None, dtype=pl.String).alias("locality"), pl.lit(None, dtype=pl.List(pl.String)).alias("listed_needs")
        ).drop("meeting_month")
    if "needs" not in listed.columns:  # audits written before needs were recorded
        listed = listed.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("needs"))
    seen = (
        allocated.select("family_ref", "meeting_month")
        .join(listed.select("family_ref", "month", "locality", "needs"), on="family_ref")
        .filter(pl.col("month") <= pl.col("meeting_month"))
        .sort("month")
        .group_by("family_ref")
        .agg(pl.col("month").last().alias("listed_month"), pl.col("locality").last(), pl.col("needs").last().alias("listed_needs"))
    )
    return (
        allocated.join(seen, on="family_ref", how="left")
        .with_columns(pl.coalesce("listed_month", fallback).alias("identified_month"))
        .drop("meeting_month", "listed_month")
    )


def needs_of(family_indicators: pl.DataFrame, registry: Registry, programme: str) -> pl.DataFrame:
    """family_ref, indicator_id -> family_ref, need (distinct), with the indicators behind it."""
    field = programme_rule(programme).need_field
    mapping = pl.DataFrame({"indicator_id": [i.id for i in registry.indicators], "need": [getattr(i, field) for i in registry.indicators]})
    return (
        family_indicators.select("family_ref", "indicator_id")
        .join(mapping, on="indicator_id")
        .group_by("family_ref", "need")
        .agg(pl.col("indicator_id").unique().sort().alias("indicators"))
    )


def _identified_needs(allocations: pl.DataFrame, needs_by_month: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """family_ref, need, identified_month: the needs printed on the list the meeting saw, or for a
    family allocated from a list older than the audit, the needs recomputed for that month."""
    printed = allocations.filter(pl.col("listed_needs").is_not_null())
    return pl.concat(
        [
            printed.select("family_ref", pl.col("listed_needs").alias("need"), "identified_month").explode("need").drop_nulls("need"),
            *[
                needs_by_month[m].select("family_ref", "need").join(
                    allocations.filter(pl.col("listed_needs").is_null() & (pl.col("identified_month") == m)).select("family_ref", "identified_month"),
                    on="family_ref",
                )
                for m in allocations["identified_month"].unique().sort().to_list()
                if m in needs_by_month
            ],
        ]
    )


def _monthly_checks(identified: pl.DataFrame, needs_by_month: dict[str, pl.DataFrame], month: str) -> pl.DataFrame:
    """family_ref, need, month, met: every identified need at every month end since it was identified."""
    checks = [
        (row["family_ref"], m)
        for row in identified.select("family_ref", "identified_month").unique().iter_rows(named=True)
        for m in months_between(row["identified_month"], month)
    ]
    grid = identified.join(pl.DataFrame(checks, schema={"family_ref": pl.String, "month": pl.String}, orient="row"), on="family_ref")
    met_rows = pl.concat(
        [frame.select("family_ref", "need").with_columns(pl.lit(m).alias("month")) for m, frame in needs_by_month.items()]
        or [pl.DataFrame(schema={"family_ref": pl.String, "need": pl.String, "month": pl.String})]
    ).with_columns(pl.lit(True).alias("met"))
    return (
        grid.join(met_rows, on=["family_ref", "need", "month"], how="left")
        .with_columns(pl.col("met").fill_null(False))
        .select("family_ref", "need", "month", "met")
        .sort("family_ref", "need", "month")
    )


def _need_status(identified: pl.DataFrame, monthly: pl.DataFrame, month: str, sustain_months: int) -> pl.DataFrame:
    """Per family and need: first improved month, consecutive improved months to now, and status."""
    # consecutive improved months ending at the reference month: counted back to the last month met
    last_met = monthly.filter(pl.col("met")).group_by("family_ref", "need").agg(pl.col("month").max().alias("last_met"))
    tracked = monthly.group_by("family_ref", "need").agg(
        pl.len().alias("months_tracked"),
        pl.col("month").filter(~pl.col("met")).min().alias("first_improved"),
        pl.col("met").last().alias("met_now"),
    )
    return (
        identified.join(tracked, on=["family_ref", "need"], how="left")
        .join(last_met, on=["family_ref", "need"], how="left")
        .with_columns(pl.col("months_tracked").fill_null(0), pl.col("met_now").fill_null(True))
        .with_columns(
            pl.when(pl.col("last_met").is_null())
            .then(pl.col("months_tracked"))
            .otherwise(_month_index(pl.lit(month)) - _month_index(pl.col("last_met")))
            .cast(pl.Int64)
            .alias("months_sustained")
        )
        .with_columns(
            pl.when(pl.col("months_sustained") >= sustain_months).then(pl.lit("sustained"))
            .when(~pl.col("met_now")).then(pl.lit("improved"))
            .otherwise(pl.lit("not improved")).alias("status")
        )
        .select("family_ref", "need", "identified_month", "first_improved", "months_sustained", "status")
        .sort("family_ref", "need")
    )


def _family_status(allocations: pl.DataFrame, needs: pl.DataFrame, closures: pl.DataFrame, month: str, sustain_months: int) -> pl.DataFrame:
    """Per allocated family: needs identified, improved and sustained, and the claim status."""
    per_family = needs.group_by("family_ref").agg(
        pl.len().alias("needs_identified"),
        (pl.col("status") != "not improved").sum().alias("needs_improved"),
        (pl.col("status") == "sustained").sum().alias("needs_sustained"),
        pl.col("months_sustained").min().alias("least_months_sustained"),
    )
    since_closure = (_month_index(pl.lit(month)) - _month_index(pl.col("case_closed").dt.strftime("%Y-%m"))).cast(pl.Int64)
    return (
        allocations.select("family_ref", "meeting_date", "lead_agency", "identified_month", "locality")
        .join(per_family, on="family_ref", how="left")
        .join(closures.select("family_ref", "case_closed"), on="family_ref", how="left")
        .with_columns(pl.col("needs_identified", "needs_improved", "needs_sustained").fill_null(0), since_closure.alias("months_since_closure"))
        .with_columns(
            pl.when(pl.col("needs_identified") == 0).then(pl.lit(NO_NEEDS))
            .when(
                (pl.col("needs_sustained") == pl.col("needs_identified"))
                & (pl.col("months_since_closure") >= sustain_months)
                & (pl.col("least_months_sustained") >= pl.col("months_since_closure"))
            ).then(pl.lit(CLAIMABLE))
            .when(pl.col("needs_sustained") == pl.col("needs_identified")).then(pl.lit(SUSTAINED_OPEN))
            .otherwise(pl.lit(IN_PROGRESS)).alias("claim_status")
        )
        .drop("least_months_sustained")
        .sort("family_ref")
    )


def _report(families: pl.DataFrame) -> pl.DataFrame:
    return (
        families.with_columns(pl.col("meeting_date").dt.strftime("%Y-%m").alias("allocated_month"), pl.col("locality").fill_null("(not listed)"))
        .group_by("locality", "allocated_month")
        .agg(
            pl.len().alias("families_allocated"),
            pl.col("needs_identified").sum(),
            pl.col("needs_improved").sum(),
            pl.col("needs_sustained").sum(),
            (pl.col("claim_status").is_in([CLAIMABLE, SUSTAINED_OPEN])).sum().alias("families_every_need_sustained"),
            (pl.col("claim_status") == CLAIMABLE).sum().alias("families_claimable"),
        )
        .sort("locality", "allocated_month")
    )


def track_outcomes(
    allocations: pl.DataFrame,
    needs_by_month: dict[str, pl.DataFrame],
    closures: pl.DataFrame,
    month: str,
    sustain_months: int = SUSTAIN_MONTHS,
) -> OutcomeTracking:
    """allocations: family_ref, meeting_date, lead_agency, identified_month, locality;
    needs_by_month: month -> family_ref, need (the needs met at that month's end), for the
    identification months and every month after them up to `month`;
    closures: family_ref, case_closed (the early help case's closure date, null while open)."""
    if "listed_needs" not in allocations.columns:
        allocations = allocations.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("listed_needs"))
    identified = _identified_needs(allocations, needs_by_month)
    monthly = _monthly_checks(identified, needs_by_month, month)
    needs = _need_status(identified, monthly, month, sustain_months)
    families = _family_status(allocations, needs, closures, month, sustain_months)
    return OutcomeTracking(monthly=monthly, needs=needs, families=families, report=_report(families))


def early_help_closures(cases: pl.DataFrame, members: pl.DataFrame, allocations: pl.DataFrame) -> pl.DataFrame:
    """cases: person_id, service, open_date, close_date (linked open_cases rows). The family's
    early help case after its list: EARLY_HELP or FAMILY_HELP cases of members opened from the first day of
    the identification month; closed when every one of them is closed (the latest closure)."""
    starts = allocations.select("family_ref", (pl.col("identified_month") + "-01").str.to_date("%Y-%m-%d").alias("from"))
    worked = (
        cases.filter(pl.col("service").is_in(LEAD_PRACTITIONER_SERVICES))
        .join(members.select("person_id", "family_ref"), on="person_id")
        .join(starts, on="family_ref")
        .filter(pl.col("open_date") >= pl.col("from"))
    )
    return worked.group_by("family_ref").agg(
        pl.when(pl.col("close_date").is_null().any()).then(None).otherwise(pl.col("close_date").max()).alias("case_closed")
    )


@dataclass
class NeedsHistory:
    needs: dict[str, pl.DataFrame]  # month -> family_ref, need, indicators (the needs met at its end)
    evidence: pl.DataFrame  # on each family's identification month: family_ref, need, indicator_id, source, file, row, event_date
    members: pl.DataFrame  # person_id, family_ref: the people tracked for each allocated family


def needs_by_month(
    con: duckdb.DuckDBPyConnection, registry: Registry, programme: str, allocations: pl.DataFrame, month: str,
    listed_members: pl.DataFrame | None = None,
) -> NeedsHistory:
    """The allocated families' needs at each month end from their earliest identification month
    to `month`, recomputed with the same indicator code a monthly run uses, for the people on
    the list the meeting discussed (`listed_members`: month, family_ref, person_id, from the
    list audit), and the source rows behind the needs identified."""
    if allocations.is_empty():
        return NeedsHistory({}, pl.DataFrame(schema=EVIDENCE_SCHEMA), pl.DataFrame(schema={"person_id": pl.String, "family_ref": pl.String}))
    tracked = allocations.select("family_ref", "identified_month").unique()
    listed = listed_members if listed_members is not None else pl.DataFrame(schema={"month": pl.String, "family_ref": pl.String, "person_id": pl.String})
    register(con, "_allocated_families", tracked)
    register(con, "_listed_members", listed)
    try:
        # the people the meeting saw on the list, as persons now (ages as now); families
        # listed before members were audited: their members as linked now
        con.execute(
            """CREATE OR REPLACE TEMP TABLE allocated_members AS
               SELECT m.* EXCLUDE (family_ref), a.family_ref FROM _allocated_families a
               JOIN _listed_members l ON l.family_ref = a.family_ref AND l.month = a.identified_month
               JOIN family_members m ON m.person_id = l.person_id
               UNION ALL
               SELECT m.* EXCLUDE (family_ref), a.family_ref FROM _allocated_families a
               JOIN family_members m ON m.family_ref = a.family_ref
               WHERE NOT EXISTS (SELECT 1 FROM _listed_members l WHERE l.family_ref = a.family_ref AND l.month = a.identified_month)"""
        )
    finally:
        con.unregister("_allocated_families")
        con.unregister("_listed_members")
    field = programme_rule(programme).need_field
    need_of = {i.id: getattr(i, field) for i in registry.indicators}
    needs, evidence = {}, [pl.DataFrame(schema=EVIDENCE_SCHEMA)]
    identified = allocations.select("family_ref", "identified_month")
    for m in months_between(previous_month(min(identified["identified_month"].to_list())), month):
        result = compute_indicators(con, registry, reference_date(m), members="allocated_members")
        needs[m] = needs_of(result.family_indicators, registry, programme)
        on_list = identified.filter(pl.col("identified_month") == m).select("family_ref")
        if on_list.height and result.evidence.height:
            evidence.append(
                result.evidence.join(on_list, on="family_ref")
                .with_columns(pl.col("indicator_id").replace_strict(need_of).alias("need"))
                .select(list(EVIDENCE_SCHEMA))
                .cast(EVIDENCE_SCHEMA)
            )
    members = con.sql("SELECT person_id, family_ref FROM allocated_members").pl()
    return NeedsHistory(needs, pl.concat(evidence).sort("family_ref", "need", "indicator_id", "source", "file", "row"), members)


def programme_report(tracking: OutcomeTracking, month: str, programme: str, sustain_months: int = SUSTAIN_MONTHS, payment_claims: bool = False) -> str:
    """The programme report as Markdown: allocated families and their needs by locality and
    month of allocation, then one line per family (by reference only: no names). Outcomes are
    reported against the framework; a family is called claimable only where the council still
    makes payment-by-results claims (`payment_claims`)."""
    need_word = programme_rule(programme).need_word
    done = "claimable" if payment_claims else "outcomes achieved"
    purpose = (
        "Figures support a claims officer's check; they are not a claim."
        if payment_claims else
        "Reported against the Supporting Families outcomes framework: payment by results ended when its funding moved "
        "into the Children and Families Grant (April 2025). A council that still claims sets EARLYHELP_PAYMENT_CLAIMS=1."
    )
    lines = [
        f"# Outcomes of allocated families, to {month}",
        "",
        f"Programme: {programme_rule(programme).title}. Needs are the {need_word} each family met on the list its "
        f"meeting discussed. A need is improved in a month when none of its indicators is met at that month's end, "
        f"and sustained after {sustain_months} consecutive improved months. A family's outcomes are {done} when its "
        f"lead practitioner's case (early help or Family Help) has closed, {sustain_months} months have passed, and every "
        "need has stayed improved since. Indicators look back over their windows (mostly 12 months), so improvement "
        f"shows only once the evidence has aged out: a conservative measure. {purpose}",
        "",
        *(
            [
                "**Nothing to report yet: no meeting has recorded an ALLOCATED decision.** Outcomes are tracked from the "
                "meeting that allocates a family a lead practitioner. Each locality's XLSX pack opens on its decision "
                "sheet; saved into the landing folder's `meeting_outcomes/` (or sent as a `meeting_outcomes` CSV in the "
                "spec's layout), its decisions are read by the next run, which tracks every allocated family from then.",
                "",
            ]
            if tracking.families.is_empty() else []
        ),
        "## By locality and month of allocation",
        "",
        f"| Locality | Allocated in | Families | Needs identified | Needs improved | Needs sustained | Every need sustained | {done.capitalize()} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in tracking.report.iter_rows(named=True):
        lines.append(
            f"| {r['locality']} | {r['allocated_month']} | {r['families_allocated']} | {r['needs_identified']} | {r['needs_improved']} "
            f"| {r['needs_sustained']} | {r['families_every_need_sustained']} | {r['families_claimable']} |"
        )
    totals = tracking.report.select(pl.exclude("locality", "allocated_month")).sum()
    if totals.height and tracking.report.height:
        t = totals.row(0, named=True)
        lines.append(
            f"| **All** | | **{t['families_allocated']}** | **{t['needs_identified']}** | **{t['needs_improved']}** | **{t['needs_sustained']}** "
            f"| **{t['families_every_need_sustained']}** | **{t['families_claimable']}** |"
        )
    lines += [
        "",
        "## Families",
        "",
        "| Family | Locality | Allocated | Lead agency | Needs | Improved | Sustained | Case closed | Status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tracking.families.iter_rows(named=True):
        lines.append(
            f"| {r['family_ref']} | {r['locality'] or ''} | {r['meeting_date']} | {r['lead_agency'] or ''} | {r['needs_identified']} "
            f"| {r['needs_improved']} | {r['needs_sustained']} | {r['case_closed'] or 'open or not recorded'} "
            f"| {done if r['claim_status'] == CLAIMABLE else r['claim_status']} |"
        )
    if tracking.families.is_empty():
        lines.append("| (no allocated families yet: `meeting_outcomes` records no ALLOCATED decision) | | | | | | | | |")
    return "\n".join(lines) + "\n"
