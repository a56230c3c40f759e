"""The data contracts: one Open Data Contract Standard (v3) YAML per source.

The YAML files beside this module are the single source of truth for what each
partner sends. This module reads them into small typed objects that ingestion,
the Great Expectations suites and the IG pack are derived from; nothing else in
the project restates a column list.

>>> contract = load_contract("asb_incidents")
>>> contract.column("dob").partner_name
'DOB'
>>> contract.natural_key
('incident_ref', 'role', 'forename', 'surname', 'dob')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

CONTRACTS_DIR = Path(__file__).resolve().parent

#: Classifications a column may carry, from least to most sensitive.
CLASSIFICATIONS = ("public", "internal", "personal", "special_category", "criminal_offence")

#: What a broken value does, per field (customProperties.onError).
ON_ERROR = ("quarantine", "setAside")

#: Who sends a source: a partner, under an information sharing agreement, or the council itself.
SOURCE_KINDS = ("partner", "reference")

#: Checks a contract may name for a column (implemented in ingestion.identifiers).
CHECKS = ("nhs_number", "upn", "nino", "uk_postcode")

_JDK_TOKENS = [
    ("yyyy", "%Y", r"[0-9]{4}"),
    ("MMM", "%b", r"[A-Za-z]{3}"),
    ("MM", "%m", r"[0-9]{2}"),
    ("dd", "%d", r"[0-9]{2}"),
    ("HH", "%H", r"[0-9]{2}"),
    ("mm", "%M", r"[0-9]{2}"),
    ("ss", "%S", r"[0-9]{2}"),
]


def jdk_format_to_strptime(fmt: str) -> tuple[str, str]:
    """Translate a JDK DateTimeFormatter pattern (as ODCS prescribes) to a
    strptime format and an anchored regular expression the value must match.

    >>> jdk_format_to_strptime("dd-MMM-yyyy")
    ('%d-%b-%Y', '^[0-9]{2}-[A-Za-z]{3}-[0-9]{4}$')
    >>> jdk_format_to_strptime("yyyy-MM-dd'T'HH:mm")[0]
    '%Y-%m-%dT%H:%M'
    """
    strptime, regex, i = [], [], 0
    while i < len(fmt):
        if fmt[i] == "'":
            end = fmt.index("'", i + 1)
            literal = fmt[i + 1 : end]
            strptime.append(literal)
            regex.append(re.escape(literal))
            i = end + 1
            continue
        for token, code, pattern in _JDK_TOKENS:
            if fmt.startswith(token, i):
                strptime.append(code)
                regex.append(pattern)
                i += len(token)
                break
        else:
            strptime.append(fmt[i])
            regex.append(re.escape(fmt[i]))
            i += 1
    return "".join(strptime), "^" + "".join(regex) + "$"


class ContractError(ValueError):
    """A contract file that cannot be used as it stands."""


@dataclass(frozen=True)
class Column:
    """One column of a partner's extract, as the contract describes it."""

    name: str  # the canonical field the pipeline uses
    partner_name: str  # the partner's column header
    logical_type: str  # string, date, timestamp, integer, boolean
    required: bool
    classification: str
    description: str = ""
    business_name: str = ""
    date_format: str | None = None  # JDK pattern, as in the contract
    pattern: str | None = None
    allowed_values: tuple[str, ...] | None = None
    minimum: Any = None
    maximum: Any = None
    check: str | None = None
    not_in_future: bool = False
    true_values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    standard_values: dict[str, str] = field(default_factory=dict)
    key_position: int | None = None
    key_fallback: tuple[str, ...] = ()
    # spec v2: a field that only helps to find the person or their home is set aside when its
    # value breaks the contract (the row still loads); any other broken field quarantines the row
    set_aside: bool = False
    # free text whose value may start like a formula (a note "=see minutes"): kept as text, never run;
    # every other field that does is refused (OWASP CSV injection)
    keep_formula_text: bool = False

    @property
    def strptime_format(self) -> str | None:
        return jdk_format_to_strptime(self.date_format)[0] if self.date_format else None

    @property
    def date_regex(self) -> str | None:
        return jdk_format_to_strptime(self.date_format)[1] if self.date_format else None


@dataclass(frozen=True)
class RowRule:
    """A rule over several columns of one row, written as a DuckDB predicate."""

    name: str
    predicate: str
    description: str


