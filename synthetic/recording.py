"""How partners record people: each source's formats and its own habits of error.

Applied to a fraction of rows, chosen by the seeded generator: nicknames (police),
typos, names in capitals, forename and surname swapped (A&E), transposed day and
month, a birth surname used after marriage (benefits), postcodes without a space
or in lower case, abbreviated street types, blank identifiers; and keying errors that
break a value's format (`keying_errors`): mistyped postcodes, NHS numbers, UPNs and NINOs
failing their checks, and now and then a date that cannot exist.
"""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import polars as pl

from rules import POSTCODE_COMPACT
from synthetic.population import nickname_for
from synthetic.vocab import STREET_TYPES

_KEYBOARD_NEIGHBOURS = {
    "a": "sq", "b": "vn", "c": "xv", "d": "sf", "e": "wr", "f": "dg", "g": "fh", "h": "gj", "i": "uo",
    "j": "hk", "k": "jl", "l": "k", "m": "n", "n": "bm", "o": "ip", "p": "o", "q": "w", "r": "et",
    "s": "ad", "t": "ry", "u": "yi", "v": "cb", "w": "qe", "x": "zc", "y": "tu", "z": "x",
}


def _typo(word: str, rng: np.random.Generator) -> str:
    if len(word) < 4:
        return word
    i = int(rng.integers(1, len(word) - 1))
    kind = int(rng.integers(0, 4))
    if kind == 0:  # neighbouring key
        c = word[i].lower()
        sub = _KEYBOARD_NEIGHBOURS.get(c, c)
        new = sub[int(rng.integers(0, len(sub)))]
        return word[:i] + (new.upper() if word[i].isupper() else new) + word[i + 1 :]
    if kind == 1:  # dropped letter
        return word[:i] + word[i + 1 :]
    if kind == 2:  # transposed letters
        return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]
    return word[:i] + word[i] + word[i:]  # doubled letter


