"""What uses each field a contract lets in: linkage, household formation, indicators, the
lists, decisions, retention. A field nothing uses is flagged for removal from the contract
(data minimisation).

Most uses are read off the code's own generated SQL (linkage's mentions query, the
indicator registry's conditions, the contracts' date and key expressions), so the pack
follows the code. Fields read by hand-written code are declared in CODE_USES, and a test
checks that each named module really mentions the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from data_contracts import Contract
from features.registry import Registry
from linkage.person_records import source_mentions_sql

#: Fields read by hand-written code: (source, field) -> (module, what for).
CODE_USES: dict[tuple[str, str], tuple[str, str]] = {
    ("open_cases", "service"): ("models/lists.py", "already-known, stuck and step-down flags; outcomes' case closure; the scorecard's escalation outcome"),
    ("open_cases", "open_date"): ("models/lists.py", "already-known, stuck and step-down flags; outcomes' case closure; the scorecard's escalation outcome"),
    ("open_cases", "close_date"): ("models/lists.py", "already-known and step-down flags; outcomes' case closure"),
    ("meeting_outcomes", "family_ref"): ("models/lists.py", "meeting decisions honoured on the next list; outcomes tracked"),
    ("meeting_outcomes", "meeting_date"): ("models/lists.py", "meeting decisions honoured on the next list; outcomes tracked"),
    ("meeting_outcomes", "decision"): ("models/lists.py", "meeting decisions honoured on the next list"),
    ("meeting_outcomes", "lead_agency"): ("models/lists.py", "allocated families' lead agency; programme report"),
    ("postcode_localities", "postcode"): ("models/lists.py", "which locality meeting discusses the family"),
    ("school_attendance", "school_name"): ("models/family_view.py", "who else knows the family: the school, by name"),
    ("open_cases", "case_id"): ("models/family_view.py", "who else knows the family: the case reference to ask about"),
    **{("address_gazetteer", f): ("linkage/gazetteer.py", "address matching: people at one property form one household")
       for f in ("uprn", "parent_uprn", "sao", "pao", "street", "postcode")},
    ("postcode_localities", "ward"): ("models/lists.py", "ward shown on the list"),
    ("postcode_localities", "locality"): ("models/lists.py", "which locality meeting discusses the family"),
}

#: Canonical person fields the locality lists print (from linked person records).
LIST_FIELDS = {
    "forename": "locality lists: member's name",
    "surname": "locality lists: member's name",
    "dob": "locality lists: member's date of birth",
    "postcode": "locality lists: address and locality",
    "address": "locality lists: address",
    "address_line_1": "locality lists: address",
    "address_line_2": "locality lists: address",
    "town": "locality lists: address",
}

_WORD = re.compile(r"[a-z_][a-z0-9_]*")


def _fields_in(sql: str | None, contract: Contract) -> set[str]:
    if not sql:
        return set()
    names = {c.name for c in contract.columns}
    return {w for w in _WORD.findall(sql.lower()) if w in names}


@dataclass(frozen=True)
class FieldUse:
    source: str
    field: str
    partner_name: str
    classification: str
    required: bool
    uses: tuple[str, ...]

    @property
    def unused(self) -> bool:
        return not self.uses


def field_uses(contracts: dict[str, Contract], registry: Registry) -> list[FieldUse]:
    """Every field of every contract with what uses it."""
    result = []
    for contract in contracts.values():
        uses: dict[str, list[str]] = {c.name: [] for c in contract.columns}

        def add(fields: set[str], use: str, uses: dict[str, list[str]] = uses) -> None:
            for f in sorted(fields):
                if use not in uses[f]:
                    uses[f].append(use)

        if contract.holds_people:
            add(_fields_in(source_mentions_sql(contract), contract), "linkage (matching people and forming households)")
            add({f for f in LIST_FIELDS if f in uses}, "locality lists (name, date of birth and address shown to the meeting)")
        for indicator in registry.indicators:
            if indicator.source == contract.source:
                add(indicator.rule.fields(indicator) & set(uses), f"indicator {indicator.id}")
            if indicator.unless_source == contract.source:
                add(_fields_in(indicator.unless_where, contract), f"indicator {indicator.id} (exception)")
        add(set(contract.natural_key), "natural key (a later row replaces an earlier one)")
        for prop, use in (("eventDate", "event date (indicator windows, recency)"), ("retentionDate", "retention"), ("eventRef", "event reference (counting distinct events)")):
            add(_fields_in(contract.custom.get(prop), contract), use)
        for (source, f), (_, use) in CODE_USES.items():
            if source == contract.source and f in uses:
                add({f}, use)
        for column in contract.columns:
            result.append(FieldUse(contract.source, column.name, column.partner_name, column.classification, column.required, tuple(uses[column.name])))
    return result
