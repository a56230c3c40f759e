"""Standardise the fields people are matched on: names, dates, sex, postcodes, addresses.

Every function here is a Polars expression, so a million mentions are
standardised in one pass without Python loops.

>>> import polars as pl
>>> pl.select(name_key(pl.lit("  O'Brien-Smyth "))).item()
'OBRIEN SMYTH'
>>> pl.select(address_key(pl.lit("Flat 2, 17 Hawkins Cl."))).item()
'FLAT 2 17 HAWKINS CLOSE'
"""

from __future__ import annotations

import polars as pl

from ingestion.identifiers import postcode_normalised
from rules import POSTCODE_SPACED

# Abbreviations partners use for street types (Royal Mail and common usage), read as the full word.
STREET_ABBREVIATIONS = {
    "RD": "ROAD", "ST": "STREET", "AV": "AVENUE", "AVE": "AVENUE", "CL": "CLOSE", "LN": "LANE",
    "DR": "DRIVE", "CRES": "CRESCENT", "CRS": "CRESCENT", "GDNS": "GARDENS", "GR": "GROVE", "GRV": "GROVE",
    "PL": "PLACE", "CT": "COURT", "TERR": "TERRACE", "TCE": "TERRACE", "WLK": "WALK", "PDE": "PARADE",
    "SQ": "SQUARE", "HL": "HILL", "PK": "PARK",
}


def _plain(expr: pl.Expr) -> pl.Expr:
    """Upper case, accents removed (José -> JOSE), whitespace collapsed."""
    return (
        expr.str.normalize("NFKD")
        .str.replace_all(r"\p{M}", "")
        .str.to_uppercase()
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def name_key(expr: pl.Expr) -> pl.Expr:
    """A name as it is compared: letters only, apostrophes dropped, hyphens as spaces."""
    cleaned = _plain(expr).str.replace_all(r"['’`]", "").str.replace_all(r"[^A-Z ]", " ")
    cleaned = cleaned.str.replace_all(r"\s+", " ").str.strip_chars()
    return pl.when(cleaned == "").then(None).otherwise(cleaned)


def address_key(expr: pl.Expr) -> pl.Expr:
    """An address line as it is compared: punctuation removed, street types spelt out."""
    cleaned = _plain(expr).str.replace_all(r"[^A-Z0-9 ]", " ").str.replace_all(r"\s+", " ").str.strip_chars()
    tokens = cleaned.str.split(" ").list.eval(pl.element().replace(STREET_ABBREVIATIONS))
    joined = tokens.list.join(" ")
    return pl.when(joined == "").then(None).otherwise(joined)


def house_number(address: pl.Expr) -> pl.Expr:
    """The house number: the first number not part of a flat, e.g. 'FLAT 2 17 HAWKINS CLOSE' -> '17'."""
    without_flat = address.str.replace(r"^(FLAT|APARTMENT|UNIT|APT) [0-9A-Z]+ ", "")
    return without_flat.str.extract(r"\b([0-9]+[A-Z]?)\b", 1)


def flat_number(address: pl.Expr) -> pl.Expr:
    return address.str.extract(r"^(?:FLAT|APARTMENT|UNIT|APT) ([0-9A-Z]+) ", 1)


def postcode_parts(expr: pl.Expr, prefix: str = "postcode") -> list[pl.Expr]:
    """Full postcode, sector ('WD9 2') and district ('WD9'), each null when the shape is wrong."""
    full = postcode_normalised(expr)
    valid = full.str.contains(POSTCODE_SPACED)
    full = pl.when(valid).then(full).otherwise(None)
    return [
        full.alias(prefix),
        full.str.slice(0, full.str.len_chars() - 2).alias(f"{prefix}_sector"),
        full.str.split(" ").list.first().alias(f"{prefix}_district"),
    ]


def per_distinct_value(frame: pl.DataFrame, column: str, derived: dict[str, pl.Expr]) -> pl.DataFrame:
    """`derived` (expressions of `column`) computed once per distinct value and joined back: a
    county's millions of mentions hold tens of thousands of names and postcodes (its gazetteer,
    hundreds of thousands of properties in a few thousand streets), and the regular expressions
    and Unicode normalisation are the cost."""
    values = frame.select(pl.col(column).unique()).with_columns(**derived)
    return frame.join(values, on=column, how="left", nulls_equal=True, maintain_order="left")