def _pick(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return np.flatnonzero(rng.random(n) < rate)


def typos(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    for i in _pick(rng, len(values), rate):
        if out[i] is not None:
            out[i] = _typo(out[i], rng)
    return out


def nicknames(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    for i in _pick(rng, len(values), rate):
        out[i] = nickname_for(out[i], rng)
    return out


def upper_case(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    idx = _pick(rng, len(values), rate)
    if len(idx):
        out[idx] = np.char.upper(out[idx].astype(str)).astype(object)
    return out


def blank(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.astype(object).copy()
    out[_pick(rng, len(values), rate)] = None
    return out


def swap(a: np.ndarray, b: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    a, b = a.copy(), b.copy()
    idx = _pick(rng, len(a), rate)
    a[idx], b[idx] = b[idx], a[idx]
    return a, b


def transpose_day_month(dob: np.ndarray, rate: float, rng: np.random.Generator, latest=None) -> np.ndarray:
    """Day and month swapped where both are 12 or less (otherwise it would not be a date),
    and where the slip would not put a birth after `latest` (a partner's system refuses those)."""
    out = dob.copy()
    idx = _pick(rng, len(dob), rate)
    for i in idx:
        d = out[i]
        if d is None or np.isnat(d):
            continue
        y, m, day = str(d)[:10].split("-")
        swapped = np.datetime64(f"{y}-{day}-{m}") if int(day) <= 12 and day != m else None
        limit = latest[i] if isinstance(latest, np.ndarray) else latest
        if swapped is not None and (limit is None or swapped <= limit):
            out[i] = swapped
    return out


def one_digit_off(dob: np.ndarray, rate: float, rng: np.random.Generator, latest=None) -> np.ndarray:
    """A keying slip in the day of birth: one day either side, never after `latest`."""
    out = dob.copy()
    idx = _pick(rng, len(dob), rate)
    shift = np.where(rng.random(len(idx)) < 0.5, -1, 1).astype("timedelta64[D]")
    out[idx] = out[idx] + shift
    if latest is not None and len(idx):
        limit = latest[idx] if isinstance(latest, np.ndarray) else np.full(len(idx), latest)
        out[idx] = np.minimum(out[idx], limit.astype(out.dtype))
    return out


def postcode_style(postcodes: np.ndarray, rng: np.random.Generator, lower: float = 0.08, nospace: float = 0.08) -> np.ndarray:
    out = postcodes.astype(object).copy()
    for i in _pick(rng, len(out), lower):
        if out[i]:
            out[i] = out[i].lower()
    for i in _pick(rng, len(out), nospace):
        if out[i]:
            out[i] = out[i].replace(" ", "")
    return out


def abbreviate_streets(streets: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = streets.astype(object).copy()
    full_to_short = dict(STREET_TYPES)
    for i in _pick(rng, len(out), rate):
        head, _, last = out[i].rpartition(" ")
        if last in full_to_short:
            out[i] = f"{head} {full_to_short[last]}"
    return out


def format_dates(values: np.ndarray, fmt: str) -> list[str | None]:
    series = pl.Series(values.astype("datetime64[D]")) if values.dtype != object else pl.Series(list(values), dtype=pl.Date)
    return series.dt.strftime(fmt).to_list()


def space_nhs_number(values: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    out = values.astype(object).copy()
    for i in _pick(rng, len(out), rate):
        v = out[i]
        if v:
            out[i] = f"{v[:3]} {v[3:6]} {v[6:]}"
    return out


# ----------------------------------------------------------------- keying errors (spec v2)
# Partners key identifiers and postcodes by hand, and some keystrokes break the format. Rates
# are per row holding the field: a mistyped postcode in about one row in 120 (as a county made
# independently to the spec showed), a failing NHS number, UPN or NINO less often; a date that
# cannot exist (30 February) in about one row in a thousand, which quarantines the row.
KEYING_RATES = {"uk_postcode": 0.008, "nhs_number": 0.005, "upn": 0.003, "nino": 0.003}
IMPOSSIBLE_DATE_RATE = 0.001
_LOOKALIKE = {"1": "l", "0": "O", "5": "S", "8": "B", "2": "Z"}


def mistype_postcode(value: str, rng: np.random.Generator) -> str:
    """A postcode as a hurried keyboard breaks it: a digit keyed as its lookalike letter, a digit
    doubled in the outward code, the last letter dropped, or the inward code's digit moved."""
    compact = value.replace(" ", "").upper()
    outward, inward = compact[:-3], compact[-3:]
    kind = int(rng.integers(0, 4))
    if kind == 0:
        digits = [i for i, c in enumerate(outward) if c in _LOOKALIKE]
        if digits:
            i = digits[int(rng.integers(0, len(digits)))]
            return f"{outward[:i]}{_LOOKALIKE[outward[i]]}{outward[i + 1:]} {inward}"
        kind = 1
    if kind == 1:
        i = max(i for i, c in enumerate(outward) if c.isdigit())
        broken = f"{outward[:i + 1]}{outward[i]}{outward[i + 1:]} {inward}"
        if not re.fullmatch(POSTCODE_COMPACT, broken.replace(" ", "")):
            return broken
    if kind == 3:
        broken = f"{outward}{inward[0]} {inward[1]}{inward[0]}{inward[2]}"
        if not re.fullmatch(POSTCODE_COMPACT, broken.replace(" ", "")):
            return broken
    return f"{outward} {inward[:-1]}"


def _wrong_check(value: str, check: str, rng: np.random.Generator) -> str:
    from ingestion.identifiers import is_valid_nhs_number, upn_check_letter

    if check == "nhs_number":
        digits = value.replace(" ", "")
        for _ in range(10):
            candidate = digits[:9] + str(int(rng.integers(0, 10)))
            if not is_valid_nhs_number(candidate):
                return candidate
        return digits[:9]
    if check == "upn":
        right = upn_check_letter(value[1:])
        return ("A" if right != "A" else "B") + value[1:]
    return value[:-1] + "X"  # a NINO's suffix is A to D


def keying_errors(frame: pl.DataFrame, columns, rng: np.random.Generator) -> pl.DataFrame:
    """Break a few values the way keying does. `columns`: the source contract's columns. Fields
    that only help to find a person are broken at KEYING_RATES (the pipeline sets them aside);
    a required date is made impossible at IMPOSSIBLE_DATE_RATE (the pipeline quarantines the row)."""
    updates = {}
    for column in columns:
        if column.partner_name not in frame.columns:
            continue
        values = frame[column.partner_name].to_numpy().astype(object).copy()
        if column.check in KEYING_RATES:
            for i in _pick(rng, len(values), KEYING_RATES[column.check]):
                if values[i]:
                    values[i] = mistype_postcode(values[i], rng) if column.check == "uk_postcode" else _wrong_check(values[i], column.check, rng)
            updates[column.partner_name] = values
    date_columns = [c for c in columns if c.required and c.logical_type in ("date", "timestamp") and c.partner_name in frame.columns]
    if date_columns:
        column = date_columns[0]
        values = updates.get(column.partner_name, frame[column.partner_name].to_numpy().astype(object).copy())
        for i in _pick(rng, len(values), IMPOSSIBLE_DATE_RATE):
            if values[i]:
                fmt = column.strptime_format
                year = str(dt.datetime.strptime(values[i], fmt).year)
                values[i] = fmt.replace("%Y", year).replace("%m", "02").replace("%b", "Feb").replace("%d", "30").replace("%H", "12").replace("%M", "00").replace("%S", "00")
        updates[column.partner_name] = values
    return frame.with_columns([pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String) for name, values in updates.items()])


# ----------------------------------------------------------------- the consistent identifier (spec v2)
# Children Act 2004 s.16LC: agencies start recording the NHS number as the consistent identifier
# for children. Illustrative shares of rows that carry it, children then adults (the Act expects
# it for children; Wigan's pilot shares it from health and schools first): a school's MIS and the
# council's own case system hold it for most children, police for some, benefits for few adults.
# A&E has always sent it (its own rate lives in extracts.ae_attendances).
NHS_NUMBER_RATES = {
    "school_attendance": (0.60, 0.0),
    "open_cases": (0.85, 0.30),
    "asb_incidents": (0.25, 0.05),
    "domestic_abuse": (0.30, 0.05),
    "worklessness": (0.0, 0.03),
    "front_door_contacts": (0.55, 0.0),
}
#: Of the rows that carry one, the share where another member of the household's number was keyed
#: (a sibling's from the family's record, a parent's on a child's row): valid, and wrong.
ANOTHER_MEMBERS_NHS_NUMBER = 0.005


def consistent_identifier(frame: pl.DataFrame, source: str, people: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
    """Add `NHS_NUMBER` to a version-2 extract of `source` (a frame with `person_id` and
    `event_date`): the person's number at NHS_NUMBER_RATES by age at the event, now and then
    another household member's, some spaced as people key them."""
    child_rate, adult_rate = NHS_NUMBER_RATES[source]
    person = frame["person_id"].to_numpy()
    dob = people["dob"].to_numpy()[person]
    age = (frame["event_date"].to_numpy().astype("datetime64[D]") - dob.astype("datetime64[D]")).astype(np.int64) / 365.25
    own = people["nhs_number"].to_numpy().astype(object)[person]
    carried = rng.random(len(person)) < np.where(age < 18, child_rate, adult_rate)
    values = np.where(carried, own, None)
    # another member's: the next person of the same household in the county's order (households'
    # members are consecutive), where the household has one
    household = people["household_id"].to_numpy()
    other = np.minimum(person + 1, len(household) - 1)
    other = np.where(household[other] == household[person], other, np.maximum(person - 1, 0))
    swapped = carried & (rng.random(len(person)) < ANOTHER_MEMBERS_NHS_NUMBER) & (household[other] == household[person]) & (other != person)
    values[swapped] = people["nhs_number"].to_numpy().astype(object)[other[swapped]]
    values = space_nhs_number(values, 0.2, rng)
    return frame.with_columns(pl.Series("NHS_NUMBER", [None if v is None else str(v) for v in values], dtype=pl.String))
