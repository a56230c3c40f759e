"""Events in the synthetic county, and the partner extracts that record them.

Events are driven by each household's latent need and by crises (see
population.py): a household in crisis has its events cluster in the crisis
months, and escalation to statutory services (a child in need, protection or
looked-after case in `open_cases`) follows some crises a few months later. So
indicators co-occur, and escalation is predictable from earlier events, but not
trivially: some escalations come without a crisis, and most crises resolve.

Rates are set so the county matches published England figures (each is cited
where it is used). Every function returns a frame in the partner's layout with
`person_id` and `event_date` beside it (the writer splits files and writes
truth from those, and drops them from the extract).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from synthetic import recording as rec
from synthetic.population import HISTORY_MONTHS, County

YEARS = HISTORY_MONTHS / 12


class Timeline:
    """Day offsets from the start of the history, and each household's crisis window in days."""

    def __init__(self, county: County):
        self.county = county
        self.start = np.datetime64(county.start)
        self.days = (county.reference - county.start).days + 1
        hh = county.households
        month_days = self.days / HISTORY_MONTHS
        self.crisis_from = np.where(hh["crisis_start"].to_numpy() >= 0, hh["crisis_start"].to_numpy() * month_days, -1.0)
        self.crisis_to = np.minimum(self.crisis_from + hh["crisis_length"].to_numpy() * month_days, self.days - 1)
        self.need = hh["need"].to_numpy()
        people = county.people
        self.household = people["household_id"].to_numpy()
        self.age = people["age"].to_numpy()
        self.sex = people["sex"].to_numpy()
        self.role = people["role"].to_numpy()

    def in_crisis(self, person: np.ndarray, day: np.ndarray) -> np.ndarray:
        h = self.household[person]
        return (self.crisis_from[h] >= 0) & (day >= self.crisis_from[h]) & (day <= self.crisis_to[h])

    def draw(self, rng, person_weight: np.ndarray, total: float, boost: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
        """Draw about `total` events over the history, a person's share in proportion to
        weight; inside a household's crisis the rate is `boost` times higher."""
        h = self.household
        crisis_days = np.where(self.crisis_from[h] >= 0, self.crisis_to[h] - self.crisis_from[h] + 1, 0)
        exposure = person_weight * (self.days + (boost - 1) * crisis_days)
        scale = total / max(exposure.sum(), 1e-9)
        normal = rng.poisson(person_weight * self.days * scale)
        extra = rng.poisson(person_weight * (boost - 1) * crisis_days * scale)
        p1 = np.repeat(np.arange(len(h)), normal)
        d1 = rng.integers(0, self.days, len(p1))
        p2 = np.repeat(np.arange(len(h)), extra)
        lo = self.crisis_from[h[p2]]
        d2 = (lo + rng.random(len(p2)) * (self.crisis_to[h[p2]] - lo + 1)).astype(np.int64)
        person, day = np.concatenate([p1, p2]), np.concatenate([d1, d2])
        return person, self.after_birth(person, day)

    def after_birth(self, person: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Nothing happens to a person before they are born: a day drawn before a birth during
        the history is folded into the days after it (no draw, so the rest of the county stays)."""
        born = ((self.county.people["dob"].to_numpy()[person] - self.start).astype("timedelta64[D]").astype(np.int64)).clip(0, self.days - 1)
        return np.where(day < born, born + day % np.maximum(self.days - born, 1), day)

    def date(self, day: np.ndarray) -> np.ndarray:
        return self.start + day.astype("timedelta64[D]")

    def age_at(self, person: np.ndarray, day: np.ndarray) -> np.ndarray:
        dob = self.county.people["dob"].to_numpy()[person]
        return ((self.date(day) - dob).astype(np.int64) // 365.25).astype(np.int64)


def _need_weight(t: Timeline, strength: float) -> np.ndarray:
    return np.exp(strength * t.need[t.household])


def _addresses_at(county: County, person: np.ndarray, day: np.ndarray) -> pl.DataFrame:
    people = county.people
    current = people["address_id"].to_numpy()[person]
    prev = people["prev_address_id"].to_numpy()[person]
    moved = people["move_day"].to_numpy()[person]
    address = np.where((prev >= 0) & (day < moved), prev, current)
    return county.addresses[address]


def _person_columns(county: County, person: np.ndarray) -> dict[str, np.ndarray]:
    people = county.people
    cols = ["forename", "surname", "birth_surname", "sex", "dob", "nhs_number", "upn", "nino", "household_id", "role"]
    return {c: people[c].to_numpy()[person] for c in cols}


def _line_one(addr: pl.DataFrame, rng, abbreviate: float) -> np.ndarray:
    street = rec.abbreviate_streets(addr["street"].to_numpy().astype(object), abbreviate, rng)
    number = addr["house_number"].to_numpy().astype(str)
    flat = addr["flat"].to_numpy()
    line = np.char.add(np.char.add(number, " "), street.astype(str)).astype(object)
    flats = np.flatnonzero(flat > 0)
    line[flats] = np.char.add(np.char.add(np.char.add("Flat ", flat[flats].astype(str)), ", "), line[flats].astype(str))
    return line


def _references(prefix: str, numbers: np.ndarray, width: int) -> np.ndarray:
    """Each number written with `width` digits after `prefix` (DA0000042), as Python strings; an
    empty array for none (numpy's zfill fails on one: a small county may have no open case)."""
    if len(numbers) == 0:
        return np.empty(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(numbers.astype(str), width)).astype(object)


def _frame(columns: dict, person: np.ndarray, day: np.ndarray, t: Timeline, addr: pl.DataFrame) -> pl.DataFrame:
    """The extract in the partner's layout, with `person_id`, `event_date` and `address_id` (the
    address the row was recorded at) beside it for truth; the writer drops them."""
    data = {k: (pl.Series(k, list(v), dtype=pl.String) if isinstance(v, np.ndarray) and v.dtype == object else v) for k, v in columns.items()}
    frame = pl.DataFrame(data)
    return frame.with_columns(
        pl.Series("person_id", person), pl.Series("event_date", t.date(day)).cast(pl.Date), addr["address_id"].alias("address_id")
    )


def _pick_weighted(rng, weights: np.ndarray, n: int) -> np.ndarray:
    p = weights / weights.sum()
    return rng.choice(len(weights), n, p=p)


# ----------------------------------------------------------------- sources

def asb_incidents(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    # Police-recorded anti-social behaviour: about 17 incidents per 1,000 residents a year
    # (ONS Crime in England and Wales, year ending March 2024; 7-19 by force).
    n_people = county.people.height
    incidents = 0.017 * n_people * YEARS
    age = t.age
    weight = np.where((age >= 10) & (age <= 70), 1.0, 0.0)
    weight *= np.select([(age >= 12) & (age <= 19), (age >= 20) & (age <= 35)], [3.0, 1.6], 1.0)
    weight *= _need_weight(t, 1.1)
    suspect, day = t.draw(rng, weight, incidents * 0.85)
    n = len(suspect)
    incident_no = np.arange(n)
    rows_person = [suspect]
    rows_day = [day]
    rows_incident = [incident_no]
    rows_role = [np.full(n, "SUSPECT", dtype=object)]
    # a victim in about half of incidents, a witness in a fifth: other residents
    for role, share in (("VICTIM", 0.5), ("WITNESS", 0.2)):
        idx = np.flatnonzero(rng.random(n) < share)
        others = rng.integers(0, n_people, len(idx))
        ok = t.age[others] >= 12
        rows_person.append(others[ok])
        rows_day.append(day[idx[ok]])
        rows_incident.append(incident_no[idx[ok]])
        rows_role.append(np.full(ok.sum(), role, dtype=object))
    person = np.concatenate(rows_person)
    day = np.concatenate(rows_day)
    incident = np.concatenate(rows_incident)
    role = np.concatenate(rows_role)
    m = len(person)
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, day)
    category = rng.choice(["PERSONAL", "NUISANCE", "ENVIRONMENTAL"], n, p=[0.25, 0.65, 0.10])[incident]
    crime = np.where(rng.random(n) < 0.15, "Y", "N")[incident]
    need = t.need[t.household[person]]
    # formal action is likelier for suspects from households under more strain (repeat involvement)
    formal = rng.choice(["WARNING_LETTER", "ABC", "CPW", "CPN", "INJUNCTION", "CBO"], m, p=[0.45, 0.15, 0.17, 0.13, 0.05, 0.05])
    takes_action = rng.random(m) < 0.3 + 0.1 * np.clip(need, 0, 3)
    action = np.where((role == "SUSPECT") & takes_action, formal, "NONE")
    # police habits: nicknames, names in capitals, dates of birth often not taken (an age instead)
    forename = rec.typos(rec.upper_case(rec.nicknames(p["forename"], 0.12, rng), 0.2, rng), 0.02, rng)
    surname = rec.typos(p["surname"], 0.02, rng)
    dob = rec.transpose_day_month(p["dob"], 0.01, rng, t.date(day))
    no_dob = rng.random(m) < 0.45
    ages = t.age_at(person, day).astype(object)
    ages[~no_dob & (rng.random(m) < 0.5)] = None
    ages[no_dob & (rng.random(m) < 0.1)] = None
    address = np.char.add(np.char.add(_line_one(addr, rng, 0.5).astype(str), ", "), addr["town"].to_numpy().astype(str)).astype(object)
    columns = {
        "INCIDENT_REF": _references("ASB", incident + 1, 7),
        "INCIDENT_DATE": np.array(rec.format_dates(t.date(day), "%Y-%m-%d"), dtype=object),
        "ASB_CATEGORY": category.astype(object),
        "CRIME_LINKED": crime.astype(object),
        "ROLE": role,
        "FIRST_NAME": forename,
        "SURNAME": surname,
        "DOB": np.where(no_dob, None, np.array(rec.format_dates(dob, "%Y-%m-%d"), dtype=object)),
        "AGE": np.array([None if a is None else str(a) for a in ages], dtype=object),
        "ADDRESS": address,
        "POSTCODE": rec.blank(rec.postcode_style(addr["postcode"].to_numpy(), rng), 0.08, rng),
        "ACTION": action.astype(object),
    }
    return _frame(columns, person, day, t, addr)


def domestic_abuse(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    # Police-recorded domestic abuse-related crimes: about 14 per 1,000 residents a year
    # (ONS Domestic abuse in England and Wales overview, November 2024).
    people = county.people
    n_people = people.height
    role = t.role
    household = t.household
    ex = people["ex_partner_id"].to_numpy()
    # the partner in the household: the other adult of a couple
    partner = np.full(n_people, -1)
    adults = np.flatnonzero(np.isin(role, ["adult", "partner", "parent"]) & (t.age >= 18))
    order = adults[np.lexsort((adults, household[adults]))]
    same = household[order[:-1]] == household[order[1:]]
    a, b = order[:-1][same], order[1:][same]
    partner[a], partner[b] = b, a
    has_abuser = (partner >= 0) | (ex >= 0)
    weight = np.where((t.age >= 17) & (t.age <= 70) & has_abuser, 1.0, 0.0)
    weight *= np.where(t.sex == "F", 4.0, 1.0) * _need_weight(t, 1.2)
    victim, day = t.draw(rng, weight, 0.014 * n_people * YEARS, boost=4.0)
    n = len(victim)
    moved = people["move_day"].to_numpy()
    use_ex = (ex[victim] >= 0) & ((partner[victim] < 0) | (rng.random(n) < 0.3))
    perpetrator = np.where(use_ex, ex[victim], partner[victim])
    relationship = np.where(use_ex & (day >= moved[np.maximum(ex[victim], 0)]), "EX_PARTNER", "PARTNER")
    notification = np.arange(n)
    persons, days, notes, roles, rels = [victim, perpetrator], [day, day], [notification, notification], [
        np.full(n, "VICTIM", dtype=object), np.full(n, "PERPETRATOR", dtype=object)], [np.full(n, "SELF", dtype=object), relationship.astype(object)]
    # children of the victim's household: resident, some present at the incident
    children = np.flatnonzero(role == "child")
    child_household = household[children]
    sort = np.argsort(child_household, kind="stable")
    children, child_household = children[sort], child_household[sort]
    first = np.searchsorted(child_household, household[victim], "left")
    last = np.searchsorted(child_household, household[victim], "right")
    counts = last - first
    rep = np.repeat(np.arange(n), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    kids = children[first[rep] + offsets]
    kid_day = day[rep]
    born = t.age_at(kids, kid_day) >= 0
    kids, kid_day, rep = kids[born], kid_day[born], rep[born]
    persons.append(kids)
    days.append(kid_day)
    notes.append(notification[rep])
    roles.append(np.where(rng.random(len(kids)) < 0.4, "CHILD_PRESENT", "CHILD_RESIDENT").astype(object))
    rels.append(np.full(len(kids), "CHILD", dtype=object))
    person = np.concatenate(persons)
    day = np.concatenate(days)
    note = np.concatenate(notes)
    person_role = np.concatenate(roles)
    rel = np.concatenate(rels)
    m = len(person)
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, day)
    need = t.need[t.household[victim]]
    risk = np.where(rng.random(n) < 0.08 + 0.08 * np.clip(need, 0, 3), "HIGH", np.where(rng.random(n) < 0.32, "MEDIUM", "STANDARD"))
    marac = np.where((risk == "HIGH") & (rng.random(n) < 0.8), "Y", "N")
    minutes = rng.integers(0, 24 * 60, n)
    stamp = (t.date(day[:n]).astype("datetime64[m]") + minutes.astype("timedelta64[m]"))[note]
    adult = t.age_at(person, day) >= 18
    dob = rec.transpose_day_month(p["dob"], 0.01, rng, t.date(day))
    dob_text = np.array(rec.format_dates(dob, "%Y-%m-%d"), dtype=object)
    dob_text[adult & (rng.random(m) < 0.25)] = None
    gender = np.where(p["sex"] == "M", "MALE", "FEMALE").astype(object)
    gender[rng.random(m) < 0.01] = "UNKNOWN"
    columns = {
        "NOTIFICATION_ID": _references("DA", note + 1, 7),
        "INCIDENT_DATETIME": np.array(pl.Series(stamp.astype("datetime64[ms]")).dt.strftime("%Y-%m-%dT%H:%M").to_list(), dtype=object),
        "DASH_RISK": risk[note].astype(object),
        "MARAC_REFERRAL": marac[note].astype(object),
        "PERSON_ROLE": person_role,
        "FORENAME": rec.typos(rec.upper_case(rec.nicknames(p["forename"], 0.1, rng), 0.15, rng), 0.02, rng),
        "SURNAME": rec.typos(p["surname"], 0.02, rng),
        "DOB": dob_text,
        "GENDER": gender,
        "ADDRESS": np.char.add(np.char.add(_line_one(addr, rng, 0.5).astype(str), ", "), addr["town"].to_numpy().astype(str)).astype(object),
        "POSTCODE": rec.postcode_style(addr["postcode"].to_numpy(), rng),
        "RELATIONSHIP_TO_VICTIM": rel,
    }
    return _frame(columns, person, day, t, addr)


def ae_attendances(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    # A&E attendances by age (NHS England Hospital Accident and Emergency Activity 2023-24):
    # about 800 per 1,000 children aged 0-4 a year, roughly 300-450 per 1,000 at other ages.
    age = t.age
    rate = np.select([age <= 4, age <= 15, age <= 24, age <= 64], [0.8, 0.3, 0.42, 0.3], 0.45)
    weight = rate * _need_weight(t, 0.35)
    person, day = t.draw(rng, weight, (rate.sum()) * YEARS, boost=1.6)
    m = len(person)
    need = t.need[t.household[person]]
    crisis = t.in_crisis(person, day)
    age_then = t.age_at(person, day)
    stress = np.exp(0.8 * np.clip(need, -1, 3) + 0.8 * crisis)
    groups = ["INJURY", "SELF_HARM", "ALCOHOL", "DRUGS", "MENTAL_HEALTH", "ASSAULT", "ILLNESS", "OTHER"]
    adult = age_then >= 16
    teen = (age_then >= 12) & (age_then <= 25)
    w = np.stack(
        [
            np.where(age_then < 16, 0.34, 0.25) * np.ones(m),
            0.012 * stress * np.where(teen, 3, 1) * (age_then >= 11),
            0.02 * stress * adult,
            0.012 * stress * adult,
            0.025 * stress * (age_then >= 11),
            0.02 * stress * (age_then >= 12),
            np.full(m, 0.45),
            np.full(m, 0.12),
        ],
        axis=1,
    )
    cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)
    complaint = np.array(groups)[(rng.random(m)[:, None] > cum).sum(axis=1)]
    safeguarding = (rng.random(m) < 0.004 + 0.05 * ((age_then < 16) & np.isin(complaint, ["INJURY", "ASSAULT", "SELF_HARM"])) * stress / 3)
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, day)
    forename, surname = rec.swap(p["forename"], p["surname"], 0.01, rng)
    dob = rec.one_digit_off(rec.transpose_day_month(p["dob"], 0.01, rng, t.date(day)), 0.004, rng, t.date(day))
    gender = np.where(p["sex"] == "M", "1", "2").astype(object)
    gender[rng.random(m) < 0.01] = "9"
    columns = {
        "ATTENDANCE_ID": _references("ED", rng.permutation(m), 8),
        "ARRIVAL_DATE": np.array(rec.format_dates(t.date(day), "%Y%m%d"), dtype=object),
        "NHS_NUMBER": rec.blank(rec.space_nhs_number(p["nhs_number"], 0.35, rng), 0.05, rng),
        "PERSON_GIVEN_NAME": rec.typos(rec.upper_case(forename, 0.1, rng), 0.015, rng),
        "PERSON_FAMILY_NAME": rec.typos(rec.upper_case(surname, 0.1, rng), 0.015, rng),
        "PERSON_BIRTH_DATE": np.array(rec.format_dates(dob, "%Y%m%d"), dtype=object),
        "PERSON_STATED_GENDER": gender,
        "POSTCODE": rec.postcode_style(addr["postcode"].to_numpy(), rng),
        "COMPLAINT_GROUP": complaint.astype(object),
        "SAFEGUARDING_CONCERN": np.where(safeguarding, "Y", "N").astype(object),
    }
    return _frame(columns, person, day, t, addr)


OUT_OF_WORK = ("UC_NO_WORK_REQUIREMENTS", "UC_WORK_SEARCH", "ESA", "JSA", "IS")


def worklessness(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    # About 10% of children live in workless households (ONS Working and workless
    # households, April-June 2024); out-of-work claims cluster where need is high.
    people = county.people
    n_people = people.height
    hh_kind = county.households["kind"].to_numpy()[t.household]
    lead = np.isin(t.role, ["adult", "parent"]) & (t.age >= 18) & (t.age <= 66)
    # one claimant per household: the first lead adult
    first_in_household = np.r_[True, t.household[1:] != t.household[:-1]]
    lead_adult = lead & (first_in_household | (t.role == "adult"))
    logit = -2.9 + 1.05 * t.need[t.household] + 0.9 * (hh_kind == "lone_parent")
    claims_out = lead_adult & (rng.random(n_people) < 1 / (1 + np.exp(-logit)))
    in_work = lead_adult & ~claims_out & (rng.random(n_people) < 0.1)
    other = lead_adult & ~claims_out & ~in_work & (rng.random(n_people) < 0.05)
    claimant = np.flatnonzero(claims_out | in_work | other)
    k = len(claimant)
    benefit = np.where(
        claims_out[claimant],
        rng.choice(OUT_OF_WORK, k, p=[0.35, 0.3, 0.2, 0.08, 0.07]),
        np.where(in_work[claimant], "UC_WORKING", rng.choice(["PIP", "CARERS"], k)),
    )
    # claims start before or during the history; about half have ended
    start_day = rng.integers(-int(2 * 365), t.days - 20, k)
    crisis_start = t.crisis_from[t.household[claimant]]
    in_crisis = (crisis_start >= 0) & claims_out[claimant] & (rng.random(k) < 0.6)
    start_day = np.where(in_crisis, crisis_start.astype(np.int64) + rng.integers(0, 60, k), start_day)
    start_day = np.minimum(start_day, t.days - 20)
    ended = rng.random(k) < 0.5
    end_day = start_day + rng.integers(90, 900, k)
    ended &= end_day < t.days - 1
    # the partner in the household shares a joint claim
    partners = np.full(k, -1)
    nxt = np.minimum(claimant + 1, n_people - 1)
    is_partner = (t.household[nxt] == t.household[claimant]) & np.isin(t.role[nxt], ["partner", "parent"]) & (nxt != claimant)
    partners[is_partner] = nxt[is_partner]
    claim_no = np.arange(k)
    person = np.concatenate([claimant, partners[is_partner]])
    claim = np.concatenate([claim_no, claim_no[is_partner]])
    role = np.concatenate([np.full(k, "CLAIMANT"), np.full(is_partner.sum(), "PARTNER")]).astype(object)
    m = len(person)
    record_day = np.maximum(start_day[claim], 0)
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, record_day)
    # benefits records may keep a surname from before marriage
    surname = p["surname"].copy()
    use_birth = rng.random(m) < 0.2
    surname[use_birth] = p["birth_surname"][use_birth]
    start = t.date(start_day)
    end = t.date(end_day)
    end_text = np.array(rec.format_dates(end, "%d-%b-%Y"), dtype=object)
    end_text[~ended] = None
    addr_lines = _line_one(addr, rng, 0.0)
    columns = {
        "CLAIM_REF": _references("CL", claim + 1, 7),
        "ROLE": role,
        "NINO": rec.blank(p["nino"], 0.1, rng),
        "FORENAME": rec.typos(p["forename"], 0.01, rng),
        "SURNAME": rec.typos(surname, 0.01, rng),
        "DOB": np.array(rec.format_dates(p["dob"], "%d-%b-%Y"), dtype=object),
        "ADDRESS_LINE_1": addr_lines,
        "ADDRESS_LINE_2": addr["town"].to_numpy().astype(object),
        "POSTCODE": rec.postcode_style(addr["postcode"].to_numpy(), rng),
        "BENEFIT": benefit[claim].astype(object),
        "CLAIM_START": np.array(rec.format_dates(start, "%d-%b-%Y"), dtype=object)[claim],
        "CLAIM_END": end_text[claim],
    }
    return _frame(columns, person, record_day, t, addr)


# (term, end month, end day, sessions, days from the census day to the term's end)
TERMS = (("Autumn", 12, 20, 74, 79), ("Spring", 3, 31, 62, 74), ("Summer", 7, 20, 68, 66))


def _nc_year(age_on_1_sept: np.ndarray) -> np.ndarray:
    labels = np.array(["R"] + [str(i) for i in range(1, 14)])
    return labels[np.clip(age_on_1_sept - 4, 0, 13)]


def school_attendance(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    # Persistent absence (below 90% attendance): about 20% of pupils in 2023/24, 33% for
    # pupils eligible for free school meals (DfE Pupil absence in schools in England 2023/24).
    people = county.people
    dob = people["dob"].to_numpy()
    pupils = np.flatnonzero(people["upn"].is_not_null().to_numpy())
    pupil_effect = rng.normal(0, 0.65, people.height)
    rows = []
    first_year = county.start.year - 1
    for year in range(first_year, county.reference.year + 1):
        sept = np.datetime64(f"{year}-09-01")
        age = ((sept - dob[pupils]).astype(np.int64) // 365.25).astype(np.int64)
        enrolled = pupils[(age >= 4) & (age <= 17)]
        nc = _nc_year(((sept - dob[enrolled]).astype(np.int64) // 365.25).astype(np.int64))
        for term, month, day_of_month, possible, census_lag in TERMS:
            end = dt.date(year + (term != "Autumn"), month, day_of_month)
            if end > county.reference or end < county.start:
                continue
            day = np.full(len(enrolled), (end - county.start).days)
            rows.append((year, term, enrolled, nc, day, possible, census_lag))
    persons = np.concatenate([r[2] for r in rows])
    days = np.concatenate([r[4] for r in rows])
    m = len(persons)
    year = np.concatenate([np.full(len(r[2]), r[0]) for r in rows])
    term = np.concatenate([np.full(len(r[2]), r[1], dtype=object) for r in rows])
    nc = np.concatenate([r[3] for r in rows])
    possible = np.concatenate([np.full(len(r[2]), r[5]) for r in rows]) - rng.integers(0, 6, m) * 2
    need = t.need[t.household[persons]]
    crisis = t.in_crisis(persons, days)
    x = -3.05 + 0.7 * need + 1.0 * crisis + pupil_effect[persons] + rng.normal(0, 0.35, m)
    absence = rng.binomial(possible, 1 / (1 + np.exp(-x)))
    unauth_share = 1 / (1 + np.exp(-(-1.3 + 0.8 * need + 0.5 * crisis)))
    unauthorised = rng.binomial(absence, unauth_share)
    authorised = absence - unauthorised
    secondary = ~np.isin(nc, ["R", "1", "2", "3", "4"])
    # suspensions: about 9 per 100 pupils a year, concentrated (DfE Suspensions and permanent exclusions 2023/24)
    suspensions = rng.poisson(0.03 * np.exp(1.5 * np.clip(need, -2, 3) + 1.2 * crisis) * secondary)
    excluded = secondary & (rng.random(m) < 0.0004 * np.exp(1.2 * np.clip(need, -2, 3)))
    # schools: primaries and secondaries within each locality
    locality = dict(zip(county.postcodes["postcode"].to_list(), county.postcodes["locality"].to_list()))
    hh_locality = np.array([locality[p] for p in county.households["postcode"].to_list()], dtype=object)
    pupil_locality = hh_locality[t.household[persons]]
    n_primary = max(2, len(pupils) // 300)
    n_secondary = max(1, len(pupils) // 1200)
    primary = (persons * 7919) % n_primary
    second = (persons * 104729) % n_secondary
    school_no = np.where(secondary, n_primary + second, primary)
    loc_code = np.searchsorted(np.array(sorted(set(hh_locality))), pupil_locality)
    urn = 100000 + school_no * 4 + loc_code
    surnames = people["surname"].to_numpy()
    school_name = np.where(secondary, np.char.add(surnames[(urn * 31) % len(surnames)].astype(str), " Academy"), np.char.add(surnames[(urn * 17) % len(surnames)].astype(str), " Primary School"))
    p = _person_columns(county, persons)
    # a termly return carries the address held on the term's census day
    census_lag = np.concatenate([np.full(len(r[2]), r[6]) for r in rows])
    addr = _addresses_at(county, persons, days - census_lag)
    # first priority contact: usually the mother
    household = t.household
    n_households = county.households.height
    mother = np.full(n_households, -1)
    father = np.full(n_households, -1)
    grand = np.full(n_households, -1)
    # the first of each kind in a household (reversed assignment keeps the first)
    for target, mask in (
        (grand, t.role == "grandparent"),
        (mother, (t.role == "parent") & (t.sex == "F")),
        (father, (t.role == "parent") & (t.sex == "M")),
    ):
        idx = np.flatnonzero(mask)[::-1]
        target[household[idx]] = idx
    kinds = county.households["kind"].to_numpy()
    h = household[persons]
    draw = rng.random(m)
    use_grand = (grand[h] >= 0) & (draw < 0.08)
    use_mother = ~use_grand & (mother[h] >= 0) & ((draw < 0.75) | (father[h] < 0))
    use_father = ~use_grand & ~use_mother & (father[h] >= 0)
    contact = np.select([use_grand, use_mother, use_father], [grand[h], mother[h], father[h]], -1)
    step = (kinds[h] == "blended") & (p["surname"] != surnames[np.maximum(father[h], 0)])
    relation = np.select(
        [use_grand, use_mother, use_father & step, use_father], ["Grandparent", "Mother", "Step-parent", "Father"], ""
    ).astype(object)
    has_contact = (contact >= 0) & (rng.random(m) > 0.05)
    contact_fore = np.where(has_contact, people["forename"].to_numpy()[np.maximum(contact, 0)], None)
    contact_sur = np.where(has_contact, surnames[np.maximum(contact, 0)], None)
    relation[~has_contact | (relation == "")] = None
    preferred = np.full(m, None, dtype=object)
    nick = rng.random(len(people)) < 0.06
    with_nick = np.flatnonzero(nick[persons])
    nicknamed = rec.nicknames(p["forename"][with_nick], 1.0, rng)
    preferred[with_nick] = np.where(nicknamed != p["forename"][with_nick], nicknamed, None)
    line1 = _line_one(addr, rng, 0.0)
    columns = {
        "UPN": rec.blank(p["upn"], 0.02, rng),
        "Legal Forename": rec.typos(p["forename"], 0.005, rng),
        "Legal Surname": rec.typos(p["surname"], 0.005, rng),
        "Preferred Forename": preferred,
        "DOB": np.array(rec.format_dates(p["dob"], "%d/%m/%Y"), dtype=object),
        "Gender": p["sex"].astype(object),
        "Address Line 1": line1,
        "Address Line 2": np.full(m, None, dtype=object),
        "Town": addr["town"].to_numpy().astype(object),
        "Postcode": rec.postcode_style(addr["postcode"].to_numpy(), rng, lower=0.03, nospace=0.03),
        "School URN": urn.astype(str).astype(object),
        "School Name": school_name.astype(object),
        "NC Year": nc.astype(object),
        "Academic Year": np.array([f"{y}/{(y + 1) % 100:02d}" for y in year], dtype=object),
        "Term": term,
        "Sessions Possible": possible.astype(str).astype(object),
        "Authorised Absence": authorised.astype(str).astype(object),
        "Unauthorised Absence": unauthorised.astype(str).astype(object),
        "Suspensions": suspensions.astype(str).astype(object),
        "Permanent Exclusion": np.where(excluded, "Y", "N").astype(object),
        "Contact Forename": contact_fore.astype(object),
        "Contact Surname": contact_sur.astype(object),
        "Contact Relationship": relation,
    }
    return _frame(columns, persons, days, t, addr)


def open_cases(county: County, t: Timeline, rng: np.random.Generator, asb: pl.DataFrame) -> pl.DataFrame:
    # Children in need: about 333 per 10,000 children at 31 March (DfE Characteristics of
    # children in need 2024); escalation follows crises, with some arising unforeseen.
    hh = county.households
    n_hh = hh.height
    need = hh["need"].to_numpy()
    crisis = hh["crisis_start"].to_numpy() >= 0
    has_children = np.zeros(n_hh, dtype=bool)
    has_children[t.household[(t.role == "child") & (t.age < 18)]] = True
    p_escalate = 1 / (1 + np.exp(-(-3.9 + 0.9 * need + 2.6 * crisis)))
    escalate = has_children & (rng.random(n_hh) < p_escalate)
    esc_day = np.where(
        crisis, t.crisis_from + rng.integers(60, 300, n_hh), rng.integers(0, t.days, n_hh)
    ).astype(np.int64)
    escalate &= esc_day < t.days
    service = np.where(need > 1.6, rng.choice(["CIN", "CP", "CLA"], n_hh, p=[0.45, 0.4, 0.15]), rng.choice(["CIN", "CP", "CLA"], n_hh, p=[0.65, 0.28, 0.07]))
    length = np.select([service == "CIN", service == "CP"], [rng.integers(90, 400, n_hh), rng.integers(180, 550, n_hh)], rng.integers(365, 1100, n_hh))
    # early help: offered in some crises, usually before any escalation
    early = has_children & crisis & (rng.random(n_hh) < 0.3) | has_children & (rng.random(n_hh) < 0.01)
    early_day = np.where(crisis, t.crisis_from + rng.integers(0, 120, n_hh), rng.integers(0, t.days, n_hh)).astype(np.int64)
    early &= early_day < t.days
    early_len = rng.integers(90, 280, n_hh)
    cases = []
    for flag, day, svc, dur in ((escalate, esc_day, service, length), (early, early_day, np.full(n_hh, "EARLY_HELP"), early_len)):
        households = np.flatnonzero(flag)
        cases.append((households, day[households], svc[households], dur[households]))
    children = np.flatnonzero((t.role == "child") & (t.age < 18))
    child_household = t.household[children]  # sorted: a household's members are contiguous
    persons, days, services, closes = [], [], [], []
    for households, day, svc, dur in cases:
        first = np.searchsorted(child_household, households, "left")
        counts = np.searchsorted(child_household, households, "right") - first
        case = np.repeat(np.arange(len(households)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        kids = children[first[case] + offsets]
        born = t.age_at(kids, day[case]) >= 0
        persons.append(kids[born])
        days.append(day[case][born])
        services.append(svc[case][born].astype(object))
        closes.append((day + dur)[case][born])
    # youth offending: some young people named as suspects with formal action
    suspects = asb.filter((pl.col("ROLE") == "SUSPECT") & pl.col("ACTION").is_in(["CPN", "INJUNCTION", "CBO"]))
    yos_person = suspects["person_id"].to_numpy()
    yos_day = (suspects["event_date"] - county.start).dt.total_days().to_numpy() + rng.integers(14, 90, len(yos_person))
    age = t.age_at(yos_person, yos_day)
    chosen = (age >= 10) & (age <= 17) & (rng.random(len(yos_person)) < 0.4)
    persons.append(yos_person[chosen])
    days.append(yos_day[chosen])
    services.append(np.full(chosen.sum(), "YOS", dtype=object))
    closes.append(yos_day[chosen] + rng.integers(180, 365, chosen.sum()))
    person = np.concatenate(persons).astype(np.int64)
    day = np.concatenate(days).astype(np.int64)
    service_col = np.concatenate(services)
    close_day = np.concatenate(closes).astype(np.int64)
    observed = day < t.days
    person, day, service_col, close_day = person[observed], day[observed], service_col[observed], close_day[observed]
    m = len(person)
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, day)
    close_text = np.array(rec.format_dates(t.date(close_day), "%Y-%m-%d"), dtype=object)
    close_text[close_day >= t.days] = None
    columns = {
        "CASE_ID": _references("C", np.arange(1, m + 1), 7),
        "SERVICE": service_col,
        "FORENAME": rec.typos(p["forename"], 0.005, rng),
        "SURNAME": rec.typos(p["surname"], 0.005, rng),
        "DOB": np.array(rec.format_dates(p["dob"], "%Y-%m-%d"), dtype=object),
        "POSTCODE": rec.postcode_style(addr["postcode"].to_numpy(), rng, lower=0.05, nospace=0.05),
        "OPEN_DATE": np.array(rec.format_dates(t.date(day), "%Y-%m-%d"), dtype=object),
        "CLOSE_DATE": close_text,
    }
    return _frame(columns, person, day, t, addr)


# Contacts at the children's front door (MASH). Referrals to children's social care run at about
# 5 per 100 children a year in England (DfE Children in need 2024: 621,000 referrals); contacts,
# which include those that end with advice or no further action, run at two to three times that.
FRONT_DOOR_CONTACTS_PER_CHILD = 0.12
CONTACT_SOURCES = (("POLICE", 0.30), ("SCHOOL", 0.20), ("HEALTH", 0.15), ("LA_HOUSING", 0.05), ("FAMILY", 0.08), ("SELF", 0.02), ("ANONYMOUS", 0.05), ("OTHER", 0.15))
CONTACT_OUTCOMES = ("NO_FURTHER_ACTION", "ADVICE_SIGNPOSTING", "EARLY_HELP", "FAMILY_HELP", "CSC_ASSESSMENT", "STRATEGY_DISCUSSION")


def front_door_contacts(county: County, t: Timeline, rng: np.random.Generator) -> pl.DataFrame:
    """One row per child named in a contact (spec v2); a contact often names the household's
    other children too. Families under more strain are contacted about more often, and more of
    their contacts lead to an assessment; many end in no further action (a circumstance locality
    meetings look for)."""
    child = (t.role == "child") & (t.age < 18)
    weight = np.where(child, 1.0, 0.0) * _need_weight(t, 1.2)
    about, day = t.draw(rng, weight, FRONT_DOOR_CONTACTS_PER_CHILD * child.sum() * YEARS, boost=4.0)
    n = len(about)
    # the household's other children named in the same contact, in six contacts out of ten
    children = np.flatnonzero(child)
    child_household = t.household[children]
    h = t.household[about]
    first = np.searchsorted(child_household, h, "left")
    counts = np.searchsorted(child_household, h, "right") - first
    named_all = rng.random(n) < 0.6
    counts = np.where(named_all, counts, 1)
    contact = np.repeat(np.arange(n), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    person = np.where(named_all[contact], children[first[contact] + offsets], about[contact])
    day = day[contact]
    born = t.age_at(person, day) >= 0
    person, day, contact = person[born], day[born], contact[born]
    m = len(person)
    need = t.need[t.household[about]]
    serious = 1 / (1 + np.exp(-(-1.6 + 0.8 * need)))  # the chance a contact leads beyond advice
    beyond = rng.random(n) < serious
    outcome = np.where(
        beyond,
        rng.choice(CONTACT_OUTCOMES[2:], n, p=[0.45, 0.15, 0.32, 0.08]),
        rng.choice(CONTACT_OUTCOMES[:2], n, p=[0.62, 0.38]),
    )[contact]
    source = rng.choice([s for s, _ in CONTACT_SOURCES], n, p=[w for _, w in CONTACT_SOURCES])[contact]
    p = _person_columns(county, person)
    addr = _addresses_at(county, person, day)
    dob = np.array(rec.format_dates(p["dob"], "%Y-%m-%d"), dtype=object)
    columns = {
        "CONTACT_ID": _references("FD", contact + 1, 7),
        "CONTACT_DATE": np.array(rec.format_dates(t.date(day), "%Y-%m-%d"), dtype=object),
        "FORENAME": rec.typos(p["forename"], 0.01, rng),
        "SURNAME": rec.typos(p["surname"], 0.01, rng),
        "DOB": rec.blank(dob, 0.03, rng),  # an unidentified child's
        "POSTCODE": rec.postcode_style(addr["postcode"].to_numpy(), rng, lower=0.05, nospace=0.05),
        "CONTACT_SOURCE": source.astype(object),
        "OUTCOME": outcome.astype(object),
    }
    return _frame(columns, person, day, t, addr)
