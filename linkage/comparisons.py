"""The linkage model's comparisons and blocking rules, as objects (Splink's split).

A `Comparison` holds its levels, best first; each `Level` its SQL condition, its
label and a worked example (two profiles that land on it), so the comparison's
CASE expression, its labels, the profile fields it reads, its term frequencies
and the EM sessions it is free in are all generated from one declaration, and a
test runs every example through the generated SQL. A `BlockingRule` (`block_on`)
is shared by candidate generation and the EM training sessions.

Adding a comparison is one `Comparison(...)` in `COMPARISON_LIST`; the fields it
reads join the profiles by themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOT_COMPARABLE = -1


def jaro_winkler(a: str, b: str) -> str:
    return f"jaro_winkler_similarity({a}, {b})"


@dataclass(frozen=True)
class Level:
    label: str
    sql: str | None  # the condition, over the pair's profiles `l` and `r`; None: whatever no better level took
    example: tuple[dict[str, Any], dict[str, Any]] = ((), ())  # two profiles (fields not named are blank)


@dataclass(frozen=True)
class Comparison:
    """One comparison: levels best first; code k is the k-th level from the worst (0)."""

    name: str
    levels: tuple[Level, ...]
    fields: tuple[str, ...]  # the profile fields it owns, in the profile's order
    not_comparable: str | None = None  # when neither side can be judged: no evidence either way
    keys: tuple[str, ...] = ()  # derived blocking keys that fix it too (a phonetic surname fixes the surname)
    term_frequency: bool = False  # exact agreement weighed by how common the value is

    @property
    def labels(self) -> tuple[str, ...]:
        """Labels by code: index 0 is the worst level."""
        return tuple(level.label for level in reversed(self.levels))

    @property
    def fixed_by(self) -> frozenset[str]:
        """Fields a blocking rule may equate that force this comparison to agree."""
        return frozenset(self.fields) | frozenset(self.keys)

    def case_sql(self) -> str:
        return f"{self.level_sql()} AS {self.name}"

    def level_sql(self) -> str:
        """The CASE expression giving a pair's level code."""
        whens = [f"WHEN {self.not_comparable} THEN {NOT_COMPARABLE}"] if self.not_comparable else []
        otherwise = NOT_COMPARABLE
        for code, level in zip(range(len(self.levels) - 1, -1, -1), self.levels):
            if level.sql is None:
                otherwise = code
            else:
                whens.append(f"WHEN {level.sql} THEN {code}")
        return "CASE " + "\n         ".join(whens) + f"\n         ELSE {otherwise} END"


#: Blocking reads each profile from a table of its own, `blocking_keys` (`linkage.model.hold_blocking_keys`),
#: where every text field a rule equates is an integer code (BLOCKING_CODED), one dictionary for
#: all of them, so that two codes are equal exactly where the two texts are (a forename against a
#: surname too) and null where the text is: DuckDB joins a county's 1.9M profiles on integers in
#: two thirds of the time it takes on text (at 1.2M residents the sixteen rules' union 4.1 -> 2.7 s,
#: the same 4,065,344 pairs). The identifiers and dates are read as they are (BLOCKING_AS_THEY_ARE):
#: coding 820,000 distinct NHS numbers costs more than their joins (0.03-0.12 s each) would save.
#: `forename_initial` is a forename's first character. A rule reads nothing else: a string
#: function of a code fails to bind, and a test holds every rule to these columns.
BLOCKING_TABLE = "blocking_keys"
BLOCKING_CODED = (
    "forename", "surname", "forename_canonical", "surname_phonetic", "forename_initial",
    "postcode", "postcode_sector", "postcode_district", "house_number",
)
BLOCKING_AS_THEY_ARE = ("dob", "birth_year", "nhs_number", "upn", "nino")


@dataclass(frozen=True)
class BlockingRule:
    """Profiles meet as a candidate pair when `sql` holds; `fields` are the ones it equates. The
    SQL reads the blocking keys of the two profiles `l` and `r` (BLOCKING_TABLE)."""

    name: str
    sql: str
    fields: frozenset[str] = field(default_factory=frozenset)

    def pairs_sql(self, left: str = BLOCKING_TABLE, right: str = BLOCKING_TABLE) -> str:
        return f"SELECT l.pid AS l, r.pid AS r FROM {left} l JOIN {right} r ON {self.sql} AND l.pid < r.pid"


