"""A needs analysis for the partnership: the underlying and presenting needs of the county's
families, with no personal data, fit for a partnership board or for publication.

Families with dependent children and the children in them, with each of the programme's needs,
by locality and ward; the needs that occur together; the month of the partner events behind the
needs over the last 12 months; and what the meetings decided. Counts only, and every count under
`SUPPRESS_BELOW` is shown as "<5". Where counts add up to a total that is also published (wards
to their locality, localities to the county, decisions across and down), a lone suppressed cell
would be given away by subtraction, so the next smallest cell of that line is suppressed too
(secondary suppression), until no line has exactly one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import numpy as np
import polars as pl

from data_contracts import load_contract
from features.calendar import window_start
from features.registry import Registry
from models.chair_summary import last_locality
from models.lists import family_postcodes
from rules import Programme

SUPPRESS_BELOW = 5
SUPPRESSED = f"<{SUPPRESS_BELOW}"
NOT_PLACED = "not on a locality's list"
ALL = "All"
#: How far back the trend of events and the decisions look.
MONTHS_SHOWN = 12


def suppression_mask(counts: np.ndarray, lines: list[list[tuple[int, int]]], below: int = SUPPRESS_BELOW) -> np.ndarray:
    """Which cells of a table to suppress. counts: the table, totals included as cells; lines:
    each a set of cells that add up (a total among them), so a line must never have exactly one
    suppressed cell. Primary: every count under `below`. Secondary: a line with exactly one takes
    its next smallest cell too, repeated until every line has none or at least two."""
    hidden = counts < below
    changed = True
    while changed:
        changed = False
        for line in lines:
            shut = [cell for cell in line if hidden[cell]]
            if len(shut) == 1 and len(line) > 1:
                smallest = min((cell for cell in line if not hidden[cell]), key=lambda cell: counts[cell])
                hidden[smallest] = True
                changed = True
    return hidden


@dataclass(frozen=True)
class NeedsAnalysis:
    month: str
    by_area: pl.DataFrame  # area_type (county, locality, ward), locality, area, need, families, children (String: counts or "<5")
    together: pl.DataFrame  # need, with_need, families: families with both
    by_month: pl.DataFrame  # month, need, families: families with an event behind the need that month
    decisions: pl.DataFrame  # locality, decision, decisions
    needs: tuple[str, ...]  # the programme's needs some indicator of the registry evidences
    unmeasured: tuple[str, ...]  # the programme's needs no indicator evidences: not counted
    need_word: str
    families: str  # families with dependent children placed in a locality (suppressed if small)
    unplaced: str  # families with dependent children whose postcode no locality covers: left out of the area tables
    first_event_month: str
    any_decisions: bool  # whether any meeting of the last 12 months returned a decision

    def tables(self) -> dict[str, pl.DataFrame]:
        return {"needs_by_area": self.by_area, "needs_together": self.together, "needs_by_month": self.by_month, "decisions_by_locality": self.decisions}


def _count(n: int) -> str:
    return SUPPRESSED if n < SUPPRESS_BELOW else f"{n:,}"


def _shown(counts: np.ndarray, hidden: np.ndarray) -> list[str]:
    return [SUPPRESSED if h else str(int(c)) for c, h in zip(counts.ravel(), hidden.ravel())]


def _areas(families: pl.DataFrame, needs: tuple[str, ...]) -> pl.DataFrame:
    """families: family_ref, needs, dependent_children, ward, locality (families placed in a
    locality). One row per (area, need) with families and children, suppressed together: wards
    add to their locality, localities to the county."""
    placed = families.with_columns(pl.col("ward").fill_null("ward not known"))
    localities = sorted(placed["locality"].unique().to_list())
    wards = placed.select("locality", "ward").unique().sort("locality", "ward").rows()
    rows = [("county", ALL, ALL)] + [("locality", loc, loc) for loc in localities] + [("ward", loc, ward) for loc, ward in wards]
    index = {row: i for i, row in enumerate(rows)}
    exploded = placed.explode("needs").filter(pl.col("needs").is_not_null())
    out = []
    for measure, value in (("families", pl.len()), ("children", pl.col("dependent_children").sum())):
        counts = np.zeros((len(rows), len(needs)), dtype=np.int64)
        for level, keys in (("county", []), ("locality", ["locality"]), ("ward", ["locality", "ward"])):
            grouped = exploded.group_by([*keys, "needs"]).agg(value.alias("n"))
            for row in grouped.iter_rows(named=True):
                if row["needs"] not in needs:
                    continue
                area = (level, ALL, ALL) if level == "county" else (level, row["locality"], row["locality"] if level == "locality" else row["ward"])
                if area in index:
                    counts[index[area], needs.index(row["needs"])] = row["n"]
        lines = []
        for j in range(len(needs)):
            lines.append([(index[("county", ALL, ALL)], j)] + [(index[("locality", loc, loc)], j) for loc in localities])
            for loc in localities:
                members = [(index[("ward", l, w)], j) for l, w in wards if l == loc]
                if members:
                    lines.append([(index[("locality", loc, loc)], j), *members])
        out.append(_shown(counts, suppression_mask(counts, lines)))
    return pl.DataFrame({
        "area_type": [r[0] for r in rows for _ in needs], "locality": [r[1] for r in rows for _ in needs],
        "area": [r[2] for r in rows for _ in needs], "need": [n for _ in rows for n in needs],
        "families": out[0], "children": out[1],
    })


def _together(families: pl.DataFrame, needs: tuple[str, ...]) -> pl.DataFrame:
    """Families with both needs, for every pair (the diagonal: families with the need). No cell of
    it adds up to another, so primary suppression only."""
    pairs = families.select("family_ref", pl.col("needs").alias("need")).explode("need").drop_nulls()
    both = pairs.join(pairs.rename({"need": "with_need"}), on="family_ref").group_by("need", "with_need").len("n")
    grid = pl.DataFrame({"need": [a for a in needs for _ in needs], "with_need": [b for _ in needs for b in needs]})
    counts = grid.join(both, on=["need", "with_need"], how="left")["n"].fill_null(0).to_numpy()
    return grid.with_columns(pl.Series("families", _shown(counts, suppression_mask(counts, []))))


def _by_month(evidence: pl.DataFrame, registry: Registry, programme: Programme, reference: dt.date, needs: tuple[str, ...]) -> pl.DataFrame:
    """Families with a partner event behind each need, by the event's month (families meeting the
    need now; an event is counted in the month it happened)."""
    months = [window_start(reference, k).strftime("%Y-%m") for k in range(MONTHS_SHOWN, 0, -1)]
    need_of = pl.DataFrame({
        "indicator_id": [i.id for i in registry.indicators], "need": [getattr(i, programme.need_field) for i in registry.indicators],
    })
    events = (
        evidence.filter(pl.col("event_date").is_not_null())
        .with_columns(pl.col("event_date").dt.strftime("%Y-%m").alias("month"))
        .join(need_of, on="indicator_id")
        .group_by("month", "need").agg(pl.col("family_ref").n_unique().alias("n"))
    )
    grid = pl.DataFrame({"month": [m for m in months for _ in needs], "need": [n for _ in months for n in needs]})
    counts = grid.join(events, on=["month", "need"], how="left")["n"].fill_null(0).to_numpy()
    return grid.with_columns(pl.Series("families", _shown(counts, suppression_mask(counts, []))))


def _decisions(decisions: pl.DataFrame, audit: pl.DataFrame | None, values: list[str], reference: dt.date) -> pl.DataFrame:
    """Decisions at meetings in the last 12 months by locality (of the list the family was last
    on) and kind, with totals across and down, suppressed in both directions."""
    since = window_start(reference, MONTHS_SHOWN)
    recent = decisions.filter(pl.col("meeting_date").is_between(since, reference))
    if audit is not None and audit.height:
        recent = recent.join(last_locality(audit), on="family_ref", how="left")
    else:
        recent = recent.with_columns(pl.lit(None, dtype=pl.String).alias("locality"))
    recent = recent.with_columns(pl.col("locality").fill_null(NOT_PLACED))
    localities = sorted(recent["locality"].unique().to_list()) + [ALL]
    kinds = [*values, "all decisions"]
    counts = np.zeros((len(localities), len(kinds)), dtype=np.int64)
    tallies = recent.group_by("locality", "decision").len("n")
    for row in tallies.iter_rows(named=True):
        if row["decision"] in values:
            counts[localities.index(row["locality"]), kinds.index(row["decision"])] = row["n"]
    counts[-1, :-1] = counts[:-1, :-1].sum(axis=0)
    counts[:, -1] = counts[:, :-1].sum(axis=1)
    lines = [[(i, j) for j in range(len(kinds))] for i in range(len(localities))]
    lines += [[(i, j) for i in range(len(localities))] for j in range(len(kinds))]
    shown = np.array(_shown(counts, suppression_mask(counts, lines))).reshape(counts.shape)
    return pl.DataFrame({
        "locality": [loc for loc in localities for _ in kinds], "decision": [k for _ in localities for k in kinds],
        "decisions": [shown[i, j] for i in range(len(localities)) for j in range(len(kinds))],
    })


def needs_analysis(con: duckdb.DuckDBPyConnection, month: str, reference: dt.date, registry: Registry, programme: Programme) -> NeedsAnalysis:
    """The needs analysis of the warehouse as it stands after this month's run."""
    from warehouse import read_table

    places = family_postcodes(con).join(
        con.sql("SELECT postcode, ward, locality FROM raw_postcode_localities").pl(), on="postcode", how="left"
    )
    families = (
        con.sql("SELECT family_ref, needs, dependent_children FROM family_scores WHERE dependent_children > 0").pl()
        .join(places.select("family_ref", "ward", "locality"), on="family_ref", how="left")
    )
    # a need no indicator evidences would show as nought everywhere: named as not measured instead
    measured = {getattr(i, programme.need_field) for i in registry.indicators}
    needs = tuple(n for n in programme.needs if n in measured)
    evidence = con.sql("SELECT indicator_id, family_ref, event_date FROM indicator_evidence").pl()
    decisions = read_table(con, "meeting_decisions")
    if decisions is None:
        decisions = pl.DataFrame(schema={"family_ref": pl.String, "meeting_date": pl.Date, "decision": pl.String})
    values = list(load_contract("meeting_outcomes").column("decision").allowed_values)
    placed = families.filter(pl.col("locality").is_not_null())
    return NeedsAnalysis(
        month=month,
        by_area=_areas(placed, needs),
        together=_together(families, needs),
        by_month=_by_month(evidence, registry, programme, reference, needs),
        decisions=_decisions(decisions, read_table(con, "list_audit"), values, reference),
        needs=needs,
        unmeasured=tuple(n for n in programme.needs if n not in measured),
        need_word=programme.need_word,
        families=_count(placed.height),
        unplaced=_count(families.height - placed.height),
        first_event_month=window_start(reference, MONTHS_SHOWN).strftime("%Y-%m"),
        any_decisions=decisions.filter(pl.col("meeting_date").is_between(window_start(reference, MONTHS_SHOWN), reference)).height > 0,
    )
