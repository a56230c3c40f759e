"""Many councils on one deployment: a shared data service or a supplier runs earlyhelp for several
local authorities, each its own data controller with its own contracts, landing folder,
warehouse, packs and IG pack. Nothing of one is ever read, joined or written with another's.

A deployment is described by one YAML file (its path in EARLYHELP_AUTHORITIES, or
`earlyhelp run --authorities`):

    authorities:
      - code: northshire            # the partition key: letters, digits, '-' and '_'
        name: Northshire County Council
        landing: /srv/earlyhelp/northshire/landing
        output: /srv/earlyhelp/northshire/out
        contracts: /srv/earlyhelp/northshire/contracts   # optional: the packaged contracts
        registry: /srv/earlyhelp/northshire/indicators.yaml   # optional: the packaged registry
        programme: supporting_families                    # optional
      - code: southvale
        ...

Relative paths are read from the file's own folder. The file is checked before anything runs:
codes unique; no folder shared by two authorities or inside another's (so no warehouse, landing
file or pack can be reached from the wrong authority); each authority's contracts describe the
same partner extracts as the packaged ones (the assets are the same for every authority; what an
authority may change is its columns, owners, lawful basis, retention and agreements).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from data_contracts import CONTRACTS_DIR, load_contracts, read_yaml
from rules import DEFAULT_PROGRAMME, PROGRAMMES

#: The environment variable naming a deployment's authorities file.
AUTHORITIES_ENV = "EARLYHELP_AUTHORITIES"

_CODE = re.compile(r"[A-Za-z0-9_-]{1,40}")


class AuthoritiesError(ValueError):
    """The authorities file is wrong; the message names the file and the authority."""


@dataclass(frozen=True)
class Authority:
    code: str
    name: str
    landing: Path
    output: Path
    contracts: Path = CONTRACTS_DIR
    registry: Path | None = None
    programme: str = DEFAULT_PROGRAMME


def load_authorities(path: Path) -> dict[str, Authority]:
    """The deployment's authorities by code, checked (see the module's docstring)."""
    path = Path(path).resolve()
    try:
        document = read_yaml(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise AuthoritiesError(f"{path}: no such authorities file") from None
    entries = document.get("authorities") if isinstance(document, dict) else None
    if not entries or not isinstance(entries, list):
        raise AuthoritiesError(f"{path}: expected a list under 'authorities'")
    base = path.parent

    def folder(value, what: str, code: str, required: bool = True) -> Path | None:
        if value in (None, ""):
            if required:
                raise AuthoritiesError(f"{path}: authority {code!r} has no {what}")
            return None
        return (base / str(value)).resolve()

    authorities: dict[str, Authority] = {}
    for n, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise AuthoritiesError(f"{path}: entry {n} is not a mapping")
        unknown = set(entry) - {"code", "name", "landing", "output", "contracts", "registry", "programme"}
        code = str(entry.get("code") or "")
        if unknown:
            raise AuthoritiesError(f"{path}: authority {code or n!r} has unknown keys {sorted(unknown)}")
        if not _CODE.fullmatch(code):
            raise AuthoritiesError(f"{path}: entry {n}: code {code!r} must be 1-40 letters, digits, '-' or '_'")
        if code in authorities:
            raise AuthoritiesError(f"{path}: authority code {code!r} appears twice")
        programme = str(entry.get("programme") or DEFAULT_PROGRAMME)
        if programme not in PROGRAMMES:
            raise AuthoritiesError(f"{path}: authority {code!r}: programme must be one of {sorted(PROGRAMMES)}")
        authorities[code] = Authority(
            code=code,
            name=str(entry.get("name") or code),
            landing=folder(entry.get("landing"), "landing folder", code),
            output=folder(entry.get("output"), "output folder", code),
            contracts=folder(entry.get("contracts"), "contracts folder", code, required=False) or CONTRACTS_DIR,
            registry=folder(entry.get("registry"), "registry", code, required=False),
            programme=programme,
        )
    _check_apart(path, authorities)
    _check_contracts(path, authorities)
    return authorities


def _inside(a: Path, b: Path) -> bool:
    return a == b or b in a.parents or a in b.parents


def _check_apart(path: Path, authorities: dict[str, Authority]) -> None:
    """No authority's landing or output folder is, holds or sits in another authority's."""
    folders = [(a.code, what, getattr(a, what)) for a in authorities.values() for what in ("landing", "output")]
    for i, (code, what, one) in enumerate(folders):
        for other_code, other_what, other in folders[i + 1:]:
            if code != other_code and _inside(one, other):
                raise AuthoritiesError(
                    f"{path}: authority {code!r}'s {what} folder and authority {other_code!r}'s {other_what} folder overlap ({one}, {other}): "
                    "each authority's files must be apart"
                )
        if what == "landing" and _inside(one, authorities[code].output):
            raise AuthoritiesError(f"{path}: authority {code!r}'s landing and output folders overlap")


def _check_contracts(path: Path, authorities: dict[str, Authority]) -> None:
    packaged = set(load_contracts(CONTRACTS_DIR))
    for authority in authorities.values():
        if authority.contracts == CONTRACTS_DIR:
            continue
        if not authority.contracts.is_dir():
            raise AuthoritiesError(f"{path}: authority {authority.code!r}: no contracts folder {authority.contracts}")
        own = set(load_contracts(authority.contracts))
        if own != packaged:
            missing, extra = sorted(packaged - own), sorted(own - packaged)
            raise AuthoritiesError(
                f"{path}: authority {authority.code!r}: its contracts must describe the packaged extracts "
                f"(missing: {', '.join(missing) or 'none'}; not known: {', '.join(extra) or 'none'})"
            )
