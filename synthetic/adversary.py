"""An adversary for our own linkage: counties recorded the way real records go wrong.

The generator's `standard` recording was written alongside the linker, and a linker tuned on
its own generator flatters itself (a county made independently to the spec showed family recall
0.937 where ours showed 0.97). These modes are designed from how records go wrong in the field,
each habit with where it is seen, not from what the linker handles:

- `standard`: today's county and habits (synthetic.recording).
- `diverse`: the same habits over a county with more residents from communities whose names
  partners record least consistently (vocab.DIVERSE_HERITAGE), with their naming conventions:
  women of Bangladeshi and Pakistani families carrying Begum, Khatun or Bibi rather than a
  family name (ONS, "Names in the Census", and NHS Digital's PDS tracing guidance name these as
  the commonest cause of failed traces); Polish surnames inflected for women (Kowalski,
  Kowalska).
- `hard`: `diverse`, plus households as they are and the habits below, from their own random
  stream so the rest of the county is unchanged.

Households as they are (`households_as_they_are`):
- cohabiting partners keeping their own surnames (ONS Families and Households 2023: 3.6 million
  cohabiting couple families; about half of births are outside marriage);
- children in kinship care with grandparents of another surname (Family Rights Group: about
  1 child in 70 in England lives in kinship care);
- shared care: a child of separated parents seen at the other parent's home by police and A&E;
- two families at one address (ONS: 2.5% of households hold more than one family; overcrowded
  and concealed families in deprived areas);
- a parent who left, still recorded at the family home for a while (the stale address below);
- double-barrelled surnames, kept whole by one partner and halved by another.

Record habits (`hard_habits`), at per-row rates:
- transliteration variants (Mohammed, Muhammad, Mohamed; Hussain, Hussein, Hossain; Aisha,
  Ayesha): the ONS Census-PDS linkage and NHS tracing both report them as the main source of
  missed links for South Asian and Arabic names;
- apostrophes and spaces dropped or added (O'Brien, OBrien, O Brien), Mc and Mac exchanged;
- an initial for a forename (police pocket books, benefits systems' short fields);
- a middle name used as a forename by someone known by it;
- default birth dates when the real one is not known (1 January, the 1st of the month: ECDS
  and police systems require a date);
- a birth year keyed one out, or its last two digits swapped;
- a valid postcode that is the wrong one (the neighbouring unit: address look-ups picked from a
  list), beside the keying errors that break a postcode's format (recording.keying_errors);
- addresses written many ways: "Flat 2, 14 Mill Lane", "14/2 Mill Lane", "2/14 Mill Lane",
  "14B Mill Lane", "2 14 Mill Lane";
- a person seen at their old address after moving (systems updated late: the ONS linkage study
  links movers markedly less well);
- forename and surname swapped for names that do not follow a forename-surname order.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from data_contracts import Contract
from synthetic.modes import RECORDING_MODES
from synthetic.population import County
from synthetic.vocab import DIVERSE_HERITAGE, HERITAGE, WOMENS_SURNAMES, feminine_surname, name_pools

#: Spellings of one name as different transliterations write it (illustrative, not exhaustive).
TRANSLITERATIONS = (
    ("Mohammed", "Muhammad", "Mohammad", "Mohamed", "Muhammed"),
    ("Ahmed", "Ahmad"),
    ("Hussain", "Hussein", "Husain", "Hossain"),
    ("Yusuf", "Yousef", "Yousuf"),
    ("Fatima", "Fatimah", "Fathima"),
    ("Aisha", "Ayesha", "Aysha"),
    ("Khadija", "Khadijah"),
    ("Maryam", "Mariam"),
    ("Zainab", "Zaynab"),
    ("Omar", "Umar"),
    ("Ibrahim", "Ebrahim"),
    ("Rahman", "Rehman"),
    ("Choudhury", "Chowdhury", "Chaudhry"),
    ("Mahmood", "Mahmud"),
    ("Uddin", "Udin"),
    ("Qureshi", "Quraishi"),
    ("Yasmin", "Yasmeen"),
    ("Nasreen", "Nasrin"),
    ("Ruksana", "Rukhsana"),
    ("Shazia", "Shaziya"),
)
_VARIANTS = {name: group for group in TRANSLITERATIONS for name in group}

# Per-row rates of the record habits (illustrative of the sources in the module's docstring).
RATES = {
    "transliteration": 0.35,  # of rows whose name has other spellings
    "apostrophe": 0.35,  # of rows with an apostrophe or a space in the surname
    "mc_mac": 0.10,
    "double_barrel_halved": 0.35,  # of rows with a double-barrelled surname
    "initial": 0.02,  # police, benefits and A&E
    "middle_name": 0.7,  # of rows (outside schools) of someone known by their middle name
    "default_dob": 0.01,  # A&E and police
    "year_typo": 0.003,
    "wrong_postcode": 0.01,
    "address_form": 0.4,  # of rows at a flat
    "stale_address": 0.25,  # of rows within 18 months after a move
    "shared_care": 0.3,  # of police and A&E rows of a child in shared care
    "names_swapped": 0.03,  # of rows of people whose names are not in forename-surname order
}
KNOWN_BY_MIDDLE_NAME = 0.04
STALE_DAYS = 540
INITIALS_SOURCES = ("asb_incidents", "domestic_abuse", "worklessness", "ae_attendances")
DEFAULT_DOB_SOURCES = ("asb_incidents", "domestic_abuse", "ae_attendances")
SHARED_CARE_SOURCES = ("asb_incidents", "domestic_abuse", "ae_attendances")


def heritage_for(mode: str) -> dict:
    if mode not in RECORDING_MODES:
        raise ValueError(f"recording mode must be one of {RECORDING_MODES}")
    return HERITAGE if mode == "standard" else DIVERSE_HERITAGE


# ----------------------------------------------------------------- the people

def naming_conventions(county: County, rng: np.random.Generator) -> County:
    """Women's surnames as their communities carry them: Begum, Khatun or Bibi for about half the
    women of Bangladeshi and Pakistani families; the feminine form of a Polish family name."""
    people = county.people
    group, sex, age = people["heritage"].to_numpy(), people["sex"].to_numpy(), people["age"].to_numpy()
    surname = people["surname"].to_numpy().astype(object).copy()
    birth = people["birth_surname"].to_numpy().astype(object).copy()
    polish_women = np.flatnonzero((group == "polish") & (sex == "F"))
    surname[polish_women] = [feminine_surname(s) for s in surname[polish_women]]
    birth[polish_women] = [feminine_surname(s) for s in birth[polish_women]]
    for heritage, own in WOMENS_SURNAMES.items():
        women = np.flatnonzero((group == heritage) & (sex == "F") & (age >= 18) & (rng.random(len(group)) < 0.5))
        surname[women] = rng.choice(np.array(own, dtype=object), len(women))
        birth[women] = surname[women]
    county.people = people.with_columns(pl.Series("surname", surname, dtype=pl.String), pl.Series("birth_surname", birth, dtype=pl.String))
    return county


def households_as_they_are(county: County, rng: np.random.Generator) -> County:
    """Kinship care, two families at one address, shared care, partners keeping their names,
    double-barrelled surnames and middle names (see the module's docstring)."""
    people, households = county.people, county.households
    pools = name_pools()
    household = people["household_id"].to_numpy()
    role, sex = people["role"].to_numpy(), people["sex"].to_numpy()
    group = people["heritage"].to_numpy()
    surname = people["surname"].to_numpy().astype(object).copy()
    birth_surname = people["birth_surname"].to_numpy().astype(object).copy()
    age, dob = people["age"].to_numpy().copy(), people["dob"].to_numpy().copy()
    address = people["address_id"].to_numpy().copy()
    n_households = households.height
    kind = households["kind"].to_numpy()
    has_children = np.zeros(n_households, dtype=bool)
    has_children[household[role == "child"]] = True

    # partners who kept their own surname
    kept = np.flatnonzero(((role == "partner") | ((role == "parent") & (sex == "F"))) & (surname != birth_surname) & (rng.random(len(role)) < 0.3))
    surname[kept] = birth_surname[kept]

    # kinship care: the parents' generation replaced by the grandparents', of another surname
    kinship = np.flatnonzero(has_children & np.isin(kind, ["lone_parent", "couple_children"]) & (rng.random(n_households) < 0.015))
    carers = np.flatnonzero(np.isin(household, kinship) & (role == "parent"))
    older = rng.integers(24, 31, len(carers))
    age[carers] += older
    dob[carers] = dob[carers] - (older * 365.25).astype("timedelta64[D]")
    grand_surname = {h: rng.choice(pools[group[carers[np.flatnonzero(household[carers] == h)[0]]]].surnames) for h in kinship}
    surname[carers] = [grand_surname[h] for h in household[carers]]
    birth_surname[carers] = surname[carers]
    role = role.astype(object).copy()
    role[carers] = "grandparent"

    # double-barrelled surnames: a family name joined with the mother's
    barrelled = np.flatnonzero((rng.random(n_households) < 0.03) & has_children & np.isin(kind, ["couple_children", "blended"]))
    for h in barrelled:
        members = np.flatnonzero(household == h)
        head = surname[members[0]]
        other = rng.choice(pools[group[members[0]]].surnames)
        if other != head and "-" not in head and " " not in head:
            same = members[surname[members] == head]
            surname[same] = f"{head}-{other}"

    # two families at one address: a family moves in with another family (different households)
    families = np.flatnonzero(has_children)
    sharing = families[rng.random(len(families)) < 0.02]
    hosts = rng.choice(families, len(sharing))
    ok = hosts != sharing
    hh_address = households["address_id"].to_numpy().copy()
    hh_address[sharing[ok]] = hh_address[hosts[ok]]
    address = hh_address[household]
    postcode_of = county.addresses["postcode"].to_numpy()
    hh_postcode = postcode_of[hh_address]

    # shared care: some children of lone parents also stay at the other parent's home
    lone_children = np.flatnonzero((role == "child") & (kind[household] == "lone_parent") & (rng.random(len(role)) < 0.15))
    other_address = np.full(len(role), -1)
    other_address[lone_children] = rng.integers(0, county.addresses.height, len(lone_children))

    # middle names, and the few known by theirs
    middle = np.empty(len(role), dtype=object)
    for g in np.unique(group):
        for s, names in (("M", "male"), ("F", "female")):
            sel = np.flatnonzero((group == g) & (sex == s))
            middle[sel] = rng.choice(getattr(pools[g], names), len(sel))
    known_by_middle = rng.random(len(role)) < KNOWN_BY_MIDDLE_NAME

    county.households = households.with_columns(pl.Series("address_id", hh_address), pl.Series("postcode", hh_postcode))
    county.people = people.with_columns(
        pl.Series("role", role.astype(str)), pl.Series("surname", surname, dtype=pl.String), pl.Series("birth_surname", birth_surname, dtype=pl.String),
        pl.Series("age", age), pl.Series("dob", dob), pl.Series("address_id", address),
        pl.Series("other_address_id", other_address), pl.Series("middle_name", middle, dtype=pl.String), pl.Series("known_by_middle_name", known_by_middle),
    )
    return county


# ----------------------------------------------------------------- the records

def _pick(rng: np.random.Generator, mask: np.ndarray, rate: float) -> np.ndarray:
    return np.flatnonzero(mask & (rng.random(len(mask)) < rate))


def _column(contract: Contract, name: str) -> str | None:
    return contract.column(name).partner_name if contract.has_column(name) else None


def _apostrophe(name: str, rng: np.random.Generator) -> str:
    if "'" in name:
        return name.replace("'", "" if rng.random() < 0.7 else " ")
    return name.replace(" ", "" if rng.random() < 0.7 else "'", 1)


def _mc_mac(name: str) -> str:
    if name.startswith("Mac") and len(name) > 3 and name[3].isupper():
        return "Mc" + name[3:]
    if name.startswith("Mc"):
        return "Mac" + name[2:]
    return name


def _halve(name: str, rng: np.random.Generator) -> str:
    first, second = name.split("-", 1)
    return rng.choice([f"{first} {second}", first, second, f"{first}{second}"])


_FLAT = re.compile(r"^Flat (\d+), (\d+) (.*)$")


def _address_form(line: str, rng: np.random.Generator) -> str:
    match = _FLAT.match(line)
    if not match:
        return line
    flat, number, rest = match.groups()
    forms = (f"{number}/{flat} {rest}", f"{flat}/{number} {rest}", f"{number}{'ABCDEFGH'[(int(flat) - 1) % 8]} {rest}", f"{flat} {number} {rest}", f"Flat {flat} {number} {rest}")
    return forms[int(rng.integers(0, len(forms)))]


def _line_one(addresses: pl.DataFrame, ids: np.ndarray) -> tuple[list[str], list[str], list[str]]:
    rows = addresses[ids]
    flats, numbers, streets = rows["flat"].to_list(), rows["house_number"].to_list(), rows["street"].to_list()
    lines = [f"Flat {f}, {n} {s}" if f else f"{n} {s}" for f, n, s in zip(flats, numbers, streets)]
    return lines, rows["town"].to_list(), rows["postcode"].to_list()


def _rewrite_addresses(frame: pl.DataFrame, contract: Contract, addresses: pl.DataFrame, rows: np.ndarray, address_ids: np.ndarray, updates: dict, recorded_at: np.ndarray) -> None:
    """Rows `rows` recorded at `address_ids`, in the source's own address layout (`recorded_at`:
    each row's address, for truth)."""
    if not len(rows):
        return
    recorded_at[rows] = address_ids
    lines, towns, postcodes = _line_one(addresses, address_ids)
    postcode_col = _column(contract, "postcode")
    if postcode_col:
        updates.setdefault(postcode_col, frame[postcode_col].to_numpy().astype(object).copy())[rows] = postcodes
    if contract.has_column("address"):
        col = _column(contract, "address")
        updates.setdefault(col, frame[col].to_numpy().astype(object).copy())[rows] = [f"{l}, {t}" for l, t in zip(lines, towns)]
    elif contract.has_column("address_line_1"):
        col = _column(contract, "address_line_1")
        updates.setdefault(col, frame[col].to_numpy().astype(object).copy())[rows] = lines
        town = _column(contract, "town") or _column(contract, "address_line_2")
        if town:
            updates.setdefault(town, frame[town].to_numpy().astype(object).copy())[rows] = towns


def hard_habits(frame: pl.DataFrame, source: str, contract: Contract, county: County, rng: np.random.Generator) -> pl.DataFrame:
    """Apply the record habits to one extract (partner layout, with `person_id` and `event_date`)."""
    people = county.people
    person = frame["person_id"].to_numpy()
    n = len(person)
    updates: dict[str, np.ndarray] = {}
    forename_col, surname_col = _column(contract, "forename"), _column(contract, "surname")
    forename = frame[forename_col].to_numpy().astype(object).copy()
    surname = frame[surname_col].to_numpy().astype(object).copy()
    # someone known by their middle name is recorded by it outside school (schools hold the legal name)
    if source == "school_attendance":
        preferred = _column(contract, "preferred_forename")
        if preferred:
            values = frame[preferred].to_numpy().astype(object).copy()
            known = people["known_by_middle_name"].to_numpy()[person]
            values[known] = people["middle_name"].to_numpy()[person][known]
            updates[preferred] = values
    else:
        idx = _pick(rng, people["known_by_middle_name"].to_numpy()[person], RATES["middle_name"])
        forename[idx] = people["middle_name"].to_numpy()[person][idx]
    for values in (forename, surname):
        has_variants = np.array([v in _VARIANTS for v in values])
        for i in _pick(rng, has_variants, RATES["transliteration"]):
            values[i] = rng.choice(_VARIANTS[values[i]])
    apostrophe = np.array([("'" in v or " " in v) for v in surname])
    for i in _pick(rng, apostrophe, RATES["apostrophe"]):
        surname[i] = _apostrophe(surname[i], rng)
    for i in _pick(rng, np.array([v.startswith(("Mc", "Mac")) for v in surname]), RATES["mc_mac"]):
        surname[i] = _mc_mac(surname[i])
    for i in _pick(rng, np.array(["-" in v for v in surname]), RATES["double_barrel_halved"]):
        surname[i] = _halve(surname[i], rng)
    # a woman recorded under her husband's family name rather than Begum or Khatun
    womens = {s for names in WOMENS_SURNAMES.values() for s in names}
    family_name = _family_names(people)
    for i in _pick(rng, np.array([v in womens for v in surname]), 0.25):
        surname[i] = family_name.get(int(people["household_id"][int(person[i])]), surname[i])
    if source in INITIALS_SOURCES:
        for i in _pick(rng, np.ones(n, dtype=bool), RATES["initial"]):
            forename[i] = forename[i][0]
    not_british = np.isin(people["heritage"].to_numpy()[person], ["british", "irish"], invert=True)
    idx = _pick(rng, not_british, RATES["names_swapped"])
    forename[idx], surname[idx] = surname[idx], forename[idx].copy()
    updates[forename_col], updates[surname_col] = forename, surname
    _dates_of_birth(frame, source, contract, rng, updates)
    recorded_at = frame["address_id"].to_numpy().copy()
    _addresses(frame, source, contract, county, rng, updates, recorded_at)
    return frame.with_columns(
        [pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String) for name, values in updates.items()]
        + [pl.Series("address_id", recorded_at)]
    )


