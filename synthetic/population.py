"""The people of the synthetic county: places, households, people and their histories.

Everything is drawn from one numpy Generator, so a seed gives the same county
every time. Households are composed in a loop (composition rules read more
clearly that way, and it is a few seconds at a million residents); everything
per person after that is vectorised.

The truth of the county lives here: who each person is, which household they
live in on the reference date (their family), where they lived before, and the
latent need that drives every event the partners later record.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from ingestion.identifiers import nhs_check_digit, upn_check_letter
from synthetic.vocab import (
    HERITAGE,
    INWARD_LETTERS,
    LOCALITIES,
    POSTCODE_AREAS,
    STREET_TYPES,
    TOWN_SUFFIXES,
    WARD_SUFFIXES,
    name_pools,
    nicknames,
)

HISTORY_MONTHS = 40  # three years and four months of history up to the reference month

# Household composition shares, after ONS "Families and households in the UK: 2023"
# (one person 30%, couple without dependent children 27%, couple with dependent
# children 18%, lone parent with dependent children 7%, multi-family/other 8-10%).
HOUSEHOLD_TYPES = {
    "single": 0.30,
    "couple": 0.25,
    "couple_children": 0.17,
    "blended": 0.03,
    "lone_parent": 0.08,
    "multi_generation": 0.03,
    "adult_children": 0.07,
    "sharers": 0.07,
}


@dataclass
class County:
    reference: dt.date  # last day of the reference month
    start: dt.date  # first day of the history
    addresses: pl.DataFrame
    postcodes: pl.DataFrame  # postcode, ward, locality, deprivation decile
    households: pl.DataFrame
    people: pl.DataFrame


def month_bounds(month: str) -> tuple[dt.date, dt.date]:
    """'2026-10' -> (first day of the history, last day of the reference month)."""
    year, mon = (int(p) for p in month.split("-"))
    end = (dt.date(year + (mon == 12), mon % 12 + 1, 1)) - dt.timedelta(days=1)
    first = year * 12 + (mon - 1) - (HISTORY_MONTHS - 1)
    return dt.date(first // 12, first % 12 + 1, 1), end


def _geography(rng: np.random.Generator, n_households: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    pools = name_pools()
    british = pools["british"]
    n_postcodes = max(60, n_households // 14)
    n_districts = max(6, n_postcodes // 120)
    n_wards = max(8, n_postcodes // 250)
    # districts: an area and a number; units: sector digit and two inward letters
    areas = rng.choice(POSTCODE_AREAS, n_districts)
    numbers = rng.integers(1, 40, n_districts)
    districts = np.unique(np.char.add(areas.astype(str), numbers.astype(str)))
    district_of = rng.integers(0, len(districts), n_postcodes * 2)
    sector = rng.integers(0, 10, n_postcodes * 2).astype(str)
    letters = np.char.add(rng.choice(INWARD_LETTERS, n_postcodes * 2), rng.choice(INWARD_LETTERS, n_postcodes * 2))
    codes = np.char.add(np.char.add(np.char.add(districts[district_of], " "), sector), letters)
    codes = np.unique(codes)[:n_postcodes]
    codes = codes[np.argsort(codes)]
    n_postcodes = len(codes)
    # contiguous runs of sorted postcodes form wards, so a ward is a few districts' sectors
    ward_of = np.minimum((np.arange(n_postcodes) * n_wards) // n_postcodes, n_wards - 1)
    ward_names = []
    used = set()
    for i in range(n_wards):
        while True:
            name = f"{rng.choice(british.surnames)} {rng.choice(WARD_SUFFIXES)}"
            if name not in used:
                used.add(name)
                ward_names.append(name)
                break
    ward_locality = np.array(LOCALITIES)[np.minimum(np.arange(n_wards) * len(LOCALITIES) // n_wards, len(LOCALITIES) - 1)]
    # Index of Multiple Deprivation decile per ward (1 = most deprived), skewed towards the
    # less deprived deciles as in the Home Counties.
    ward_decile = np.clip(np.round(rng.beta(2.2, 1.6, n_wards) * 10 + 0.5), 1, 10).astype(int)
    postcodes = pl.DataFrame(
        {
            "postcode": codes,
            "ward": np.array(ward_names)[ward_of],
            "locality": ward_locality[ward_of],
            "deprivation_decile": ward_decile[ward_of],
        }
    )
    # towns: one per district
    district_names = np.array([c.split(" ")[0] for c in codes])
    unique_districts = np.unique(district_names)
    towns = {d: f"{rng.choice(british.surnames)}{rng.choice(TOWN_SUFFIXES)}".title() for d in unique_districts}
    # addresses: more than households, so moves have somewhere to come from
    n_addresses = int(n_households * 1.15) + 10
    pc_of = rng.integers(0, n_postcodes, n_addresses)
    pc_of.sort()
    n_streets = max(1, n_postcodes * 2)
    street_base = rng.choice(np.concatenate([british.surnames, british.male, british.female]), n_streets)
    street_type = rng.integers(0, len(STREET_TYPES), n_streets)
    street_of = pc_of * 2 + rng.integers(0, 2, n_addresses)
    # house numbers unique within a street
    order = np.lexsort((rng.random(n_addresses), street_of))
    rank = np.empty(n_addresses, dtype=np.int64)
    street_sorted = street_of[order]
    starts = np.r_[0, np.flatnonzero(np.diff(street_sorted)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, n_addresses]))
    rank[order] = np.arange(n_addresses) - run_start
    house_number = rank * 2 + 1 + (street_of % 2)  # odd or even side, unique per street
    flat = np.where(rng.random(n_addresses) < 0.12, rng.integers(1, 9, n_addresses), 0)
    addresses = pl.DataFrame(
        {
            "address_id": np.arange(n_addresses),
            "flat": flat,
            "house_number": house_number,
            "street": np.char.add(np.char.add(street_base[street_of].astype(str), " "), np.array([t[0] for t in STREET_TYPES])[street_type[street_of]]),
            "street_type": street_type[street_of],
            "town": [towns[d] for d in district_names[pc_of]],
            "postcode": codes[pc_of],
        }
    )
    return addresses, postcodes


def _compose_households(rng: np.random.Generator, people: int, heritage_shares: dict = HERITAGE) -> tuple[list, int]:
    """Household compositions: a list of (type, heritage, members) where each member is
    (role, age, sex, surname_slot) and surname slots 0-2 are the household's surnames."""
    types = list(HOUSEHOLD_TYPES)
    shares = np.array(list(HOUSEHOLD_TYPES.values()))
    shares = shares / shares.sum()
    heritage = list(heritage_shares)
    heritage_p = np.array([heritage_shares[h][1] for h in heritage])
    heritage_p = heritage_p / heritage_p.sum()
    households = []
    total = 0
    # drawn in bulk: a weighted choice per household inside the loop costs more than the rest of it
    batch = people // 2 + 10
    kinds = rng.choice(len(types), batch, p=shares)
    groups = rng.choice(len(heritage), batch, p=heritage_p)
    sizes = rng.choice([1, 2, 3, 4, 5], batch, p=[0.38, 0.38, 0.16, 0.06, 0.02])
    sexes = np.array(["M", "F"])[rng.integers(0, 2, (batch, 8))]
    h = -1
    while total < people:
        h += 1
        kind = types[kinds[h]]
        group = heritage[groups[h]]
        sex_of = sexes[h]
        members: list[tuple[str, int, str, int]] = []
        if kind == "single":
            members.append(("adult", int(rng.integers(19, 90)), sex_of[0], 0))
        elif kind == "couple":
            a = int(rng.integers(22, 85))
            members += [("adult", a, "M", 0), ("partner", max(19, a + int(rng.integers(-6, 4))), "F", 0 if rng.random() < 0.75 else 1)]
        elif kind == "sharers":
            for i in range(int(rng.integers(2, 5))):
                members.append(("adult", int(rng.integers(20, 40)), sex_of[i], 10 + i))
        elif kind == "adult_children":
            a = int(rng.integers(44, 66))
            members += [("adult", a, "M", 0), ("partner", a - int(rng.integers(0, 5)), "F", 0)]
            for i in range(int(rng.integers(1, 3))):
                members.append(("adult_child", int(rng.integers(19, 27)), sex_of[i], 0))
        else:
            mother_age = int(rng.integers(20, 50))
            n_children = int(sizes[h])
            oldest = min(17, mother_age - 18)
            ages = sorted((int(rng.integers(0, oldest + 1)) for _ in range(n_children)), reverse=True)
            twins = n_children >= 2 and rng.random() < 0.03  # about 1 in 65 births is a twin birth (ONS)
            if twins:
                ages[1] = ages[0]
            for i in range(2 if twins else 1, n_children):
                if ages[i] >= ages[i - 1]:
                    ages[i] = max(0, ages[i - 1] - 1)  # siblings, not twins: at least a year apart
            if kind == "lone_parent":
                sex = "F" if rng.random() < 0.9 else "M"
                child_slot = 0 if rng.random() < 0.55 else 2  # children may carry the absent parent's surname
                members.append(("parent", mother_age, sex, 0))
                members += [("child", age, sex_of[i], child_slot) for i, age in enumerate(ages)]
            else:
                father_age = mother_age + int(rng.integers(-3, 7))
                if kind == "blended":
                    # stepfather's surname (slot 0); children keep their father's (slot 2);
                    # the mother took her new partner's name or kept another
                    members += [("parent", father_age, "M", 0), ("parent", mother_age, "F", 0 if rng.random() < 0.5 else 2)]
                    members += [("child", age, sex_of[i], 2) for i, age in enumerate(ages)]
                    if rng.random() < 0.5:
                        members.append(("child", int(rng.integers(0, max(1, min(6, ages[-1] + 1)))), sex_of[7], 0))
                else:
                    members += [("parent", father_age, "M", 0), ("parent", mother_age, "F", 0 if rng.random() < 0.8 else 1)]
                    members += [("child", age, sex_of[i], 0) for i, age in enumerate(ages)]
                if kind == "multi_generation":
                    members.append(("grandparent", mother_age + int(rng.integers(20, 32)), "F", 1))
        households.append((kind, group, members))
        total += len(members)
    return households, total