@dataclass(frozen=True)
class Contract:
    """A source's contract: its columns, rules, natural key and governance."""

    source: str  # the landing folder and the raw table's suffix
    title: str
    version: str
    kind: str  # partner (sent under an information sharing agreement) or reference (the council's own)
    columns: tuple[Column, ...]
    row_rules: tuple[RowRule, ...]
    retention_years: float | None
    custom: dict[str, Any]
    document: dict[str, Any]
    path: Path

    @property
    def natural_key(self) -> tuple[str, ...]:
        keyed = [c for c in self.columns if c.key_position is not None]
        return tuple(c.name for c in sorted(keyed, key=lambda c: c.key_position))

    @property
    def raw_table(self) -> str:
        return f"raw_{self.source}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.source} contract has no column {name!r}")

    def has_column(self, name: str) -> bool:
        return any(c.name == name for c in self.columns)

    @property
    def may_be_empty(self) -> bool:
        """Whether an empty (or absent) landing folder is normal, e.g. before any meeting has decided."""
        return bool(self.custom.get("mayBeEmpty", False))

    @property
    def agency(self) -> str:
        """Who holds this source's records, as a meeting names them ("School", "Police")."""
        return str(self.custom.get("agency", self.title))

    @property
    def holds_people(self) -> bool:
        """Whether rows of this source are mentions of a person (for linkage)."""
        return self.has_column("forename") and self.has_column("surname") and "personRole" in self.custom


def _custom(items: list[dict] | None) -> dict[str, Any]:
    return {item["property"]: item["value"] for item in items or []}


def _parse_column(prop: dict, source: str) -> Column:
    custom = _custom(prop.get("customProperties"))
    options = prop.get("logicalTypeOptions") or {}
    name = prop["name"]
    logical_type = prop.get("logicalType", "string")
    classification = prop.get("classification")
    if classification not in CLASSIFICATIONS:
        raise ContractError(f"{source}.{name}: classification {classification!r} is not one of {CLASSIFICATIONS}")
    check = custom.get("check")
    if check is not None and check not in CHECKS:
        raise ContractError(f"{source}.{name}: unknown check {check!r}")
    if logical_type == "boolean" and not (custom.get("trueValues") and custom.get("falseValues")):
        raise ContractError(f"{source}.{name}: a boolean column needs trueValues and falseValues")
    if logical_type in ("date", "timestamp") and not options.get("format"):
        raise ContractError(f"{source}.{name}: a {logical_type} column needs logicalTypeOptions.format")
    if prop.get("primaryKey") and not prop.get("required"):
        # a partner may leave it blank, so it cannot be a primary key: declare it naturalKeyPosition
        raise ContractError(f"{source}.{name}: a primary key column must be required; a natural key that may be blank is declared with customProperties.naturalKeyPosition")
    on_error = custom.get("onError", "quarantine")
    if on_error not in ON_ERROR:
        raise ContractError(f"{source}.{name}: onError must be one of {ON_ERROR}")
    if on_error == "setAside" and prop.get("primaryKey"):
        raise ContractError(f"{source}.{name}: a primary key defines the row, so it cannot be set aside")
    enum = prop.get("enum")
    return Column(
        name=name,
        partner_name=prop.get("physicalName", name),
        logical_type=logical_type,
        required=bool(prop.get("required", False)),
        classification=classification,
        description=prop.get("description", ""),
        business_name=prop.get("businessName", ""),
        date_format=options.get("format") if logical_type in ("date", "timestamp") else None,
        pattern=options.get("pattern"),
        allowed_values=tuple(str(e["value"]) for e in enum) if enum else None,
        minimum=options.get("minimum"),
        maximum=options.get("maximum"),
        check=check,
        not_in_future=bool(custom.get("notInFuture", False)),
        true_values=tuple(str(v) for v in custom.get("trueValues", ())),
        false_values=tuple(str(v) for v in custom.get("falseValues", ())),
        standard_values={str(k): str(v) for k, v in (custom.get("standardValues") or {}).items()},
        # the natural key a later row replaces an earlier one by: the primary key where every part is
        # always sent, else the positions declared as naturalKeyPosition
        key_position=prop.get("primaryKeyPosition") if prop.get("primaryKey") else custom.get("naturalKeyPosition"),
        key_fallback=tuple(custom.get("keyFallback", ())),
        set_aside=on_error == "setAside",
        keep_formula_text=bool(custom.get("keepFormulaText", False)),
    )


