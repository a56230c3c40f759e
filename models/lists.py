"""The list of families each locality allocation meeting should discuss this month.

Families eligible under the programme rule, each in exactly one locality (from its
current postcode), ranked by score; each with its reference, address, members (name,
date of birth, role: only what partners need to look the family up), the headline
needs met, the score and its top reasons, the most recent event, and flags: already
known to children's services (shown or left off, by configuration), discussed
before (when, and the decision), new this month or carried over, and the
circumstances that bring it: identified in data, a stuck early help case, a
step-down from statutory services. The list supports the meeting's decision; it
makes none.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
import polars as pl

from data_contracts import Contract, load_contracts
from features.calendar import previous_month, window_start
from features.registry import Registry
from linkage.person_records import mention_join
from models.chair_summary import ChairSummary, allocations_waiting, chair_summary
from models.family_view import FamilyView, family_view
from rules import LEAD_PRACTITIONER_SERVICES, STATUTORY_SERVICES, Programme, is_child
from warehouse import linked_mentions, linked_rows, read_table, register

STEP_DOWN_MONTHS = 3


@dataclass(frozen=True)
class ListSettings:
    include_already_known: bool = True  # show families open to children's services, flagged
    step_down_months: int = STEP_DOWN_MONTHS
    no_further_action_months: int = 6  # not relisted for this long after NFA, unless a new event
    order_by: str = "score"  # or "model": the scorecard model's probability, when the council switches it on
    # a council's rule: also list a family whose children's contacts at the front door keep ending
    # in no further action, however many needs it meets (North Tyneside's fifth circumstance)
    list_front_door_nfa: bool = False


#: The registry's indicator for the front door circumstance (features/indicators.yaml).
FRONT_DOOR_NFA_INDICATOR = "repeated_front_door_nfa"


@dataclass
class LocalityLists:
    lists: pl.DataFrame  # one row per listed family
    members: pl.DataFrame  # family_ref, person_id, display name, dob, role
    unplaced: int  # eligible families with no locality (postcode not in the lookup)
    allocated: pl.DataFrame  # family_ref, meeting_date, lead_agency: worked with, so not relisted
    discrepancies: pl.DataFrame  # family_ref, meeting_date, decision, issue: decisions that do not fit the data


DISCREPANCY_SCHEMA = {"family_ref": pl.String, "meeting_date": pl.Date, "decision": pl.String, "issue": pl.String}


def apply_decisions(
    candidates: pl.DataFrame, scores: pl.DataFrame, decisions: pl.DataFrame | None, reference: dt.date, settings: ListSettings,
    known_refs: pl.Series | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Honour the meetings' latest decisions: returns (families to list, allocated, discrepancies).

    ALLOCATED: worked with by the lead agency, so not relisted; NO_FURTHER_ACTION: not relisted
    for `no_further_action_months` unless a new event arrives after the meeting;
    CONSENT_DECLINED: never relisted while it stands; DEFERRED: back this month, whatever the
    rule says; ALREADY_KNOWN: checked against open cases. A decision about a family reference
    the pipeline does not know is reported, not dropped."""
    empty_allocated = pl.DataFrame(schema={"family_ref": pl.String, "meeting_date": pl.Date, "lead_agency": pl.String})
    if decisions is None or decisions.is_empty():
        return candidates, empty_allocated, pl.DataFrame(schema=DISCREPANCY_SCHEMA)
    latest = (
        decisions.filter(pl.col("meeting_date") <= reference)
        .sort(["family_ref", "meeting_date"])
        .group_by("family_ref", maintain_order=True)
        .last()
        .select("family_ref", "meeting_date", "decision", "lead_agency")
    )
    # the references as a column, not a Python set: a county's 490,000 took 0.3 s to make one
    known = (known_refs if known_refs is not None else scores["family_ref"]).implode()
    unknown = latest.filter(~pl.col("family_ref").is_in(known)).select(
        "family_ref", "meeting_date", "decision", pl.lit("the pipeline knows no family with this reference").alias("issue")
    )
    facts = candidates.select("family_ref", "latest_event", "open_statutory", "open_early_help")
    judged = latest.join(scores.select("family_ref", pl.col("latest_event").alias("event")), on="family_ref")
    nfa_until = window_start(reference, settings.no_further_action_months + 1)
    hold = judged.filter(
        (pl.col("decision") == "ALLOCATED")
        | (pl.col("decision") == "CONSENT_DECLINED")
        | ((pl.col("decision") == "NO_FURTHER_ACTION") & (pl.col("meeting_date") >= nfa_until) & ~(pl.col("event") > pl.col("meeting_date")).fill_null(False))
    )
    deferred = judged.filter(pl.col("decision") == "DEFERRED").select("family_ref")
    listed = candidates.join(hold.select("family_ref"), on="family_ref", how="anti")
    returning = scores.join(deferred, on="family_ref", how="semi").join(listed.select("family_ref"), on="family_ref", how="anti")
    if returning.height:
        listed = pl.concat([listed, returning.select([c for c in listed.columns if c in returning.columns])], how="diagonal_relaxed")
    # of the families the pipeline knows: a reference none holds is said once, as that (`unknown`)
    already = latest.filter((pl.col("decision") == "ALREADY_KNOWN") & pl.col("family_ref").is_in(known)).join(facts, on="family_ref", how="left")
    not_known = already.filter(~(pl.col("open_statutory").fill_null(False) | pl.col("open_early_help").fill_null(False))).select(
        "family_ref", "meeting_date", "decision", pl.lit("recorded as already known, but no open case is linked to the family").alias("issue")
    )
    # every known family a meeting allocated, wherever it lives now (its outcomes are still tracked)
    allocated = latest.filter((pl.col("decision") == "ALLOCATED") & pl.col("family_ref").is_in(known)).select(
        "family_ref", "meeting_date", "lead_agency"
    )
    return listed, allocated, pl.concat([unknown, not_known]).cast(DISCREPANCY_SCHEMA)