def _family_names(people: pl.DataFrame) -> dict[int, str]:
    """household -> the surname of its first adult man (the family name a form asks for)."""
    men = people.filter((pl.col("sex") == "M") & (pl.col("age") >= 18)).group_by("household_id").agg(pl.col("surname").first())
    return dict(zip(men["household_id"].to_list(), men["surname"].to_list()))


def _dates_of_birth(frame: pl.DataFrame, source: str, contract: Contract, rng: np.random.Generator, updates: dict) -> None:
    if not contract.has_column("dob"):
        return
    column = contract.column("dob")
    fmt = column.strptime_format
    text = frame[column.partner_name]
    parsed = text.str.to_date(fmt, strict=False).to_numpy()
    event = frame["event_date"].to_numpy().astype("datetime64[D]")
    values = text.to_numpy().astype(object).copy()
    known = ~np.isnat(parsed)
    changed = np.zeros(len(values), dtype=bool)
    if source in DEFAULT_DOB_SOURCES:
        for i in _pick(rng, known, RATES["default_dob"]):
            year, month = str(parsed[i])[:4], str(parsed[i])[5:7]
            parsed[i] = np.datetime64(f"{year}-01-01" if rng.random() < 0.5 else f"{year}-{month}-01")
            changed[i] = True
    for i in _pick(rng, known & ~changed, RATES["year_typo"]):
        y, rest = int(str(parsed[i])[:4]), str(parsed[i])[4:]
        swapped = int(f"{y // 100}{y % 10}{(y // 10) % 10}")
        for candidate in (swapped, y + 1, y - 1) if rng.random() < 0.3 else (y + 1, y - 1):
            try:
                day = np.datetime64(f"{candidate:04d}{rest}")
            except ValueError:
                continue
            if candidate != y and day <= event[i] and candidate >= 1900:
                parsed[i], changed[i] = day, True
                break
    for i in np.flatnonzero(changed):
        values[i] = parsed[i].astype(object).strftime(fmt)
    updates[column.partner_name] = values


