"""Identifier checks: NHS number, unique pupil number, NINO and postcode.

Each check exists twice on purpose: a plain Python function (the generator
uses it to make valid numbers, tests use it as the reference) and a Polars
expression that checks a whole column at once during ingestion.

>>> nhs_check_digit("943476591")
9
>>> is_valid_nhs_number("943 476 5919")
True
>>> upn_check_letter("919288923761")
'T'
"""

from __future__ import annotations

import re

import polars as pl

from rules import POSTCODE_COMPACT

# DfE "Unique Pupil Numbers (UPNs): A guide for schools and local authorities":
# the check letter is the sum of digits 2-13 weighted 2..13, modulo 23, read
# from this alphabet (no I, O or S).
UPN_CHECK_LETTERS = "ABCDEFGHJKLMNPQRTUVWXYZ"
NINO_PATTERN = r"^[A-Z]{2}[0-9]{6}[A-D]$"


def nhs_check_digit(first_nine: str) -> int | None:
    """Modulus-11 check digit for the first nine digits; None where no valid digit exists."""
    total = sum(int(d) * (10 - i) for i, d in enumerate(first_nine))
    check = 11 - total % 11
    if check == 11:
        return 0
    if check == 10:
        return None
    return check


def is_valid_nhs_number(value: str) -> bool:
    digits = value.replace(" ", "")
    if not re.fullmatch(r"[0-9]{10}", digits):
        return False
    return nhs_check_digit(digits[:9]) == int(digits[9])


def upn_check_letter(twelve_digits: str) -> str:
    total = sum(int(d) * (i + 2) for i, d in enumerate(twelve_digits))
    return UPN_CHECK_LETTERS[total % 23]


def is_valid_upn(value: str) -> bool:
    if not re.fullmatch(r"[A-Z][0-9]{12}", value):
        return False
    return upn_check_letter(value[1:]) == value[0]


def normalise_postcode(value: str) -> str:
    compact = re.sub(r"\s+", "", value).upper()
    return f"{compact[:-3]} {compact[-3:]}" if len(compact) > 3 else compact


def _digit(expr: pl.Expr, i: int) -> pl.Expr:
    return expr.str.slice(i, 1).cast(pl.Int32, strict=False)


def _digits(number: pl.Expr, count: int) -> list[pl.Expr]:
    """The `count` decimal digits of `number`, the first the most significant (leading zeros
    included), by arithmetic on the value read as one integer rather than each digit sliced from
    its text (`_digit`): a 1.2M county's 1.2M distinct NHS numbers checked in 0.19 rather than
    0.51 s. A UPN's twelve digits are not: sliced after its letter, school attendance's 2.16M took
    0.32 s, by arithmetic 0.35."""
    return [(number // 10 ** (count - 1 - i)) % 10 for i in range(count)]


def nhs_number_is_valid(expr: pl.Expr) -> pl.Expr:
    """True where the value (spaces allowed) is ten digits with a correct modulus-11 check digit."""
    digits = expr.str.replace_all(" ", "", literal=True)
    shaped = digits.str.contains(r"^[0-9]{10}$")
    # only a value of ten digits is read as a number (a sign or a space is not a digit)
    d = _digits(pl.when(shaped).then(digits.cast(pl.Int64, strict=False)), 10)
    total = pl.sum_horizontal([d[i] * (10 - i) for i in range(9)])
    check = 11 - total % 11
    expected = pl.when(check == 11).then(0).otherwise(check)
    return shaped & (expected != 10) & (expected == d[9])


def upn_is_valid(expr: pl.Expr) -> pl.Expr:
    shaped = expr.str.contains(r"^[A-Z][0-9]{12}$")
    total = pl.sum_horizontal([_digit(expr, i + 1) * (i + 2) for i in range(12)])
    letters = pl.lit(UPN_CHECK_LETTERS)
    expected = letters.str.slice((total % 23).cast(pl.Int64), 1)
    return shaped & (expr.str.slice(0, 1) == expected)


def nino_is_valid(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(" ", "", literal=True).str.contains(NINO_PATTERN)


def postcode_is_valid(expr: pl.Expr) -> pl.Expr:
    return expr.str.replace_all(r"\s+", "").str.to_uppercase().str.contains(POSTCODE_COMPACT)


def postcode_normalised(expr: pl.Expr) -> pl.Expr:
    """Upper case with one space before the inward code: 'wd92wn' -> 'WD9 2WN'."""
    compact = expr.str.replace_all(r"\s+", "").str.to_uppercase()
    return pl.concat_str([compact.str.slice(0, compact.str.len_chars() - 3), pl.lit(" "), compact.str.slice(-3)])


#: Polars check for each check name a contract may use, with the reason given when it fails.
COLUMN_CHECKS = {
    "nhs_number": (nhs_number_is_valid, "is not a valid NHS number (ten digits, modulus-11 check digit)"),
    "upn": (upn_is_valid, "is not a valid UPN (check letter and twelve digits)"),
    "nino": (nino_is_valid, "is not a valid National Insurance number (two letters, six digits, A-D)"),
    "uk_postcode": (postcode_is_valid, "is not shaped like a UK postcode"),
}