def block_on(*fields: str, name: str, also: str | None = None) -> BlockingRule:
    """Pairs agreeing exactly on every field (and on `also`, a further condition)."""
    sql = " AND ".join([f"l.{f} = r.{f}" for f in fields] + ([also] if also else []))
    return BlockingRule(name, sql, frozenset(fields))


_SWAPPED = f"({jaro_winkler('l.forename', 'r.surname')} >= 0.92 AND {jaro_winkler('l.surname', 'r.forename')} >= 0.92)"
_NAMES_SWAPPED = "(l.forename = r.surname AND l.surname = r.forename)"


def one_slip(a: str, b: str) -> str:
    """SQL: `a` and `b` are one keying slip apart (Damerau-Levenshtein distance 1: a character
    changed, added or dropped, or two neighbours swapped), null where either is. The distance is
    the costly part of a county's comparisons (8M pairs, most of them two people's different
    numbers), so it is worked out only where the strings share their first three characters or
    their last three: one slip in a string of seven or more leaves one of those as it was (it
    touches at most two neighbouring places, and what follows an added or dropped character is
    the same counted from the end). Shorter strings are always measured."""
    return (
        f"CASE WHEN left({a}, 3) = left({b}, 3) OR right({a}, 3) = right({b}, 3) OR least(length({a}), length({b})) < 7 "
        f"THEN damerau_levenshtein({a}, {b}) = 1 END"
    )


#: Birth dates written YYYYMMDD: a slip touches at most two neighbouring digits, so it leaves the
#: year or the day as it was. Only there is the distance measured (2.1 rather than 6.7 s over the
#: 8.4M candidate pairs at 1.2M residents, the same levels); a year outside four digits always is.
_DOB_DIGITS = "strftime({side}.dob, '%Y%m%d')"
_DOB_SLIP_POSSIBLE = (
    "year(l.dob) = year(r.dob) OR day(l.dob) = day(r.dob) OR year(l.dob) NOT BETWEEN 1000 AND 9999 OR year(r.dob) NOT BETWEEN 1000 AND 9999"
)


def _same_dob_slip() -> str:
    digits = f"damerau_levenshtein({_DOB_DIGITS.format(side='l')}, {_DOB_DIGITS.format(side='r')}) = 1"
    return f"abs(date_diff('day', l.dob, r.dob)) = 1 OR CASE WHEN {_DOB_SLIP_POSSIBLE} THEN {digits} END"


#: The identifiers partners copy from a register, one comparison between them.
IDENTIFIER_FIELDS = ("nhs_number", "upn", "nino")


def _identifiers(test: str) -> str:
    return " OR ".join(test.format(f=f) for f in IDENTIFIER_FIELDS)


