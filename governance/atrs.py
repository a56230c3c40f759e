"""An Algorithmic Transparency Recording Standard (ATRS) record for the family score and the
scorecard model, filled from the indicator registry, the data contracts, the last run's
figures and the model card. What the system cannot know is marked for the council."""

from __future__ import annotations

import datetime as dt

from data_contracts import Contract
from features.registry import Registry
from governance.ig_pack import COUNCIL, sensitive, source_summary
from rules import programme as programme_rule


def markdown_section(document: str, heading: str) -> str:
    """The body of the `## heading...` section of a Markdown document ('' when absent)."""
    out, inside = [], False
    for line in document.splitlines():
        if line.startswith("## "):
            inside = line[3:].startswith(heading)
            continue
        if inside:
            out.append(line)
    return "\n".join(out).strip()


def atrs_record(
    contracts: dict[str, Contract],
    registry: Registry,
    programme: str,
    run: dict[str, object],
    model_card: str | None,
    today: dt.date | None = None,
) -> str:
    """run: figures of the last run (month, families, eligible, listed, by_locality, rows per source,
    quarantined share, person_f1/family_f1 when measured)."""
    rule = programme_rule(programme)
    minimum, need_word = rule.minimum, f"{rule.title} {rule.need_word}"
    indicators = "\n".join(
        f"| {i.id} | {i.title} | {i.source or 'family'} | {i.applies_to} | {i.rule.window(i)} | {i.points} | {i.outcome} |"
        for i in registry.indicators
    )
    sources = "\n".join(
        f"| {c.title} | {source_summary(c)['owner']} | {'yes' if sensitive(c) else 'no'} | {source_summary(c)['agreement'].split(' <')[0]} | {source_summary(c)['retention'].split(' (')[0]} | {run.get('rows', {}).get(c.source, 'not run')} |"
        for c in contracts.values()
    )
    performance = markdown_section(model_card or "", "Performance") or "The scorecard model has not been evaluated yet: the history does not hold enough escalations (see model_card.md after a run)."
    fairness = markdown_section(model_card or "", "Fairness") or "Not yet measured (needs the model evaluation above)."
    linkage = (
        f"Measured on the synthetic county against its truth: person F1 {run['person_f1']}, family F1 {run['family_f1']}."
        if run.get("person_f1") is not None
        else "Linkage quality is measured on synthetic data with known truth (`earlyhelp evaluate`); on real data the review queue and the linkage report show its behaviour."
    )
    return f"""# Algorithmic Transparency Recording Standard record: earlyhelp family identification

Generated {today or dt.date.today()} from the indicator registry, the data contracts, the run for {run.get('month', 'no month yet')} and the model card. Sections marked {COUNCIL} need the council's answer before publication.

## Tier 1: summary

- **Name:** earlyhelp: identifying families who could use early help
- **Description:** Each month the council links records that partners already share with it (school attendance and suspensions, police anti-social behaviour and domestic abuse notifications, A&E attendances, out-of-work benefits, children's services cases) to people and households, checks each family against {len(registry.indicators)} published indicators, and gives each locality's early help allocation meeting a list of families who meet the programme rule, with the reasons. The meeting, not the tool, decides whether and how to offer help.
- **Website:** {COUNCIL}
- **Contact email:** {COUNCIL}

## 1. Owner and responsibility

- **Organisation:** {COUNCIL}
- **Team:** {COUNCIL}
- **Senior responsible owner:** {COUNCIL}
- **External supplier involvement:** none required: earlyhelp is open-source software run by the council on its own infrastructure. {COUNCIL} if a supplier hosts or supports it.

## 2. Description and rationale

- **Detailed description:** Records are linked without a shared identifier (probabilistic matching on names, dates of birth, addresses and partner identifiers, with a review queue for uncertain pairs). People are grouped into households as of the reference month. For each family the tool counts which indicators are met and which {need_word} they evidence; a family with dependent children and at least {minimum} of them is eligible. A transparent score (points per indicator, capped per source) orders the list within each locality; every point links to the source rows behind it.
- **Scope:** families with dependent children living in the council's area; adults without children are linked but never listed.
- **Benefit:** families are offered help before a crisis brings them to the front door, and meetings see the reasons and evidence instead of a bare referral.
- **Previous process:** {COUNCIL} (for example: referrals to the early help hub only).
- **Alternatives considered:** a learned scorecard (logistic regression) was evaluated out of time against the transparent score and a simple count of needs; it does not order the list unless the council turns it on, because the transparent score can be explained point by point (see section 5).

## 3. Decision-making process

- **Process integration:** the list is an agenda for the monthly locality allocation meeting (school, police, health, housing, voluntary sector). Each family is discussed; the meeting allocates a lead worker, records no further action, defers, or notes the family is already known. Decisions come back to the tool and are honoured on the next list.
- **Information provided to the meeting:** family reference, address, members (name, date of birth, child or adult), needs met, score and its top reasons in plain English, the most recent event, and flags (already known, discussed before, new or carried over, circumstances).
- **Frequency and scale of usage:** monthly. The run for {run.get('month', '-')} assessed {run.get('families', '-')} families; {run.get('eligible', '-')} met the programme rule; {run.get('listed', '-')} were listed ({run.get('by_locality', '-')}).
- **Human decisions and review:** every family on the list is discussed by people before any contact; the tool makes no decision and sends nothing to families. Consent is sought before early help starts, and a refusal is honoured (never relisted while it stands).
- **Required training:** {COUNCIL}
- **Appeals and review:** {COUNCIL}. A person can ask what is held about them: `earlyhelp subject-access` finds every row held about a person across linked sources, with where it came from.

## 4. Tool specification

- **System architecture:** partner extracts land in a folder; each is checked against its data contract (rows that fail are quarantined with a reason), loaded to a DuckDB warehouse, linked (persons, then households), scored against the indicator registry, and written as locality packs; outcomes of allocated families are tracked month by month. Orchestrated by Dagster with blocking data quality checks.
- **Phase:** {COUNCIL} (pilot or production).
- **Maintenance:** thresholds, windows and points live in the indicator registry (a YAML file the council edits); each run records the registry's checksum with every list. Monthly checks warn when an indicator's prevalence is implausible or the score distribution shifts.
- **Models:** (1) the transparent score: rules and points, below; (2) the scorecard model: evaluated only, reported in the model card.

## 5. Model specification

The transparent score's inputs, one row per indicator:

| Indicator | Title | Source | Applies to | Window (months) | Points | Headline outcome |
|---|---|---|---|---|---|---|
{indicators}

- **Outputs:** score, band, needs met, eligibility under the programme rule, top reasons, and a breakdown that sums exactly to the score.
- **Linkage quality:** {linkage}

### Performance of the scorecard model against the transparent score (out of time)

{performance}

### Fairness

{fairness}

Ethnicity and deprivation are not in the partner extracts, so the pipeline cannot measure fairness by them (sex is reported as partners record it); on the synthetic county `benchmarks/fairness.py` reports them from the generator. {COUNCIL}: whether to measure them from case records or the IMD.

## 6. Data specification

| Source | Owner | Special category / criminal offence | Sharing agreement | Retention | Rows held at the last run |
|---|---|---|---|---|---|
{sources}

- **Data modality:** tabular extracts (CSV, XLSX, Parquet).
- **Sensitive attributes:** health (A&E), criminal offence data (police), children's social care; sex is used for matching only.
- **Data completeness and representativeness:** rows failing their contract are quarantined with the reason ({run.get('quarantined_share', '-')} of rows received at the last run). Families known to no partner cannot be found: the list under-represents families who avoid services.
- **Data collection and sharing agreements:** each source's lawful basis, conditions and information sharing agreement are in the IG pack (`ig_pack.html`).
- **Data access and storage:** on council infrastructure only; output files readable by their owner only; the warehouse can be encrypted at rest; each row is removed when its contract's retention ends.

## 7. Risks, mitigations and impact assessments

- **Impact assessments:** {COUNCIL} (DPIA reference and date; equality impact assessment).
- **A wrong link puts the wrong family in front of a meeting:** linkage is tuned for precision (twins and parent/child namesakes kept apart; uncertain pairs go to a review queue); every reason links to source rows a person can check.
- **A missed link hides a family's needs:** recall is measured on synthetic data; partners can correct identifiers at source.
- **Bias and stigma:** indicators are the programme's published criteria, not learned proxies; subgroup selection and recall are reported in the model card; the list is seen only by the locality meeting.
- **Function creep:** each contract states its purpose; fields nothing uses are flagged for removal in the IG pack.
- **Over-reliance on the tool:** the meeting decides; the list states the reasons and the limits of the data.
"""
