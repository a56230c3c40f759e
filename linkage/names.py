"""Name knowledge for linkage: nicknames and phonetic keys.

Nicknames come from the `nicknames` package's hand-curated list (William/Bill,
Margaret/Peggy). Two forenames are nickname-equivalent when one is a nickname of
the other, or both are nicknames of one formal name. The canonical forename of
a name (for blocking) is the name itself when formal, else the first formal name
it is a nickname of.
"""

from __future__ import annotations

import csv
from functools import cache
from importlib import resources

import jellyfish
import polars as pl


@cache
def _formal_to_nicknames() -> dict[str, set[str]]:
    table: dict[str, set[str]] = {}
    with resources.files("nicknames").joinpath("names.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["relationship"] == "has_nickname":
                table.setdefault(row["name1"].upper(), set()).add(row["name2"].upper())
    return table


@cache
def nickname_pairs() -> pl.DataFrame:
    """Every ordered pair (a, b) of distinct forenames that are nickname-equivalent."""
    pairs: set[tuple[str, str]] = set()
    for formal, nicks in _formal_to_nicknames().items():
        group = sorted(nicks | {formal})
        for a in group:
            for b in group:
                if a != b:
                    pairs.add((a, b))
    a, b = zip(*sorted(pairs))
    return pl.DataFrame({"name_a": list(a), "name_b": list(b)})


@cache
def canonical_forenames() -> dict[str, str]:
    canonical: dict[str, str] = {}
    table = _formal_to_nicknames()
    for formal in sorted(table):
        for nick in table[formal]:
            canonical.setdefault(nick, formal)
    for formal in table:
        canonical[formal] = formal
    return canonical


def canonical_forename(expr: pl.Expr) -> pl.Expr:
    """BILL -> WILLIAM; a name the list does not know stays as it is."""
    mapping = canonical_forenames()
    return expr.replace(mapping)


def phonetic(values: pl.Series) -> pl.Series:
    """Double-metaphone-like key (jellyfish's metaphone) of each distinct value, mapped back."""
    distinct = values.drop_nulls().unique()
    keys = {v: (jellyfish.metaphone(v.replace(" ", "")) or v) for v in distinct.to_list()}
    return values.replace_strict(keys, default=None, return_dtype=pl.String)