FORENAME = Comparison(
    "forename",
    levels=(
        Level("exact", f"l.forename = r.forename OR {_NAMES_SWAPPED}", ({"forename": "ANN"}, {"forename": "ANN"})),
        Level(
            "nickname",
            "l.preferred_forename = r.forename OR r.preferred_forename = l.forename OR l.preferred_forename = r.preferred_forename "
            "OR (l.forename, r.forename) IN (SELECT (name_a, name_b) FROM nicknames)",
            ({"forename": "WILLIAM"}, {"forename": "BILL"}),
        ),
        Level("close", f"{jaro_winkler('l.forename', 'r.forename')} >= 0.92 OR {_SWAPPED}", ({"forename": "MOHAMMED"}, {"forename": "MOHAMMAD"})),
        Level("similar", f"{jaro_winkler('l.forename', 'r.forename')} >= 0.85", ({"forename": "JOHN"}, {"forename": "JOAN"})),
        Level("initial", "left(l.forename, 1) = left(r.forename, 1)", ({"forename": "ANN"}, {"forename": "ALICE"})),
        Level("different", None, ({"forename": "ANN"}, {"forename": "ZOE"})),
    ),
    fields=("forename", "preferred_forename"),
    not_comparable="l.forename IS NULL OR r.forename IS NULL",
    keys=("forename_canonical",),
    term_frequency=True,
)
SURNAME = Comparison(
    "surname",
    levels=(
        Level("exact", f"l.surname = r.surname OR {_NAMES_SWAPPED}", ({"surname": "LEE"}, {"surname": "LEE"})),
        Level("close", f"{jaro_winkler('l.surname', 'r.surname')} >= 0.92 OR {_SWAPPED}", ({"surname": "MACDONALD"}, {"surname": "MCDONALD"})),
        Level("similar", f"{jaro_winkler('l.surname', 'r.surname')} >= 0.85", ({"surname": "SMITH"}, {"surname": "SMYTHE"})),
        Level("different", None, ({"surname": "LEE"}, {"surname": "OYELARAN"})),
    ),
    fields=("surname",),
    not_comparable="l.surname IS NULL OR r.surname IS NULL",
    keys=("surname_phonetic",),
    term_frequency=True,
)
# A birth year is the date's year where the date is known (else the event's year less the
# stated age), so "within one year" reads the same for dates and stated ages alike.
DOB = Comparison(
    "dob",
    levels=(
        Level("exact", "l.dob = r.dob", ({"dob": "2015-03-04", "birth_year": 2015}, {"dob": "2015-03-04", "birth_year": 2015})),
        Level(
            "day and month transposed",
            "year(l.dob) = year(r.dob) AND month(l.dob) = day(r.dob) AND day(l.dob) = month(r.dob)",
            ({"dob": "2015-03-04", "birth_year": 2015}, {"dob": "2015-04-03", "birth_year": 2015}),
        ),
        Level("one slip", _same_dob_slip(), ({"dob": "2015-03-14", "birth_year": 2015}, {"dob": "2015-03-15", "birth_year": 2015})),
        Level("year and month", "year(l.dob) = year(r.dob) AND month(l.dob) = month(r.dob)", ({"dob": "2015-03-04", "birth_year": 2015}, {"dob": "2015-03-27", "birth_year": 2015})),
        Level("birth year within one", "abs(l.birth_year - r.birth_year) <= 1", ({"dob": "2015-03-04", "birth_year": 2015}, {"birth_year": 2016})),
        Level("different", None, ({"dob": "2015-03-04", "birth_year": 2015}, {"dob": "1985-11-20", "birth_year": 1985})),
    ),
    fields=("dob", "birth_year"),
    not_comparable="l.birth_year IS NULL OR r.birth_year IS NULL",
)
POSTCODE = Comparison(
    "postcode",
    levels=(
        Level("exact", "l.postcode = r.postcode", ({"postcode": "WD9 2WN"}, {"postcode": "WD9 2WN"})),
        Level("sector", "l.postcode_sector = r.postcode_sector", ({"postcode": "WD9 2WN", "postcode_sector": "WD9 2"}, {"postcode": "WD9 2AB", "postcode_sector": "WD9 2"})),
        Level(
            "district", "l.postcode_district = r.postcode_district",
            ({"postcode": "WD9 2WN", "postcode_sector": "WD9 2", "postcode_district": "WD9"}, {"postcode": "WD9 5AB", "postcode_sector": "WD9 5", "postcode_district": "WD9"}),
        ),
        Level("different", None, ({"postcode": "WD9 2WN", "postcode_district": "WD9"}, {"postcode": "EN1 7PF", "postcode_district": "EN1"})),
    ),
    fields=("postcode", "postcode_sector", "postcode_district"),
    not_comparable="l.postcode IS NULL OR r.postcode IS NULL",
)
ADDRESS = Comparison(
    "address",
    levels=(
        Level("exact", "l.address = r.address", ({"address": "14 MILL LANE"}, {"address": "14 MILL LANE"})),
        Level(
            "same house", f"l.house_number = r.house_number AND {jaro_winkler('l.street', 'r.street')} >= 0.9",
            ({"address": "FLAT 2 14 MILL LANE", "house_number": "14", "street": "MILL LANE"}, {"address": "14 MILL LANE", "house_number": "14", "street": "MILL LANE"}),
        ),
        Level(
            "same street", f"{jaro_winkler('l.street', 'r.street')} >= 0.9",
            ({"address": "14 MILL LANE", "house_number": "14", "street": "MILL LANE"}, {"address": "3 MILL LANE", "house_number": "3", "street": "MILL LANE"}),
        ),
        Level("different", None, ({"address": "14 MILL LANE", "street": "MILL LANE"}, {"address": "2 HIGH STREET", "street": "HIGH STREET"})),
    ),
    fields=("address", "house_number", "street"),
    not_comparable="l.address IS NULL OR r.address IS NULL",
)
SEX = Comparison(
    "sex",
    levels=(
        Level("same", "l.sex = r.sex", ({"sex": "F"}, {"sex": "F"})),
        Level("different", None, ({"sex": "F"}, {"sex": "M"})),
    ),
    fields=("sex",),
    # stated as not known (A&E's 9, police's UNKNOWN): no evidence
    not_comparable="NOT coalesce(l.sex IN ('M', 'F') AND r.sex IN ('M', 'F'), false)",
)
IDENTIFIER = Comparison(
    "identifier",
    levels=(
        Level("same", _identifiers("l.{f} = r.{f}"), ({"nhs_number": "9434765919"}, {"nhs_number": "9434765919"})),
        # a keying slip: one digit changed, or two neighbours swapped
        # (measured only where a slip is possible: 3.9 rather than 8.3 s over the candidate pairs at 1.2M residents)
        Level("one slip", _identifiers(one_slip("l.{f}", "r.{f}")), ({"nhs_number": "9434765919"}, {"nhs_number": "9434769519"})),
        Level("different", _identifiers("l.{f} <> r.{f}"), ({"nhs_number": "9434765919"}, {"nhs_number": "4010232137"})),
    ),
    # not comparable: no identifier held by both sides, where every level's condition is null. Said
    # first, so the slip's string functions are not worked out for the most of a county's candidate
    # pairs, whose two profiles hold no identifier in common (4.6M of 8.4M at 1.2M residents: their
    # comparison 11.3 -> 10.4 s, the same levels).
    fields=IDENTIFIER_FIELDS,
    not_comparable=" AND ".join(f"(l.{f} IS NULL OR r.{f} IS NULL)" for f in IDENTIFIER_FIELDS),
)

