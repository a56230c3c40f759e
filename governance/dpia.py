"""What a DPIA reviewer looks for first, generated from the contracts, the retention rules and
the run's configuration so that it says what the pipeline does, not what it once did: the
safeguards the Data (Use and Access) Act 2025 asks of decisions about people (UK GDPR
Articles 22A-D, in force from February 2026), the data flow, who is controller and who is
processor, the notice families are owed because the data was not collected from them
(Article 14), the appropriate policy document each DPA 2018 Schedule 1 Part 2 condition
needs, and how long everything is kept.

What only the council can say (its name, its DPO, its review route) is marked for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_contracts import Contract
from governance.ig_pack import COUNCIL, sensitive, source_summary
from governance.retention import DERIVED_TABLES, SUBJECT_ACCESS_RETENTION_DAYS
from rules import programme as programme_rule


@dataclass(frozen=True)
class RunConfiguration:
    """How the last run made its lists, and what the meetings recorded: the facts the
    safeguards section states."""

    programme: str
    ordered_by: str = "score"  # or "model"
    include_already_known: bool = True
    list_front_door_nfa: bool = False
    decisions_recorded: int = 0  # decisions the meetings returned, each with who recorded it and when
    recorders: int = 0  # distinct people named as recording them
    consent_declined: int = 0  # families whose latest decision is CONSENT_DECLINED: never relisted while it stands
    derived_retention_years: float = 6.0
    subject_access_retention_days: int = SUBJECT_ACCESS_RETENTION_DAYS
    council: str = COUNCIL  # the controller's name; on a deployment, the authority's from its authorities file
    shared_deployment: bool = False  # one deployment serving several councils (governance.authorities)

    @classmethod
    def from_audit(cls, configuration: str | None, **facts: object) -> RunConfiguration:
        """From the list audit's configuration text ('programme=...; include_already_known=True; ...')."""
        values = dict(part.split("=", 1) for part in (configuration or "").split("; ") if "=" in part)
        return cls(
            programme=str(facts.pop("programme", values.get("programme", "supporting_families"))),
            ordered_by="model" if values.get("ordered_by", "score").startswith("model") else "score",
            include_already_known=values.get("include_already_known", "True") == "True",
            list_front_door_nfa=values.get("list_front_door_nfa", "False") == "True",
            **facts,
        )


def safeguards(run: RunConfiguration) -> str:
    """The safeguards section (UK GDPR Articles 22A-D as the 2025 Act inserted them)."""
    rule = programme_rule(run.programme)
    order = (
        "ordered within each locality by the scorecard model, which the council switched on after its model card "
        "showed it earns its place; the model never adds or removes a family"
        if run.ordered_by == "model" else "ordered within each locality by the transparent score, whose every point is explained"
    )
    front_door = (
        " A family whose children's front door contacts keep ending in no further action is also listed (the council's setting)."
        if run.list_front_door_nfa else ""
    )
    known = (
        "Families already open to children's social care are shown, flagged, so the meeting knows who already works with them."
        if run.include_already_known else "Families already open to children's social care are left off the lists."
    )
    recorded = (
        f"At the last run {run.decisions_recorded} decisions had been returned, recorded by {run.recorders} named "
        f"{'person' if run.recorders == 1 else 'people'}; {run.consent_declined} {'family has' if run.consent_declined == 1 else 'families have'} declined consent."
        if run.decisions_recorded else "At the last run no meeting had yet returned a decision."
    )
    return f"""## Safeguards for decisions about families (UK GDPR Articles 22A-D)

**No decision is made by the tool.** Each month it lists the families who meet the programme
rule ({rule.title}: {rule.rule}), {order}.{front_door} {known}
Whether to offer a family help, and who leads it, is decided by people at the locality
allocation meeting, family by family; the list supports that decision and makes none. Nothing
is sent to a family from the list. Each decision comes back on the pack's decision sheet and is
kept with who recorded it and when (`meeting_decisions`, and the audit log). {recorded}
So this is not a significant decision based solely on automated processing; the safeguards
below are kept all the same, because a family may feel the list is one.

| Safeguard | How it is met |
|---|---|
| **Being told** | The council's privacy notice (the Article 14 notice below) says that partners' records are linked to find families who could use early help. When a lead practitioner first contacts a family, they say why: the reasons on the family's block, in plain English, each traceable to the partner record behind it. |
| **Making representations** | The family can tell the lead practitioner, or the council's early help team ({run.council}: contact), that the reasons are wrong or that they do not want help. A refusal is recorded as `CONSENT_DECLINED` and the family is never listed again while it stands. |
| **Human intervention** | Every family on a list is discussed by the meeting before any contact; the meeting may decide no further action. A family may ask for the decision to be reviewed by {run.council}: a manager not at the meeting. |
| **Contesting it** | A family can see what is held about them (subject access: `earlyhelp subject-access` finds every row, with the partner and file it came from), ask the partner to correct a wrong record at source (the next run uses the corrected extract), complain to the council's data protection officer, and then to the Information Commissioner's Office. |
"""


