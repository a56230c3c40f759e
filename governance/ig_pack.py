"""The information governance pack: for each source, who owns it, why it is shared, on which
lawful basis and agreement, for how long, and each field with its classification and what
uses it. Generated from the data contracts and the indicator registry, so it cannot drift
from what the pipeline does."""

from __future__ import annotations

import datetime as dt
import hashlib
import os

from data_contracts import Contract
from features.registry import Registry
from governance.usage import field_uses
from warehouse import KEY_ENV

COUNCIL = "**[council to complete]**"


def _text(value: object) -> str:
    return " ".join(str(value).split()) if value else ""


def _people(contract: Contract, role: str) -> str:
    members = (contract.document.get("team") or {}).get("members") or []
    found = [f"{m.get('name', '')} ({m.get('username', '')})" for m in members if m.get("role") == role]
    return "; ".join(found) or COUNCIL


def _definitions(contract: Contract, kind: str) -> str:
    found = [f"{_text(d.get('description'))} <{d.get('url')}>" for d in contract.document.get("authoritativeDefinitions") or [] if d.get("type") == kind]
    return "; ".join(found) or "none stated"


def _sla(contract: Contract, prop: str) -> str:
    for sla in contract.document.get("slaProperties") or []:
        if sla.get("property") == prop:
            described = f" ({_text(sla['description'])})" if sla.get("description") else ""
            return f"{sla.get('value')} {sla.get('unit', '')}".strip() + described
    return "not stated"


def sensitive(contract: Contract) -> bool:
    """Whether the source holds special category or criminal offence data."""
    return bool(contract.custom.get("specialCategoryCondition") or contract.custom.get("criminalOffenceCondition"))


def source_summary(contract: Contract) -> dict[str, str]:
    custom, description = contract.custom, contract.document.get("description") or {}
    conditions = [f"{label}: {_text(custom[key])}" for key, label in (("specialCategoryCondition", "special category condition"), ("criminalOffenceCondition", "criminal offence condition")) if custom.get(key)]
    return {
        "owner": _people(contract, "owner"),
        "dpo": _people(contract, "data protection officer"),
        "purpose": _text(description.get("purpose")),
        "usage": _text(description.get("usage")),
        "limitations": _text(description.get("limitations")),
        "lawful_basis": _text(custom.get("lawfulBasis")) or COUNCIL,
        "conditions": "; ".join(conditions) or "none (no special category or criminal offence data)",
        "gateway": _text(custom.get("legalGateway")) or "not stated",
        "agreement": _definitions(contract, "informationSharingAgreement"),
        "policy": _definitions(contract, "appropriatePolicyDocument"),
        "retention": _sla(contract, "retention"),
        "frequency": _sla(contract, "frequency"),
    }