#: The comparisons, in the order the model weighs them.
COMPARISON_LIST = (FORENAME, SURNAME, DOB, SEX, POSTCODE, ADDRESS, IDENTIFIER)
COMPARISONS_BY_NAME = {c.name: c for c in COMPARISON_LIST}
#: The fields a profile (one distinct description of a person) is made of, and keyed by.
PROFILE_FIELDS = tuple(f for c in COMPARISON_LIST for f in c.fields)
TF_FIELDS = tuple(c.name for c in COMPARISON_LIST if c.term_frequency)


def comparison_sql() -> str:
    """The SELECT list of every comparison's level, then whether the pair shares each name whose
    frequency adjusts an exact match."""
    return ",\n    ".join([c.case_sql() for c in COMPARISON_LIST] + term_value_sql())


def term_value_sql() -> list[str]:
    """The SELECT items saying whether a pair shares each name whose frequency adjusts an exact
    match (`same_forename`, ...; null where either lacks it): the name itself is the left
    profile's, whose frequency the scoring looks up by the profile, so a pair carries no text."""
    return [f"l.{name} = r.{name} AS same_{name}" for name in TF_FIELDS]


def free_in(rule: BlockingRule) -> tuple[str, ...]:
    """The comparisons a session blocked on `rule` can estimate: those the rule does not force to agree."""
    return tuple(c.name for c in COMPARISON_LIST if not (c.fixed_by & rule.fields))


# ----------------------------------------------------------------- blocking

DOB_AND_PHONETIC_SURNAME = block_on("dob", "surname_phonetic", name="dob and phonetic surname")
DOB_AND_FORENAME = block_on("dob", "forename_canonical", name="dob and forename")