def data_flow(contracts: dict[str, Contract]) -> str:
    """The data-flow diagram: partners -> landing -> warehouse -> packs -> meetings -> decisions back."""
    partners = [c for c in contracts.values() if c.holds_people]
    width = max(len(f"{c.agency}: {c.source}") for c in partners)
    lines = [f"  {f'{c.agency}: {c.source}':<{width}} --> landing/{c.source}/" for c in partners]
    return "\n".join([
        "## Data flow",
        "",
        "```",
        "PARTNERS AND THE COUNCIL'S OWN SERVICES (each the controller of its records; a monthly extract under its agreement)",
        *lines,
        "        |",
        "        v  each file checked against its data contract: a row that fails is quarantined with the reason;",
        "        |  only the fields the contract names are loaded",
        "WAREHOUSE (warehouse.duckdb, the council's; rows expire under each contract's retention)",
        "        |  records linked to people, people to households and families",
        "        |  indicators and the transparent score computed, every point with its source rows",
        "        v",
        "PACKS (packs/<month>/<locality>.html, .xlsx, .csv; summary.html: counts only)",
        "        |  each locality's pack to that locality's allocation meeting only",
        "        v",
        "LOCALITY MEETING (people decide; nothing goes to a family from the list)",
        "        |  the decision sheet returned to landing/meeting_outcomes/",
        "        v",
        "WAREHOUSE: decisions honoured on the next list; outcomes of allocated families tracked",
        "        |",
        "        v",
        "OUTCOMES REPORT (family references only), IG pack, ATRS record, model card (counts only)",
        "```",
        "",
    ])


