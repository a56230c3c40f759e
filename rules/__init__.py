"""The programme's rules, each declared once and imported wherever it is applied.

A rule written in two places will one day say two things: this module holds the
rules that are not data about one source or one indicator (those live in the
data contracts and the indicator registry). Each rule is a plain value, with a
Polars expression or SQL fragment where several engines apply it.

>>> PROGRAMMES["troubled_families"].need_field
'problem'
>>> is_child_sql("m.age")
'm.age <= 17'
>>> looks_like_formula("=HYPERLINK(1)"), looks_like_formula("-12"), looks_like_formula("-A1")
(True, False, True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

# --- who is a child -------------------------------------------------------------------------
#: The oldest age at which a person counts as a child (Children Act 1989 s105: under 18).
CHILD_MAX_AGE = 17
#: Care leavers and young adults: the ages an indicator applying to `young_adult` reads.
YOUNG_ADULT_AGES = (18, 24)
#: Age bands linkage quality is reported by (ONS publishes its Census-PDS linkage by age and
#: finds 20-29 linked least well): (lowest age, highest age, label).
LINKAGE_AGE_BANDS = ((0, 4, "0-4"), (5, 15, "5-15"), (16, 19, "16-19"), (20, 29, "20-29"), (30, 49, "30-49"), (50, 200, "50+"))


def age_band(age):
    """A Polars expression: the LINKAGE_AGE_BANDS label of `age` (an expression), null when unknown."""
    band = pl.when(age.is_between(*LINKAGE_AGE_BANDS[0][:2])).then(pl.lit(LINKAGE_AGE_BANDS[0][2]))
    for low, high, label in LINKAGE_AGE_BANDS[1:]:
        band = band.when(age.is_between(low, high)).then(pl.lit(label))
    return band.otherwise(None)


def is_child(age: pl.Expr) -> pl.Expr:
    return age <= CHILD_MAX_AGE


def is_adult(age: pl.Expr) -> pl.Expr:
    return age > CHILD_MAX_AGE


def is_child_sql(age: str) -> str:
    return f"{age} <= {CHILD_MAX_AGE}"


#: The SQL predicate on a member's age for each `applies_to` an indicator may declare.
AGE_GROUPS = {
    "child": is_child_sql("m.age"),
    "adult": f"m.age > {CHILD_MAX_AGE}",
    "young_adult": f"m.age BETWEEN {YOUNG_ADULT_AGES[0]} AND {YOUNG_ADULT_AGES[1]}",
    "any": "true",
}

# --- children's services --------------------------------------------------------------------
#: Statutory children's social care: child in need, child protection, child looked after.
STATUTORY_SERVICES = ("CIN", "CP", "CLA")
#: The services whose case is the family's lead-practitioner case: early help, and Family Help
#: (the Families First Partnership service from 2025, joining targeted early help and child-in-need
#: work under one lead practitioner). A family open to one is already known, and the case's
#: closure starts the sustained-outcome clock.
LEAD_PRACTITIONER_SERVICES = ("EARLY_HELP", "FAMILY_HELP")

# --- programmes -----------------------------------------------------------------------------
#: Supporting Families headline outcomes (Supporting Families programme guidance 2022-25).
SUPPORTING_FAMILIES_OUTCOMES = (
    "getting a good education",
    "good early years development",
    "improved mental and physical health",
    "promoting recovery and reducing harm from substance use",
    "improved family relationships",
    "children safe from abuse and exploitation",
    "crime prevention and tackling crime",
    "safe from domestic abuse",
    "secure housing",
    "financial stability",
)
#: Troubled Families phase 2 headline problems (Financial Framework, March 2015).
TROUBLED_FAMILIES_PROBLEMS = (
    "crime and anti-social behaviour",
    "school attendance",
    "children who need help",
    "worklessness and financial exclusion",
    "domestic abuse",
    "health",
)


@dataclass(frozen=True)
class Programme:
    """A programme's eligibility rule: dependent children and at least `minimum` of its needs."""

    name: str
    title: str
    need_field: str  # the indicator registry's field naming the need an indicator evidences
    needs: tuple[str, ...]  # the programme's needs, in the order the pack draws them
    minimum: int
    need_word: str  # what the programme calls its needs, in sentences

    @property
    def rule(self) -> str:
        return f"dependent children and at least {self.minimum} {self.need_word}"


PROGRAMMES = {
    p.name: p
    for p in (
        # Supporting Families (2022-): dependent children and at least three headline outcomes.
        Programme("supporting_families", "Supporting Families", "outcome", SUPPORTING_FAMILIES_OUTCOMES, 3, "headline outcomes"),
        # Troubled Families phase 2 (2015-2020): dependent children and two of the six problems.
        Programme("troubled_families", "Troubled Families", "problem", TROUBLED_FAMILIES_PROBLEMS, 2, "headline problems"),
        # Families First Partnership (DfE, March 2025): targeted early help and child-in-need work as
        # Family Help; councils still report against the Supporting Families outcomes framework, so
        # the same ten outcomes and the same rule until a council edits them.
        Programme("families_first", "Families First Partnership (Family Help)", "outcome", SUPPORTING_FAMILIES_OUTCOMES, 3, "headline outcomes"),
    )
}
DEFAULT_PROGRAMME = "supporting_families"


def programme(name: str) -> Programme:
    try:
        return PROGRAMMES[name]
    except KeyError:
        raise ValueError(f"programme must be one of {sorted(PROGRAMMES)}, not {name!r}") from None


# --- spreadsheet formulas -------------------------------------------------------------------
# OWASP CSV injection: a cell starting with one of these can run as a formula when the
# file is opened in a spreadsheet. A plain negative number, or a lone dash some partners
# write for "none", are the harmless such values.
FORMULA_START = r"^[=+\-@\t\r]"
PLAIN_NEGATIVE_NUMBER = r"^-([0-9]+(\.[0-9]+)?)?$"
_FORMULA_START = re.compile(FORMULA_START)
_PLAIN_NEGATIVE_NUMBER = re.compile(PLAIN_NEGATIVE_NUMBER)


def looks_like_formula(value: str) -> bool:
    return bool(_FORMULA_START.match(value)) and not _PLAIN_NEGATIVE_NUMBER.match(value)


def looks_like_formula_expr(expr: pl.Expr) -> pl.Expr:
    return expr.str.contains(FORMULA_START) & ~expr.str.contains(PLAIN_NEGATIVE_NUMBER)


# --- postcodes ------------------------------------------------------------------------------
#: A UK postcode once spaces are removed and letters upper-cased: outward code, then inward code.
POSTCODE_COMPACT = r"^[A-Z]{1,2}[0-9][A-Z0-9]?[0-9][A-Z]{2}$"
#: The same shape written with its one space ('WD9 2WN'), as the pipeline stores it.
POSTCODE_SPACED = POSTCODE_COMPACT.replace("?[0-9]", "? [0-9]")

# --- names ----------------------------------------------------------------------------------
#: Names many women of Bangladeshi and Pakistani families carry where a surname is asked for,
#: in place of the family name their husband and children carry (ONS, "Names in the Census";
#: NHS Digital's PDS tracing guidance names them the commonest cause of failed traces). As
#: written by name_key. Such a name says nothing about which household a woman is of.
NAMES_IN_PLACE_OF_A_FAMILY_NAME = ("BEGUM", "KHATUN", "BIBI")