#: Two profiles at one postcode or address who might be one person: one with no birth date, two
#: born in one year (a day or month mis-keyed) or on one day of the year (the year mis-keyed), or
#: two whose forenames start alike. Two born on different days of different years whose forenames
#: start apart are two people (most often one household's) unless an identifier says otherwise,
#: and the identifier rules pair those. With this condition on the household rules and no rule on
#: a birth date and district alone (below), a 1.2M county's candidate pairs went from 8.4M to 4.1M
#: (one of the 4.4M a true match, not linked with or without it) and the reviewers' queue of
#: uncertain pairs from 298,000 to 86,000, every true match in it kept (1,973). Persons and
#: families stayed the same on that county, on fifteen of 20,000 residents and on nine of 200,000
#: (seeds 3, 7, 11, 19, 23 and 3, 11, 19; every recording mode).
MIGHT_BE_ONE_PERSON = (
    "(l.dob IS NULL OR r.dob IS NULL OR l.birth_year = r.birth_year"
    " OR (month(l.dob) = month(r.dob) AND day(l.dob) = day(r.dob)) OR l.forename_initial = r.forename_initial)"
)

#: Candidate pairs are the union of these, so one error in one field does not lose a true pair.
#: No rule pairs two profiles sharing only a birth date and a postcode district: at 1.2M residents
#: such a rule made 843,000 pairs no other rule made, one of them two profiles of one person (a
#: surname changed and a forename shortened), which the model scored apart: two names apart and no
#: identifier in common score as two people. A birth date within a postcode sector is still a rule.
BLOCKING_RULES = (
    DOB_AND_PHONETIC_SURNAME,
    DOB_AND_FORENAME,
    block_on("surname_phonetic", "forename_canonical", "postcode_district", name="phonetic surname, forename and district"),
    # with the birth year: forename and surname alone pair every John Smith in the county, which
    # grows with the square of its size; a wrong birth year is still caught by the rule above
    # (phonetic surname, forename and district)
    block_on("forename_canonical", "surname", "birth_year", name="forename, surname and birth year"),
    # ...and a mention with no birth date or age at all (an adult in a police notification,
    # say) still meets its namesakes in its postcode district (county-wide, every such John
    # Smith would meet every other: pairs growing with the square of the county)
    block_on("forename_canonical", "surname", name="forename and surname, left without birth year", also="l.birth_year IS NULL AND l.postcode_district = r.postcode_district"),
    block_on("forename_canonical", "surname", name="forename and surname, right without birth year", also="r.birth_year IS NULL AND l.postcode_district = r.postcode_district"),
    # the household rules: two at one address or postcode, kept only if they might be one person
    block_on("surname", "postcode", name="surname and postcode", also=MIGHT_BE_ONE_PERSON),
    block_on("forename_canonical", "postcode", name="forename and postcode"),
    block_on("postcode", "house_number", name="postcode and house number", also=MIGHT_BE_ONE_PERSON),
    block_on("dob", "postcode_sector", name="dob and postcode sector"),
    block_on("nhs_number", name="NHS number"),
    block_on("upn", name="UPN"),
    block_on("nino", name="NINO"),
    BlockingRule("names swapped, same district", "l.forename = r.surname AND l.surname = r.forename AND l.postcode_district = r.postcode_district"),
    # one name swapped is two rules: joined on "l.forename = r.surname OR l.surname = r.forename",
    # DuckDB paired every two profiles of a birth date and then filtered (3 s of the 10 blocking took at 1.2M)
    BlockingRule("names swapped, same birth date (forename as surname)", "l.dob = r.dob AND l.forename = r.surname"),
    BlockingRule("names swapped, same birth date (surname as forename)", "l.dob = r.dob AND l.surname = r.forename"),
)

#: EM sessions, as Splink trains: each blocks on some fields and estimates m for the comparisons
#: it leaves free, whose agreement among non-matches the random-pair u then describes fairly.
TRAINING_RULES = (
    DOB_AND_PHONETIC_SURNAME,
    # within a postcode district: county-wide, every John Smith would pair with every other,
    # a session growing with the square of the county (17x from 200k to 1.2M residents)
    block_on("forename_canonical", "surname", "postcode_district", name="forename, surname and district"),
    DOB_AND_FORENAME,
)