def _addresses(frame: pl.DataFrame, source: str, contract: Contract, county: County, rng: np.random.Generator, updates: dict, recorded_at: np.ndarray) -> None:
    people = county.people
    person = frame["person_id"].to_numpy()
    day = (frame["event_date"].to_numpy().astype("datetime64[D]") - np.datetime64(county.start)).astype(np.int64)
    prev, moved = people["prev_address_id"].to_numpy()[person], people["move_day"].to_numpy()[person]
    stale = _pick(rng, (prev >= 0) & (day >= moved) & (day < moved + STALE_DAYS), RATES["stale_address"])
    _rewrite_addresses(frame, contract, county.addresses, stale, prev[stale], updates, recorded_at)
    if source in SHARED_CARE_SOURCES:
        other = people["other_address_id"].to_numpy()[person]
        shared = _pick(rng, other >= 0, RATES["shared_care"])
        _rewrite_addresses(frame, contract, county.addresses, shared, other[shared], updates, recorded_at)
    postcode_col = _column(contract, "postcode")
    if postcode_col:
        values = updates.setdefault(postcode_col, frame[postcode_col].to_numpy().astype(object).copy())
        codes = np.sort(county.postcodes["postcode"].to_numpy().astype(str))
        has = np.array([bool(v) for v in values])
        for i in _pick(rng, has, RATES["wrong_postcode"]):
            at = np.searchsorted(codes, str(values[i]).upper())
            values[i] = codes[min(at + 1, len(codes) - 1)] if at < len(codes) and codes[at] == str(values[i]).upper() else values[i]
    line = _column(contract, "address") or _column(contract, "address_line_1")
    if line:
        values = updates.setdefault(line, frame[line].to_numpy().astype(object).copy())
        at_flat = np.array([bool(v) and str(v).startswith("Flat ") for v in values])
        for i in _pick(rng, at_flat, RATES["address_form"]):
            values[i] = _address_form(values[i], rng)