def parse_contract(document: dict, path: Path) -> Contract:
    """Build a Contract from a parsed ODCS document."""
    custom = _custom(document.get("customProperties"))
    source = custom.get("landingFolder")
    if not source:
        raise ContractError(f"{path.name}: customProperties.landingFolder is missing")
    schema = document.get("schema") or []
    if len(schema) != 1:
        raise ContractError(f"{path.name}: expected exactly one schema object, found {len(schema)}")
    obj = schema[0]
    columns = tuple(_parse_column(p, source) for p in obj.get("properties", []))
    names = [c.name for c in columns]
    partner = [c.partner_name.strip().lower() for c in columns]
    if len(set(names)) != len(names) or len(set(partner)) != len(partner):
        raise ContractError(f"{path.name}: column names must be unique")
    for c in columns:
        for other in c.key_fallback:
            if other not in names:
                raise ContractError(f"{path.name}: {c.name} keyFallback names unknown column {other!r}")
    rules = tuple(
        RowRule(q["name"], q["implementation"], q.get("description", ""))
        for q in obj.get("quality") or []
        if q.get("type") == "custom" and q.get("engine") == "duckdb"
    )
    retention = None
    for sla in document.get("slaProperties") or []:
        if sla.get("property") == "retention":
            unit = str(sla.get("unit", "y")).lower()
            value = float(sla["value"])
            retention = value if unit in ("y", "yr", "years") else value / 365.25 if unit in ("d", "day", "days") else None
    conditions = " ".join(str(custom.get(k) or "") for k in ("specialCategoryCondition", "criminalOffenceCondition"))
    policies = [d for d in document.get("authoritativeDefinitions") or [] if d.get("type") == "appropriatePolicyDocument"]
    if re.search(r"Schedule\s+1\s+Part\s+2", conditions) and not policies:
        # DPA 2018 Sch 1 para 5: a Part 2 condition is met only with an appropriate policy document in place
        raise ContractError(f"{path.name}: a Schedule 1 Part 2 condition needs an authoritativeDefinitions entry of type appropriatePolicyDocument")
    if custom.get("sourceKind", "partner") not in SOURCE_KINDS:
        raise ContractError(f"{path.name}: customProperties.sourceKind must be one of {SOURCE_KINDS}")
    return Contract(
        source=source,
        title=document.get("name", source),
        version=str(document.get("version", "")),
        kind=custom.get("sourceKind", "partner"),
        columns=columns,
        row_rules=rules,
        retention_years=retention,
        custom=custom,
        document=document,
        path=path,
    )


#: libyaml's parser where PyYAML has it (its wheels do), else PyYAML's own: both safe (no objects
#: built from tags) and read the same documents; libyaml reads the contracts in 0.04 s rather than
#: 0.41 and the indicator registry in 6 rather than 56 ms, and every run's process reads them.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(stream: Any) -> Any:
    """A YAML document (text or an open file) as `yaml.safe_load` reads it: contracts, the
    indicator registry and a deployment's authorities file are read with this one reader."""
    return yaml.load(stream, Loader=_SAFE_LOADER)


def contract_paths(directory: Path = CONTRACTS_DIR) -> list[Path]:
    return sorted(directory.glob("*.yaml"))


@cache
def load_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    """All contracts in a folder, by source name."""
    contracts = {}
    for path in contract_paths(directory):
        with path.open(encoding="utf-8") as fh:
            contract = parse_contract(read_yaml(fh), path)
        contracts[contract.source] = contract
    return contracts


def load_contract(source: str, directory: Path = CONTRACTS_DIR) -> Contract:
    try:
        return load_contracts(directory)[source]
    except KeyError:
        raise KeyError(f"no data contract for source {source!r}") from None


def sources_of_kind(kind: str, directory: Path = CONTRACTS_DIR) -> tuple[str, ...]:
    """The sources whose contracts declare this `sourceKind`: 'partner' or 'reference' (the council's own)."""
    if kind not in SOURCE_KINDS:
        raise ValueError(f"kind must be one of {SOURCE_KINDS}")
    return tuple(source for source, contract in load_contracts(directory).items() if contract.kind == kind)