def _title(expr: pl.Expr) -> pl.Expr:
    return expr.str.to_titlecase()


#: A family's postcode: its first member's (by person_id) household postcode, of those that have one.
_FAMILY_POSTCODE = "first(m.household_postcode ORDER BY m.person_id) FILTER (WHERE m.household_postcode IS NOT NULL) AS postcode"

def _family_addresses_sql(members: str, mentions_linked_on: str) -> str:
    """family_ref -> the household's postcode (`_FAMILY_POSTCODE`) and the address line its members
    were last recorded at there: per person, the latest line (ties to the first record) at the
    household's postcode and house number; per family, the first member's (by person_id) that has
    one. In DuckDB over the warehouse, so a county's millions of mentions are not read out for it.
    `members`: the family_members rows (a table or a query) whose families are wanted;
    `mentions_linked_on`: how a mention joins its link (`linkage.person_records.mention_join`).
    Only those members' mentions are joined to their links: for a month's listed families (15,000
    at 1.2M residents) 0.49-0.79 -> 0.41-0.52 s, where every mention was joined and most let go."""
    links = f"(SELECT * FROM person_links WHERE person_id IN (SELECT person_id FROM {members}))"
    return f"""
WITH texts AS (
    SELECT m.person_id, first(r.address ORDER BY r.address_date DESC, r.record_key) AS address
    FROM ({linked_mentions("pr.record_key, pr.address, pr.address_date, pr.postcode, pr.house_number, pl.person_id", mentions_linked_on, links)}) r
    JOIN {members} m ON m.person_id = r.person_id AND m.household_postcode = r.postcode AND m.household_house_number = r.house_number
    WHERE r.address IS NOT NULL
    GROUP BY m.person_id
)
SELECT m.family_ref,
       {_FAMILY_POSTCODE},
       first(t.address ORDER BY m.person_id) FILTER (WHERE t.address IS NOT NULL) AS address
FROM {members} m LEFT JOIN texts t USING (person_id)
GROUP BY m.family_ref
"""


def family_addresses(con: duckdb.DuckDBPyConnection, families: pl.Series | None = None) -> pl.DataFrame:
    """family_ref -> the household's postcode and a readable address line (`_family_addresses_sql`),
    of every family or of `families` (family_refs): a month's lists show a few percent of a
    county's households (at 1.2M residents 15,000 of 490,000: 1.1-1.4 -> 0.55 s)."""
    if families is None:
        return con.sql(_family_addresses_sql("family_members", mention_join(con))).pl().with_columns(_title(pl.col("address")).alias("address"))
    register(con, "_families_wanted", families.unique().to_frame("family_ref"))
    try:
        members = "(SELECT * FROM family_members WHERE family_ref IN (SELECT family_ref FROM _families_wanted))"
        return con.sql(_family_addresses_sql(members, mention_join(con))).pl().with_columns(_title(pl.col("address")).alias("address"))
    finally:
        con.unregister("_families_wanted")