def ig_pack(
    contracts: dict[str, Contract], registry: Registry, counts: dict[str, dict[str, int]] | None = None, today: dt.date | None = None,
    reviewer_first: str = "",
) -> str:
    """The IG pack as Markdown. counts: per source, rows received/loaded/quarantined/expired at the last run;
    reviewer_first: the sections a DPIA reviewer reads first (governance.dpia), placed before the sources."""
    uses = field_uses(contracts, registry)
    unused = [u for u in uses if u.unused]
    registry_sha = hashlib.sha256(registry.path.read_bytes()).hexdigest()[:16] if registry.path else "n/a"
    counts = counts or {}
    lines = [
        "# Information governance pack: earlyhelp",
        "",
        f"Generated {today or dt.date.today()} from the data contracts ({', '.join(f'{c.path.name} v{c.version}' for c in contracts.values())}) "
        f"and the indicator registry ({registry.path.name if registry.path else 'packaged'}, sha256 {registry_sha}). Edit those files, not this page: "
        "the next run writes it again.",
        "",
        *([reviewer_first] if reviewer_first else []),
        "## Sources at a glance",
        "",
        "| Source | Owner | Lawful basis | Special category / criminal offence | Sharing agreement | Retention | Fields | Fields unused | Rows held at the last run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for contract in contracts.values():
        s = source_summary(contract)
        fields = [u for u in uses if u.source == contract.source]
        held = counts.get(contract.source, {}).get("current")
        lines.append(
            f"| {contract.title} | {s['owner']} | {s['lawful_basis']} | {'yes' if sensitive(contract) else 'no'} | {s['agreement'].split(' <')[0]} "
            f"| {s['retention'].split(' (')[0]} | {len(fields)} | {sum(u.unused for u in fields)} | {held if held is not None else 'not run'} |"
        )
    lines += ["", "## Fields flagged for removal (data minimisation)", ""]
    if unused:
        lines.append("Nothing in the pipeline reads these fields. Unless a use is planned and documented, ask the partner to stop sending them and remove them from the contract:")
        lines.append("")
        lines += [f"- {u.source}: `{u.partner_name}` ({u.field}, {u.classification})" for u in unused]
    else:
        lines.append("Every field a contract lets in is used.")
    for contract in contracts.values():
        s = source_summary(contract)
        c = counts.get(contract.source, {})
        lines += [
            "",
            f"## {contract.title} (`{contract.source}`, contract v{contract.version})",
            "",
            f"- **Owner:** {s['owner']}",
            f"- **Data protection officer:** {s['dpo']}",
            f"- **Purpose:** {s['purpose']}",
            f"- **How it is used:** {s['usage']}",
            f"- **Limitations:** {s['limitations'] or 'none stated'}",
            f"- **Lawful basis:** {s['lawful_basis']}",
            f"- **Conditions:** {s['conditions']}",
            f"- **Legal gateway:** {s['gateway']}",
            f"- **Information sharing agreement:** {s['agreement']}",
            f"- **Appropriate policy document:** {s['policy']}",
            f"- **Retention:** {s['retention']}; applied at every run (rows past it are removed and counted in `retention_log`)",
            f"- **Frequency:** {s['frequency']}",
        ]
        if c:
            lines.append(f"- **At the last run:** {c.get('received', 0):,} rows received, {c.get('loaded', 0):,} loaded, {c.get('quarantined', 0):,} quarantined, {c.get('expired', 0):,} removed under retention, {c.get('current', 0):,} held")
        lines += ["", "| Partner column | Field | Classification | Required | Used by |", "|---|---|---|---|---|"]
        for u in (u for u in uses if u.source == contract.source):
            lines.append(f"| `{u.partner_name}` | {u.field} | {u.classification} | {'yes' if u.required else 'no'} | {'; '.join(u.uses) if u.uses else '**nothing: flag for removal**'} |")
    lines += [
        "",
        "## What the pipeline writes, and who sees it",
        "",
        "| Output | Holds personal data | Who receives it |",
        "|---|---|---|",
        "| `packs/<month>/<locality>.html`, `.xlsx`, `.csv` | names, dates of birth, addresses of listed families' members; needs and reasons; "
        "each family's chronology (the date, member, agency and role of each partner record behind its indicators or of the last 12 months, "
        "never another field of it) and who else knows it (agencies, schools by name, services with case references) | that locality's allocation meeting only |",
        "| the returned XLSX pack (`meeting_outcomes`) | the meeting's decisions and notes; who last saved the workbook and when | loaded into the warehouse; shown in `meeting_decisions` and the audit log |",
        "| `packs/<month>/summary.html` | counts, and the references (no names) of allocated families still waiting for a lead practitioner | the meetings' chair |",
        "| `outcomes/<month>/programme_report.*`, `claim_evidence.csv` | family references and source row references, no names | programme lead, claims officer |",
        "| `family_scores.parquet`, `linked_records.parquet`, `warehouse.duckdb` | yes (pseudonymous references; the warehouse holds the partners' rows) | the council's analysts |",
        "| `subject_access/<request>/` | one person's rows | the data protection officer answering the request |",
        "| `model_card.*`, `linkage_report.html`, this pack, the ATRS record | counts and rates only | anyone |",
        "",
        "Every file and folder earlyhelp writes is readable by its owner only, and outputs are replaced atomically. "
        "Encryption at rest is the volume's: the output folder belongs on an encrypted volume (LUKS, BitLocker or the "
        "provider's encrypted disk). DuckDB's own encryption (`EARLYHELP_WAREHOUSE_KEY`) works only where its httpfs "
        f"extension is installed, which needs internet access{'; this run used it' if os.environ.get(KEY_ENV) else '; this run did not use it'}. "
        "Logs, Dagster metadata and error messages carry counts, column names and file names, never a value from a row.",
    ]
    return "\n".join(lines) + "\n"

