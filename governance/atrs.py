"""An Algorithmic Transparency Recording Standard (ATRS) record for the family score and the
scorecard model, filled from the indicator registry, the data contracts, the last run's
figures and the model card. What the system cannot know is marked for the council."""

from __future__ import annotations

import datetime as dt

from data_contracts import Contract
from features.registry import Registry
from governance.ig_pack import COUNCIL, sensitive, source_summary
from reports import render
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
    safeguards: str = "",
) -> str:
    """run: figures of the last run (month, families, eligible, listed, by_locality, rows per source,
    quarantined share, person_f1/family_f1 when measured)."""
    rule = programme_rule(programme)
    sources = [
        {
            "title": c.title, "owner": source_summary(c)["owner"], "sensitive": "yes" if sensitive(c) else "no",
            "agreement": source_summary(c)["agreement"].split(" <")[0], "retention": source_summary(c)["retention"].split(" (")[0],
            "rows": run.get("rows", {}).get(c.source, "not run"),
        }
        for c in contracts.values()
    ]
    performance = markdown_section(model_card or "", "Performance") or (
        "The scorecard model has not been evaluated: a run evaluates it when the council orders its lists by the model, or when "
        "asked (`earlyhelp model`, `earlyhelp run --retrain-model`), and only once the history holds enough escalations (model_card.md then says how it compares)."
    )
    fairness = markdown_section(model_card or "", "Fairness") or "Not yet measured (needs the model evaluation above)."
    linkage = (
        f"Measured on the synthetic county against its truth: person F1 {run['person_f1']}, family F1 {run['family_f1']}."
        if run.get("person_f1") is not None
        else "Linkage quality is measured on synthetic data with known truth (`earlyhelp evaluate`); on real data the review queue and the linkage report show its behaviour."
    )
    return render(
        "atrs_record.md.j2", COUNCIL=COUNCIL, today=today or dt.date.today(), run=run, indicators=registry.indicators,
        need_word=f"{rule.title} {rule.need_word}", minimum=rule.minimum, sources=sources,
        performance=performance, fairness=fairness, linkage=linkage, safeguards=markdown_section(safeguards, "Safeguards"),
    )