def _nhs_numbers(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    filled = 0
    while filled < n:
        batch = rng.integers(400_000_000, 999_999_999, (n - filled) * 2)
        for value in batch:
            digits = f"{value:09d}"
            check = nhs_check_digit(digits)
            if check is None:
                continue
            out[filled] = digits + str(check)
            filled += 1
            if filled == n:
                break
    return out


def _upns(rng: np.random.Generator, n: int) -> np.ndarray:
    # LA code (3 digits), establishment (4), year (2), serial (3): unique by construction
    serial = rng.permutation(n) + rng.integers(0, 10**6)
    out = np.empty(n, dtype=object)
    la = rng.integers(800, 940)
    for i, s in enumerate(serial):
        digits = f"{la:03d}{(s // 1000) % 10**6:06d}{s % 1000:03d}"
        out[i] = upn_check_letter(digits) + digits
    return out


def _ninos(rng: np.random.Generator, n: int) -> np.ndarray:
    first = np.array(list("ABCEGHJKLMNOPRSTWXYZ"))
    second = np.array(list("ABCEGHJKLMNPRSTWXYZ"))
    digits = rng.permutation(np.arange(n) * 7 % 10**6 + 0)
    return np.char.add(
        np.char.add(np.char.add(rng.choice(first, n), rng.choice(second, n)), np.char.zfill(digits.astype(str), 6)),
        rng.choice(np.array(list("ABCD")), n),
    ).astype(object)


def build_county(people: int, seed: int, month: str, heritage: dict = HERITAGE) -> County:
    """`heritage`: group -> (Faker locale, share of residents); HERITAGE, or DIVERSE_HERITAGE."""
    rng = np.random.default_rng(seed)
    start, reference = month_bounds(month)
    compositions, _ = _compose_households(rng, people, heritage)
    # trim to the exact resident count requested
    members_flat = []
    for h, (kind, group, members) in enumerate(compositions):
        for m in members:
            members_flat.append((h, kind, group, *m))
    members_flat = members_flat[:people]
    n_households = members_flat[-1][0] + 1
    addresses, postcodes = _geography(rng, n_households)

    hh_idx = np.array([m[0] for m in members_flat])
    kind = np.array([m[1] for m in members_flat], dtype=object)
    group = np.array([m[2] for m in members_flat], dtype=object)
    role = np.array([m[3] for m in members_flat], dtype=object)
    age = np.array([m[4] for m in members_flat])
    sex = np.array([m[5] for m in members_flat], dtype=object)
    slot = np.array([m[6] for m in members_flat])
    n = len(members_flat)

    # a tenth of couples are of two heritages: the partner's names come from another group
    pools = name_pools()
    groups = list(heritage)
    hh_group = np.array([compositions[h][1] for h in range(n_households)], dtype=object)
    partner_group = np.array(groups, dtype=object)[rng.integers(0, len(groups), n_households)]
    mixed = rng.random(n_households) < 0.1
    person_group = group.copy()
    swap = mixed[hh_idx] & np.isin(role, ["partner"]) | (mixed[hh_idx] & (role == "parent") & (sex == "F"))
    person_group[swap] = partner_group[hh_idx[swap]]

    # surnames: three per household (slots 0-2); sharers draw their own (slots 10+)
    surname_slots = {}
    for s_slot in range(3):
        drawn = np.empty(n_households, dtype=object)
        for g in groups:
            sel = np.flatnonzero((partner_group if s_slot == 1 else hh_group) == g)
            pool = pools[g]
            drawn[sel] = rng.choice(pool.surnames, len(sel), p=pool.surname_weights)
        surname_slots[s_slot] = drawn
    surname = np.empty(n, dtype=object)
    for s_slot in range(3):
        sel = slot == s_slot
        surname[sel] = surname_slots[s_slot][hh_idx[sel]]
    own = slot >= 10
    for g in groups:
        sel = np.flatnonzero(own & (person_group == g))
        surname[sel] = rng.choice(pools[g].surnames, len(sel), p=pools[g].surname_weights)
    # A woman who took a partner's surname has a birth surname of her own.
    married_name = (role == "partner") & (slot == 0) | ((role == "parent") & (sex == "F") & (slot == 0) & np.isin(kind, ["couple_children", "multi_generation", "blended"]))
    birth_surname = surname.copy()
    for g in groups:
        sel = np.flatnonzero(married_name & (person_group == g))
        birth_surname[sel] = rng.choice(pools[g].surnames, len(sel), p=pools[g].surname_weights)

    forename = np.empty(n, dtype=object)
    for g in groups:
        for s, pool_names in (("M", pools[g].male), ("F", pools[g].female)):
            sel = np.flatnonzero((person_group == g) & (sex == s))
            forename[sel] = rng.choice(pool_names, len(sel))
    # some children share a parent's forename (John Smith and John Smith, junior)
    # Members of a household are contiguous, so a household's rows are a slice.
    first_row = np.searchsorted(hh_idx, np.arange(n_households), "left")
    last_row = np.searchsorted(hh_idx, np.arange(n_households), "right")
    same_name = np.flatnonzero((role == "child") & (rng.random(n) < 0.03))
    for i in same_name:
        lo, hi = first_row[hh_idx[i]], last_row[hh_idx[i]]
        parents = lo + np.flatnonzero((role[lo:hi] == "parent") & (sex[lo:hi] == sex[i]))
        if len(parents):
            forename[i] = forename[parents[0]]

    # dates of birth from age at the reference date
    ref = np.datetime64(reference)
    dob = ref - (age * 365.25 + rng.integers(0, 365, n)).astype("timedelta64[D]")
    twins = _twin_pairs(hh_idx, role, age)
    dob[twins[:, 1]] = dob[twins[:, 0]]

    # addresses: each household has one now; some moved during the history
    hh_address = rng.permutation(len(addresses))[:n_households]
    hh_moved = rng.random(n_households) < 0.2
    hh_prev_address = np.where(hh_moved, rng.integers(0, len(addresses), n_households), -1)
    history_days = (reference - start).days
    hh_move_day = np.where(hh_moved, rng.integers(30, history_days - 30, n_households), -1)
    address_id = hh_address[hh_idx]
    prev_address = hh_prev_address[hh_idx]
    move_day = hh_move_day[hh_idx]

    # separations: some lone parents' former partners now live alone elsewhere in the county
    ex_partner = np.full(n, -1)
    lone_parents = np.flatnonzero((role == "parent") & (kind == "lone_parent") & (sex == "F") & ~hh_moved[hh_idx])
    single_men = np.flatnonzero((kind == "single") & (sex == "M") & (age >= 22) & (age <= 60))
    rng.shuffle(single_men)
    pairs = min(len(single_men), int(len(lone_parents) * 0.45))
    chosen_parents = rng.choice(lone_parents, pairs, replace=False) if pairs else np.array([], dtype=int)
    for parent, ex in zip(chosen_parents, single_men[:pairs]):
        ex_partner[parent] = ex
        ex_partner[ex] = parent
        prev_address[ex] = address_id[parent]
        move_day[ex] = int(rng.integers(60, history_days - 30))
        lo, hi = first_row[hh_idx[parent]], last_row[hh_idx[parent]]
        children = lo + np.flatnonzero((role[lo:hi] == "child") & (slot[lo:hi] == 2))
        if len(children):
            surname[ex] = surname[children[0]]
            birth_surname[ex] = surname[children[0]]
        person_group[ex] = person_group[parent]

    # identifiers
    nhs = _nhs_numbers(rng, n)
    upn = np.full(n, None, dtype=object)
    pupils = np.flatnonzero(age <= 21)
    upn[pupils] = _upns(rng, len(pupils))
    nino = np.full(n, None, dtype=object)
    adults = np.flatnonzero(age >= 16)
    nino[adults] = _ninos(rng, len(adults))

    # latent need: deprivation, household type and chance; some households pass
    # through a crisis (a bereavement, a job lost, a relationship ending) during which
    # events cluster and escalation to statutory services becomes likelier.
    hh_postcode = addresses["postcode"].to_numpy()[hh_address]
    decile = dict(zip(postcodes["postcode"].to_list(), postcodes["deprivation_decile"].to_list()))
    hh_decile = np.array([decile[p] for p in hh_postcode])
    hh_kind = np.array([c[0] for c in compositions[:n_households]], dtype=object)
    kind_effect = np.select([hh_kind == "lone_parent", hh_kind == "blended", hh_kind == "single"], [0.45, 0.3, 0.1], 0.0)
    need = rng.normal(0, 0.85, n_households) + 0.55 * (5.5 - hh_decile) / 4.5 + kind_effect
    crisis = rng.random(n_households) < 1 / (1 + np.exp(-(-2.3 + 1.1 * need)))
    crisis_start = np.where(crisis, rng.integers(0, HISTORY_MONTHS, n_households), -1)
    crisis_length = np.where(crisis, rng.integers(6, 19, n_households), 0)

    households = pl.DataFrame(
        {
            "household_id": np.arange(n_households),
            "kind": hh_kind.astype(str),
            "address_id": hh_address,
            "postcode": hh_postcode,
            "deprivation_decile": hh_decile,
            "need": need,
            "crisis_start": crisis_start,
            "crisis_length": crisis_length,
            "prev_address_id": hh_prev_address,
            "move_day": hh_move_day,
        }
    )
    people_frame = pl.DataFrame(
        {
            "person_id": np.arange(n),
            "household_id": hh_idx,
            "role": role.astype(str),
            "heritage": person_group.astype(str),
            "sex": sex.astype(str),
            "age": age,
            "dob": dob.astype("datetime64[D]"),
            "forename": forename.astype(str),
            "surname": surname.astype(str),
            "birth_surname": birth_surname.astype(str),
            "address_id": address_id,
            "prev_address_id": prev_address,
            "move_day": move_day,
            "ex_partner_id": ex_partner,
            "nhs_number": pl.Series(nhs.tolist(), dtype=pl.String),
            "upn": pl.Series(upn.tolist(), dtype=pl.String),
            "nino": pl.Series(nino.tolist(), dtype=pl.String),
        }
    )
    return County(reference=reference, start=start, addresses=addresses, postcodes=postcodes, households=households, people=people_frame)


def _twin_pairs(hh_idx: np.ndarray, role: np.ndarray, age: np.ndarray) -> np.ndarray:
    """Consecutive children of one household with the same age were drawn as twins."""
    children = np.flatnonzero(role == "child")
    if len(children) < 2:
        return np.empty((0, 2), dtype=int)
    a, b = children[:-1], children[1:]
    same = (hh_idx[a] == hh_idx[b]) & (age[a] == age[b]) & (b == a + 1)
    return np.stack([a[same], b[same]], axis=1)


def nickname_for(forename: str, rng: np.random.Generator) -> str:
    options = nicknames().get(forename)
    return options[int(rng.integers(0, len(options)))] if options else forename