def family_postcodes(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """family_ref -> the household's postcode, as `family_addresses` gives it, without the address
    line: that is read from every linked mention, the postcode from family_members alone (the
    needs analysis at 1.2M residents 2.7 / 3.0 -> 1.5 / 1.5 s, alternating)."""
    return con.sql(f"SELECT m.family_ref, {_FAMILY_POSTCODE} FROM family_members m GROUP BY m.family_ref").pl()


def linked_cases(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """open_cases rows with the person each is linked to: person_id, service, open_date, close_date."""
    return con.sql(linked_rows("open_cases", "pl.person_id, r.service, r.open_date, r.close_date")).pl()


def case_flags(cases: pl.DataFrame, members: pl.DataFrame, reference: dt.date, step_down_months: int) -> pl.DataFrame:
    """cases: person_id, service, open_date, close_date (linked open_cases rows)."""
    recent = window_start(reference, step_down_months)
    linked = cases.join(members.select("person_id", "family_ref"), on="person_id")
    open_now = (pl.col("open_date") <= reference) & (pl.col("close_date").is_null() | (pl.col("close_date") > reference))
    return linked.group_by("family_ref").agg(
        (open_now & pl.col("service").is_in(STATUTORY_SERVICES)).any().alias("open_statutory"),
        (open_now & pl.col("service").is_in(LEAD_PRACTITIONER_SERVICES)).any().alias("open_early_help"),
        (pl.col("service").is_in(STATUTORY_SERVICES) & pl.col("close_date").is_between(recent, reference)).any().alias("step_down"),
    )


def build_lists(
    scores: pl.DataFrame,
    members: pl.DataFrame,
    addresses: pl.DataFrame,
    localities: pl.DataFrame,
    flags: pl.DataFrame,
    previous_scores: pl.DataFrame | None,
    previous_lists: pl.DataFrame | None,
    decisions: pl.DataFrame | None,
    reference: dt.date,
    settings: ListSettings = ListSettings(),
    model_scores: pl.DataFrame | None = None,
    front_door_nfa: pl.DataFrame | None = None,
) -> LocalityLists:
    """scores: family_scores; localities: postcode, ward, locality; decisions: raw_meeting_outcomes;
    front_door_nfa: the family_refs whose children's front door contacts keep ending in no further action."""
    nfa = front_door_nfa["family_ref"] if front_door_nfa is not None else pl.Series("family_ref", [], dtype=pl.String)
    by_rule = pl.col("family_ref").is_in(nfa.implode()) if settings.list_front_door_nfa else pl.lit(False)
    eligible = scores.filter(pl.col("eligible") | by_rule).join(addresses, on="family_ref", how="left")
    placed = eligible.join(localities.select("postcode", "ward", "locality"), on="postcode", how="left")
    unplaced = placed.filter(pl.col("locality").is_null()).height
    def with_flags(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(flags, on="family_ref", how="left").with_columns(
            pl.col("open_statutory").fill_null(False), pl.col("open_early_help").fill_null(False), pl.col("step_down").fill_null(False)
        )

    listed = with_flags(placed.filter(pl.col("locality").is_not_null()))
    everyone = with_flags(scores.join(addresses, on="family_ref", how="left").join(localities.select("postcode", "ward", "locality"), on="postcode", how="left")).filter(pl.col("locality").is_not_null())
    listed, allocated, discrepancies = apply_decisions(
        listed, everyone, decisions, reference, settings, known_refs=members["family_ref"]
    )
    if not settings.include_already_known:
        listed = listed.filter(~pl.col("open_statutory"))
    rising = pl.lit(False)
    if previous_scores is not None and previous_scores.height:
        listed = listed.join(previous_scores.select("family_ref", pl.col("score").alias("previous_score")), on="family_ref", how="left")
        rising = pl.col("previous_score").is_not_null() & (pl.col("score") > pl.col("previous_score"))
    else:
        listed = listed.with_columns(pl.lit(None, dtype=pl.Int64).alias("previous_score"))
    before = set(previous_lists["family_ref"].to_list()) if previous_lists is not None and previous_lists.height else set()
    listed = listed.with_columns(
        pl.when(pl.col("family_ref").is_in(list(before))).then(pl.lit("carried over")).otherwise(pl.lit("new this month")).alias("status"),
        pl.concat_str(
            [
                pl.lit("identified in data"),
                pl.when(pl.col("open_early_help") & rising).then(pl.lit("early help case with rising needs (stuck)")),
                pl.when(pl.col("step_down")).then(pl.lit("recently closed by children's social care (step-down)")),
                pl.when(pl.col("family_ref").is_in(nfa.implode())).then(pl.lit("front door contacts keep ending in no further action")),
            ],
            separator="; ",
            ignore_nulls=True,
        ).alias("circumstances"),
        pl.when(pl.col("open_statutory")).then(pl.lit("already known: open to children's social care")).alias("already_known"),
    )
    if decisions is not None and decisions.height:
        last = decisions.filter(pl.col("meeting_date") <= reference).sort("meeting_date").group_by("family_ref").agg(
            pl.col("meeting_date").last().alias("last_discussed"), pl.col("decision").last().alias("last_decision")
        )
        listed = listed.join(last, on="family_ref", how="left")
    else:
        listed = listed.with_columns(pl.lit(None, dtype=pl.Date).alias("last_discussed"), pl.lit(None, dtype=pl.String).alias("last_decision"))
    # the model only reorders families already eligible; it never adds or removes one
    if settings.order_by == "model" and model_scores is not None:
        listed = listed.join(model_scores.select("family_ref", "model_probability"), on="family_ref", how="left")
        order = ["locality", "model_probability", "score", "latest_event", "family_ref"]
    else:
        listed = listed.with_columns(pl.lit(None, dtype=pl.Float64).alias("model_probability"))
        order = ["locality", "score", "latest_event", "family_ref"]
    listed = listed.sort(order, descending=[False, *[True] * (len(order) - 2), False], nulls_last=True).with_columns(
        pl.int_range(1, pl.len() + 1).over("locality").alias("rank")
    )
    shown = members.join(listed.select("family_ref"), on="family_ref", how="semi").select(
        "family_ref",
        "person_id",
        (_title(pl.col("forename")) + " " + _title(pl.col("surname"))).alias("name"),
        "dob",
        pl.when(is_child(pl.col("age"))).then(pl.lit("child")).otherwise(pl.lit("adult")).alias("role"),
        "age",
        "placed_by",
        "placement_confidence",
    ).sort(["family_ref", "age", "person_id"], descending=[False, True, False], nulls_last=True)
    columns = [
        "locality", "rank", "family_ref", "address", "postcode", "ward", "members", "dependent_children", "score", "band",
        "needs", "needs_met", "top_reasons", "latest_event", "status", "circumstances", "already_known",
        "last_discussed", "last_decision", "model_probability",
    ]
    return LocalityLists(lists=listed.select(columns), members=shown, unplaced=unplaced, allocated=allocated, discrepancies=discrepancies)


@dataclass
class MonthlyLists:
    result: LocalityLists
    ordered_by: str  # what ordered the lists: the configured order, or the score when no model was trained
    tables: dict[str, pl.DataFrame]  # the warehouse tables this month's lists replace, audit included
    view: FamilyView | None = None  # each listed family's chronology and who else knows it
    rows_without_decision: int = 0  # returned rows whose DECISION was blank: not discussed, counted
    summary: ChairSummary | None = None  # the chair's one-page summary of the month's meetings


def monthly_lists(
    con: duckdb.DuckDBPyConnection, month: str, reference: dt.date, settings: ListSettings, configuration: str, run_id: str, run_by: str,
    registry: Registry, programme: Programme, contracts: dict[str, Contract] | None = None,
) -> MonthlyLists:
    """This month's lists from the warehouse, with the audit of what was listed, for whom, by which
    run and configuration; earlier months' audit entries are kept, this month's replaced.
    contracts: the council's own (the packaged ones by default)."""
    contracts = contracts or load_contracts()
    from models.scorecard import MODEL_SCORES

    if settings.order_by not in ("score", "model"):
        raise ValueError(f"order_by must be 'score' or 'model', not {settings.order_by!r}")
    members = con.sql("SELECT * FROM family_members").pl()
    model_scores = read_table(con, MODEL_SCORES) if settings.order_by == "model" else None
    audit = read_table(con, "list_audit")
    previous = audit.filter(pl.col("month") == previous_month(month)) if audit is not None else None
    history = read_table(con, "family_scores_history")
    returned = read_table(con, "raw_meeting_outcomes")
    cases = linked_cases(con)
    # a row whose DECISION is blank records no decision (a family the meeting did not discuss)
    decisions = returned.filter(pl.col("decision").is_not_null()) if returned is not None else None
    scores = con.sql("SELECT * FROM family_scores").pl()
    front_door_nfa = con.sql(f"SELECT DISTINCT family_ref FROM family_indicators WHERE indicator_id = '{FRONT_DOOR_NFA_INDICATOR}'").pl()
    # an address only for the families a list may show: the eligible, those a rule lists, those a meeting decided on
    shown = [scores.filter(pl.col("eligible"))["family_ref"], front_door_nfa["family_ref"], *([decisions["family_ref"]] if decisions is not None else [])]
    result = build_lists(
        scores,
        members,
        family_addresses(con, pl.concat(shown)),
        con.sql("SELECT postcode, ward, locality FROM raw_postcode_localities").pl(),
        case_flags(cases, members, reference, settings.step_down_months),
        history.filter(pl.col("month") == previous_month(month)) if history is not None else None,
        previous,
        decisions,
        reference,
        settings,
        model_scores,
        front_door_nfa,
    )
    ordered_by = settings.order_by if settings.order_by != "model" or model_scores is not None else "score (no model trained this month)"
    entry = result.lists.select(
        pl.lit(month).alias("month"), "locality", "family_ref", "rank", "needs",
        pl.lit(run_id).alias("run_id"),
        pl.lit(dt.datetime.now().replace(microsecond=0)).alias("produced_at"),
        pl.lit(f"{configuration}; ordered_by={ordered_by}").alias("configuration"),
        pl.lit(run_by).alias("run_by"),
    )
    kept = audit.filter(pl.col("month") != month) if audit is not None else None
    # who was on each list, so outcomes are tracked for the people the meeting saw
    shown = read_table(con, "list_audit_members")
    shown_now = result.members.select(pl.lit(month).alias("month"), "family_ref", "person_id")
    shown_kept = shown.filter(pl.col("month") != month) if shown is not None else None
    view = family_view(con, result.members, registry, reference, contracts)
    recorded = decisions_recorded(decisions, read_table(con, "landed_files"), result)
    summary = chair_summary(
        month, result.lists, programme, list(contracts["meeting_outcomes"].column("decision").allowed_values), recorded,
        allocations_waiting(result.allocated, cases, members, audit), result.unplaced, result.discrepancies.height, audit,
        {getattr(i, programme.need_field) for i in registry.indicators},
    )
    tables = {
        "family_chronology": view.chronology,
        "family_known_to": view.known_to,
        "meeting_decisions": recorded,
        "locality_lists": result.lists,
        "locality_list_members": result.members,
        "allocated_families": result.allocated,
        "decision_discrepancies": result.discrepancies,
        "list_audit": pl.concat([kept, entry], how="diagonal_relaxed") if kept is not None else entry,
        "list_audit_members": pl.concat([shown_kept, shown_now]) if shown_kept is not None else shown_now,
    }
    without_decision = returned.height - decisions.height if returned is not None else 0
    return MonthlyLists(result=result, ordered_by=ordered_by, tables=tables, view=view, rows_without_decision=without_decision, summary=summary)


DECISIONS_SCHEMA = {
    "family_ref": pl.String, "meeting_date": pl.Date, "decision": pl.String, "lead_agency": pl.String, "file": pl.String, "row": pl.Int64,
    "recorded_by": pl.String, "recorded_at": pl.Datetime("us"), "listed_this_month": pl.Boolean, "issue": pl.String,
}


def decisions_recorded(decisions: pl.DataFrame | None, landed: pl.DataFrame | None, result: LocalityLists) -> pl.DataFrame:
    """Every decision the meetings returned, with who recorded it and when (the person who last
    saved the returned workbook, as the workbook records it: the human decision the Data (Use and
    Access) Act 2025 asks to be shown), whether the family is on this month's list, and any issue
    found with it."""
    if decisions is None or decisions.is_empty():
        return pl.DataFrame(schema=DECISIONS_SCHEMA)
    saved = landed.filter(pl.col("source") == "meeting_outcomes").select(pl.col("file").alias("_file"), pl.col("sha256").alias("_sha256"), "saved_by", "saved_at") if landed is not None else None
    frame = decisions.join(saved, on=["_file", "_sha256"], how="left") if saved is not None else decisions.with_columns(
        pl.lit(None, pl.String).alias("saved_by"), pl.lit(None, pl.Datetime("us")).alias("saved_at")
    )
    issues = result.discrepancies.select("family_ref", "meeting_date", "issue")
    return (
        frame.join(issues, on=["family_ref", "meeting_date"], how="left")
        .select(
            "family_ref", "meeting_date", "decision", "lead_agency", pl.col("_file").alias("file"), pl.col("_row").alias("row"),
            pl.col("saved_by").fill_null("not recorded in the file").alias("recorded_by"), pl.col("saved_at").alias("recorded_at"),
            pl.col("family_ref").is_in(result.lists["family_ref"].implode()).alias("listed_this_month"), "issue",
        )
        .cast(DECISIONS_SCHEMA)
        .sort("meeting_date", "family_ref")
    )
