"""Read and check the indicator registry (features/indicators.yaml, or a council's own copy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_contracts import load_contracts, read_yaml
from features.kinds import KINDS, IndicatorKind
from rules import AGE_GROUPS, PROGRAMMES

DEFAULT_REGISTRY = Path(__file__).resolve().parent / "indicators.yaml"

APPLIES_TO = tuple(AGE_GROUPS)


class RegistryError(ValueError):
    """An indicator the registry declares in a way that cannot be computed."""


@dataclass(frozen=True)
class Indicator:
    id: str
    title: str
    description: str
    kind: str
    points: int
    outcome: str
    problem: str
    sentence: str
    source: str | None = None
    applies_to: str = "any"
    where: str = "true"
    window_months: int = 12
    threshold: float = 1
    measure: str | None = None
    terms: int = 3
    start: str | None = None
    end: str | None = None
    of: str | None = None
    unless_source: str | None = None
    unless_where: str | None = None

    @property
    def rule(self) -> IndicatorKind:
        """How an indicator of this kind is computed, worded and read (features/kinds.py)."""
        return KINDS[self.kind]


@dataclass(frozen=True)
class Registry:
    indicators: tuple[Indicator, ...]
    source_caps: dict[str, int] = field(default_factory=dict)
    path: Path | None = None

    def get(self, indicator_id: str) -> Indicator:
        for indicator in self.indicators:
            if indicator.id == indicator_id:
                return indicator
        raise KeyError(indicator_id)


def _check(ind: Indicator, ids: set[str]) -> None:
    where = f"indicator {ind.id!r}"
    if ind.kind not in KINDS:
        raise RegistryError(f"{where}: kind {ind.kind!r} is not one of {tuple(KINDS)}")
    for programme in PROGRAMMES.values():
        need = getattr(ind, programme.need_field)
        if need not in programme.needs:
            raise RegistryError(f"{where}: {programme.need_field} {need!r} is not one of the {programme.title} {programme.need_word}")
    if ind.applies_to not in APPLIES_TO:
        raise RegistryError(f"{where}: applies_to {ind.applies_to!r} is not one of {APPLIES_TO}")
    if ind.points < 0:
        raise RegistryError(f"{where}: points cannot be negative")
    contracts = load_contracts()
    if not ind.rule.person_level:
        if ind.of not in ids:
            raise RegistryError(f"{where}: 'of' must name another indicator")
        return
    if ind.source not in contracts:
        raise RegistryError(f"{where}: source {ind.source!r} has no data contract")
    columns = {c.name for c in contracts[ind.source].columns}
    for name in (ind.measure, ind.start, ind.end):
        if name is not None and name not in columns:
            raise RegistryError(f"{where}: {ind.source} has no column {name!r}")
    problem = ind.rule.check(ind, columns)
    if problem:
        raise RegistryError(f"{where}: {problem}")


def load_registry(path: Path | None = None) -> Registry:
    path = Path(path or DEFAULT_REGISTRY)
    with path.open(encoding="utf-8") as fh:
        document: dict[str, Any] = read_yaml(fh)
    raw = document.get("indicators") or []
    fields = set(Indicator.__dataclass_fields__)
    indicators = []
    for item in raw:
        unknown = set(item) - fields
        if unknown:
            raise RegistryError(f"indicator {item.get('id')!r}: unknown keys {sorted(unknown)}")
        indicators.append(Indicator(**item))
    ids = [i.id for i in indicators]
    if len(set(ids)) != len(ids):
        raise RegistryError("indicator ids must be unique")
    for indicator in indicators:
        _check(indicator, set(ids))
    caps = {str(k): int(v) for k, v in (document.get("source_caps") or {}).items()}
    return Registry(indicators=tuple(indicators), source_caps=caps, path=path)
