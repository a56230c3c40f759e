"""Vocabularies for the synthetic county: names by heritage, nicknames, streets and towns.

Names come from Faker's locale providers (real forename and surname frequency
lists), so the county has common surnames (Smith is weighted as England weights
it) and rare ones, and names with accents that recording strips or keeps.
Nothing here is a real person: names are drawn independently of each other.
"""

from __future__ import annotations

import csv
import importlib
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class NamePool:
    male: np.ndarray
    female: np.ndarray
    surnames: np.ndarray
    surname_weights: np.ndarray  # probabilities


# Heritage groups and their shares of residents. Shares are illustrative of a
# Home Counties area (ONS Census 2021: about 80% White British/Irish in
# Hertfordshire, with South Asian, Black African and Eastern European communities).
HERITAGE = {
    "british": ("en_GB", 0.74),
    "irish": ("en_IE", 0.06),
    "south_asian": ("en_IN", 0.08),
    "west_african": ("yo_NG", 0.03),
    "ghanaian": ("tw_GH", 0.02),
    "romanian": ("ro_RO", 0.07),
}


# A county with more of its residents from the communities whose names partners record least
# consistently (ONS Census 2021: Luton, Slough or Tower Hamlets have a third to a half of their
# residents of South Asian, Black African or Eastern European heritage). Used by the generator's
# "diverse" and "hard" recording modes; "pakistani_bangladeshi" is a curated pool (below).
DIVERSE_HERITAGE = {
    "british": ("en_GB", 0.42),
    "irish": ("en_IE", 0.05),
    "south_asian": ("en_IN", 0.10),
    "pakistani_bangladeshi": (None, 0.16),
    "west_african": ("yo_NG", 0.09),
    "ghanaian": ("tw_GH", 0.05),
    "romanian": ("ro_RO", 0.08),
    "polish": ("pl_PL", 0.05),
}

# Faker has no gendered Pakistani or Bangladeshi forenames in Latin script, so a short curated
# pool of common names (drawn independently of each other: no real person). Women of Bangladeshi
# and Pakistani families often carry Begum, Khatun or Bibi as a surname rather than their husband's
# (the synthetic county's `hard` habits follow that convention).
_CURATED = {
    "pakistani_bangladeshi": NamePool(
        male=np.array("Mohammed Ahmed Ali Hassan Hussain Imran Bilal Usman Zain Yusuf Ibrahim Adam Ayaan Hamza Abdul Rahim Karim Faisal "
                      "Tariq Kamran Asif Shahid Jamal Rizwan Saif Omar Idris Sohail Nadeem Zakaria".split(), dtype=object),
        female=np.array("Fatima Aisha Maryam Zara Khadija Amina Hafsa Sana Nadia Ruksana Shabana Yasmin Sadia Nasreen Farah Samina "
                        "Rubina Shazia Salma Iqra Zainab Hira Laila Anisa Rehana Tahmina Sumaiya Safiya Noor Sabiha".split(), dtype=object),
        surnames=np.array("Khan Ahmed Ali Hussain Rahman Islam Miah Uddin Akhtar Iqbal Malik Shah Mahmood Choudhury Hossain Karim "
                          "Ullah Haque Qureshi Butt Raja Aziz Mirza Chaudhry Sheikh".split(), dtype=object),
        surname_weights=np.array([1.0 / (i + 1) ** 0.8 for i in range(25)]) / sum(1.0 / (i + 1) ** 0.8 for i in range(25)),
    ),
}
def feminine_surname(surname: str) -> str:
    """A Polish surname as a woman of the family carries it: Kowalski -> Kowalska, Nowicki -> Nowicka."""
    return surname[:-1] + "a" if surname.endswith(("ski", "cki", "dzki")) else surname


#: Surnames women of these families carry as their own (a convention, not a family name).
WOMENS_SURNAMES = {"pakistani_bangladeshi": ("Begum", "Khatun", "Bibi")}


def _provider(locale: str):
    return importlib.import_module(f"faker.providers.person.{locale}").Provider


@cache
def name_pools() -> dict[str, NamePool]:
    pools = dict(_CURATED)
    for group, (locale, _) in {**HERITAGE, **DIVERSE_HERITAGE}.items():
        if locale is None:
            continue
        provider = _provider(locale)
        surnames = provider.last_names
        if hasattr(provider, "male_last_names"):
            # Polish: the family's name in its masculine form (a woman's is inflected: feminine_surname)
            surnames = list(dict.fromkeys(provider.male_last_names + provider.unisex_last_names))
        if isinstance(surnames, tuple) and len(surnames) and isinstance(surnames[0], dict):
            surnames = {k: v for d in surnames for k, v in d.items()}  # Faker's gendered pools, as one
        if isinstance(surnames, dict):
            names = list(surnames)
            weights = np.array([float(surnames[n]) for n in names])
        else:
            names = list(dict.fromkeys(surnames))
            # Zipf-like weights so a few surnames are common within every group.
            weights = 1.0 / np.arange(1, len(names) + 1) ** 0.8
        male = [n for n in dict.fromkeys(provider.first_names_male) if " " not in n]
        female = [n for n in dict.fromkeys(provider.first_names_female) if " " not in n]
        pools[group] = NamePool(
            male=np.array(male, dtype=object),
            female=np.array(female, dtype=object),
            surnames=np.array(names, dtype=object),
            surname_weights=weights / weights.sum(),
        )
    return pools


@cache
def nicknames() -> dict[str, tuple[str, ...]]:
    """Forename (Title case) -> nicknames (Title case), from the `nicknames` package's curated list."""
    table: dict[str, list[str]] = {}
    with resources.files("nicknames").joinpath("names.csv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["relationship"] == "has_nickname":
                table.setdefault(row["name1"].title(), []).append(row["name2"].title())
    return {k: tuple(v) for k, v in table.items()}


STREET_TYPES = (
    ("Road", "Rd"), ("Street", "St"), ("Avenue", "Ave"), ("Close", "Cl"), ("Lane", "Ln"),
    ("Drive", "Dr"), ("Way", "Way"), ("Crescent", "Cres"), ("Gardens", "Gdns"), ("Grove", "Gr"),
    ("Place", "Pl"), ("Court", "Ct"), ("Terrace", "Terr"), ("Walk", "Wlk"), ("Mews", "Mews"), ("Rise", "Rise"),
)
TOWN_SUFFIXES = ("bury", "ford", "ton", "ham", "field", "worth", "ley", "stead", "wick", "borough")
# Postcode areas around a Home Counties county; districts and units are generated.
POSTCODE_AREAS = ("AL", "EN", "HP", "SG", "WD", "CM", "LU")
INWARD_LETTERS = np.array(list("ABDEFGHJLNPQRSTUWXYZ"))  # the letters Royal Mail uses in inward codes
LOCALITIES = ("North", "Central", "South West", "Coast")
WARD_SUFFIXES = ("Central", "North", "South", "East", "West", "Park", "Vale", "Green", "Heath", "Hill")