def roles(contracts: dict[str, Contract], run: RunConfiguration | None = None) -> str:
    """Controller and processor roles, by source."""
    council = run.council if run is not None else COUNCIL
    processor = (
        "- **Processor:** the shared service or supplier that runs this deployment for several councils, under an Article 28 "
        f"contract with each: {COUNCIL}. Each council is its own controller: its extracts, contracts, warehouse, lists and IG pack "
        "are kept in its own folders, and no row of one council's is ever read, linked or written with another's."
        if run is not None and run.shared_deployment else
        "- **Processor:** none, when the council runs earlyhelp on its own infrastructure (it is open-source software, not a service). "
        f"A supplier or shared service that hosts or runs it for the council is a processor under an Article 28 contract: {COUNCIL}."
    )
    rows = [
        f"| {c.title} | {source_summary(c)['owner']} ({c.agency}) | "
        f"{'controller of its own records; shares them with the council' if c.kind == 'partner' else 'the council: its own records'} | "
        f"{source_summary(c)['agreement'].split(' <')[0]} |"
        for c in contracts.values() if c.holds_people
    ]
    return "\n".join([
        "## Controllers and processors",
        "",
        f"- **The council ({council}) is the controller** of the linked warehouse, the lists and the outcomes: it decides why and how "
        "partners' records are linked and scored. It is not a joint controller with the partners: each partner decides only to share.",
        "- **Each locality meeting's members** (school, police, health, housing, voluntary sector) receive their locality's pack under "
        "the sharing agreement and are controllers of what they keep from it.",
        processor,
        "",
        "| Source | Controller (owner) | Role | Sharing agreement |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def _categories(contract: Contract) -> str:
    personal = [c.name for c in contract.columns if c.classification in ("personal", "special_category", "criminal_offence")]
    return ", ".join(personal) or "none"


def article_14_notice(contracts: dict[str, Contract], run: RunConfiguration) -> str:
    """The information Article 14 requires when personal data was not obtained from the person."""
    people = [c for c in contracts.values() if c.holds_people]
    sources = "\n".join(
        f"| {c.title} | {c.agency} | {_categories(c)} | {source_summary(c)['lawful_basis']} | "
        f"{source_summary(c)['conditions'] if sensitive(c) else '-'} | {source_summary(c)['retention'].split(' (')[0]} |"
        for c in people
    )
    return f"""## Privacy notice: data not collected from the family (UK GDPR Article 14)

What the council's privacy notice for early help must say, generated from the contracts. The
council publishes it, and the lead practitioner points to it when first in touch with the family
(Article 14(3)(b): at the latest at the first communication).

- **Who is responsible:** {run.council} (controller), and its data protection officer: {COUNCIL}.
- **Why:** to find families who could use early help before a crisis, by checking records
  partners already share against the {programme_rule(run.programme).title} criteria, so that a
  locality meeting can decide whether to offer help. Lawful basis: UK GDPR Article 6(1)(e),
  public task (Children Act 2004 s10 and s11; the legal gateways by source below).
- **What, and from whom:**

| Record | From | Fields | Lawful basis | Special category / criminal offence condition | Kept for |
|---|---|---|---|---|---|
{sources}

- **Who sees it:** the locality allocation meeting for the family's area (school, police, health,
  housing, voluntary sector), and the council's early help team and analysts. No one else.
- **How long:** as the table says for each record; what is worked out from them (scores, lists,
  outcomes) for {run.derived_retention_years:g} years (the retention table below).
- **Decisions about you:** people decide, not the tool (the safeguards section above).
- **Your rights:** to see what is held (subject access), to have it corrected (at the partner that
  holds it), to object to the processing (Article 21: the council must stop unless it has
  compelling grounds, such as a child's safety), to restrict it while a correction is checked, and
  to complain to the Information Commissioner's Office (ico.org.uk, 0303 123 1113).
"""


_PART_2 = re.compile(r"para(?:graph)?s?\s+([\d ,and]+)", re.I)


def appropriate_policy(contracts: dict[str, Contract]) -> str:
    """For each source relying on a DPA 2018 Schedule 1 Part 2 condition, its appropriate policy
    document (Schedule 1 para 5 and Part 4: the procedures for complying with the principles,
    and the retention and erasure policy)."""
    rows = []
    for c in contracts.values():
        conditions = " ".join(str(c.custom.get(k) or "") for k in ("specialCategoryCondition", "criminalOffenceCondition"))
        if "Part 2" not in conditions:
            continue
        paras = sorted({p for found in _PART_2.findall(conditions) for p in re.findall(r"\d+", found)}, key=int)
        policy = source_summary(c)["policy"]
        rows.append(
            f"| {c.title} | {', '.join(f'para {p}' for p in paras)} | {policy} | {source_summary(c)['retention'].split(' (')[0]}, "
            "deleted at the first run after it (`retention_log`) |"
        )
    return "\n".join([
        "## Appropriate policy documents (DPA 2018 Schedule 1 Part 2 conditions)",
        "",
        "A Part 2 condition holds only while an appropriate policy document is in place and kept for six months after the "
        "processing ends (Schedule 1 para 5, Part 4). A contract that names a Part 2 condition without one does not load.",
        "",
        "| Source | Schedule 1 Part 2 conditions | Appropriate policy document | Retention and erasure |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def retention_table(contracts: dict[str, Contract], run: RunConfiguration) -> str:
    """Everything earlyhelp keeps, and for how long."""
    rows = [
        f"| `raw_{c.source}` and its quarantine | {c.title}: the partner's rows | {source_summary(c)['retention']} | ingestion, every run |"
        for c in contracts.values()
    ]
    rows += [
        f"| `{t.name}` | {t.holds} | {run.derived_retention_years:g} years | the retention asset, every run |" for t in DERIVED_TABLES
    ]
    rows += [
        f"| `packs/<month>/`, `outcomes/<month>/` | the lists as the meetings received them; the outcomes report | {run.derived_retention_years:g} years after the month | the retention asset, every run |",
        f"| `subject_access/<request>/` | one person's rows, for a request | {run.subject_access_retention_days} days after it is written | the retention asset, every run |",
        "| linkage, families, scores, this month's lists | recomputed from the rows above at every run | as the rows they come from | replaced every run |",
        "| landing files | the partners' extracts as received | reported when every row is past retention (a row a later file restated, when that restatement is; a quarantined record whose date cannot be read, when its file's other rows are); deleted only if the council sets EARLYHELP_DELETE_EXPIRED_LANDING=1 | the retention asset |",
    ]
    return "\n".join([
        "## Retention",
        "",
        "| What | Holds | Kept for | Removed by |",
        "|---|---|---|---|",
        *rows,
        "",
    ])


def dpia_sections(contracts: dict[str, Contract], run: RunConfiguration) -> str:
    """The sections a DPIA reviewer reads first, in the order they read them."""
    return "\n".join([
        safeguards(run), data_flow(contracts), roles(contracts, run), article_14_notice(contracts, run),
        appropriate_policy(contracts), retention_table(contracts, run),
    ])
