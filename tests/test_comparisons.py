"""Every comparison level's SQL gives the code its label says, on the level's own worked example."""

from __future__ import annotations

import datetime as dt

import re

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from warehouse import scratch
from linkage.comparisons import BLOCKING_RULES, COMPARISON_LIST, COMPARISONS_BY_NAME, PROFILE_FIELDS, TF_FIELDS, TRAINING_RULES, free_in
from linkage.comparisons import BLOCKING_AS_THEY_ARE, BLOCKING_CODED, BLOCKING_TABLE
from linkage.model import COMPARISONS, FittedModel, candidate_pairs, compare, hold_blocking_keys, prior_m
from linkage.names import canonical_forename, phonetic

SCHEMA = {f: pl.String for f in PROFILE_FIELDS} | {"pid": pl.Int64, "dob": pl.Date, "birth_year": pl.Int32}
LEVELS = [(c, level) for c in COMPARISON_LIST for level in c.levels]


def _profile(pid: int, fields: dict) -> dict:
    row = {f: None for f in PROFILE_FIELDS} | {"pid": pid}
    for name, value in dict(fields).items():
        row[name] = dt.date.fromisoformat(value) if name == "dob" else value
    return row


@pytest.mark.parametrize(("comparison", "level"), LEVELS, ids=[f"{c.name}:{level.label}" for c, level in LEVELS])
def test_each_level_example_lands_on_its_labelled_code(comparison, level):
    left, right = level.example
    assert left and right, "every level carries a worked example"
    con = scratch()
    try:
        con.register("profiles", pl.DataFrame([_profile(1, left), _profile(2, right)], schema=SCHEMA))
        con.register("pairs", pl.DataFrame({"l": [1], "r": [2]}))
        code = compare(con, "pairs")[comparison.name].item()
    finally:
        con.close()
    assert COMPARISONS[comparison.name][code] == level.label


def test_a_blank_field_gives_no_evidence_either_way():
    con = scratch()
    try:
        con.register("profiles", pl.DataFrame([_profile(1, {"forename": "ANN"}), _profile(2, {})], schema=SCHEMA))
        con.register("pairs", pl.DataFrame({"l": [1], "r": [2]}))
        levels = compare(con, "pairs").row(0, named=True)
    finally:
        con.close()
    assert all(levels[c.name] == -1 for c in COMPARISON_LIST)


def test_labels_priors_and_the_fitted_summary_agree():
    for comparison in COMPARISON_LIST:
        labels = COMPARISONS[comparison.name]
        assert labels == comparison.labels and len(set(labels)) == len(labels)
        assert labels[0] == "different" and labels[-1] == comparison.levels[0].label, "code 0 is the worst, the last code the best"
        m = prior_m(len(labels))
        assert np.isclose(m.sum(), 1) and (np.diff(m) > 0).all(), "EM starts with matches likelier at each better level"
    ones = {c.name: np.full(len(c.labels), 1 / len(c.labels)) for c in COMPARISON_LIST}
    summary = FittedModel(prior=0.01, m=ones, u=ones, pairs=0, iterations=0).summary()
    assert {name: tuple(levels) for name, levels in summary["weights"].items()} == COMPARISONS


def test_profiles_blocking_and_training_are_generated_from_the_comparisons():
    assert len(set(PROFILE_FIELDS)) == len(PROFILE_FIELDS)
    assert TF_FIELDS == ("forename", "surname")
    derived = {"forename_canonical", "surname_phonetic"}
    for rule in BLOCKING_RULES + TRAINING_RULES:
        assert rule.fields <= set(PROFILE_FIELDS) | derived, rule.name
    # a session estimates only what its blocking leaves free to disagree
    sessions = {rule.name: free_in(rule) for rule in TRAINING_RULES}
    assert sessions == {
        "dob and phonetic surname": ("forename", "sex", "postcode", "address", "identifier"),
        "forename, surname and district": ("dob", "sex", "address", "identifier"),
        "dob and forename": ("surname", "sex", "postcode", "address", "identifier"),
    }
    assert set().union(*map(set, sessions.values())) == set(COMPARISONS), "every comparison is estimated by some session"


def _slipped(rng: np.random.Generator, text: str) -> str:
    """`text` with one keying slip: a character changed, added or dropped, or two neighbours swapped."""
    at = int(rng.integers(0, len(text)))
    kind = int(rng.integers(0, 4))
    digit = str(int(rng.integers(0, 10)))
    if kind == 0:
        return text[:at] + digit + text[at + 1:]
    if kind == 1:
        return text[:at] + digit + text[at:]
    if kind == 2 and len(text) > 1:
        return text[:at] + text[at + 1:]
    at = min(at, len(text) - 2)
    return text[:at] + text[at + 1] + text[at] + text[at + 2:] if len(text) > 1 else text


def test_a_slip_is_found_only_where_the_distance_says_so_however_long_the_strings():
    """`one_slip` measures the distance only where a slip is possible; over slipped and unrelated
    strings of every length an identifier takes, it agrees with measuring every pair."""
    from linkage.comparisons import one_slip

    rng = np.random.default_rng(5)
    left, right = [], []
    for _ in range(6_000):
        text = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 14))))
        other = _slipped(rng, text) if rng.random() < 0.6 else "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(1, 14))))
        left.append(text)
        right.append(other if rng.random() < 0.97 else None)
    con = scratch()
    try:
        con.register("pairs", pl.DataFrame({"a": left, "b": right}))
        found = con.sql(f"SELECT coalesce({one_slip('a', 'b')}, false) AS guarded, coalesce(damerau_levenshtein(a, b) = 1, false) AS measured FROM pairs").pl()
    finally:
        con.close()
    assert found["measured"].sum() > 2_000  # the slips are there to be found
    assert found["guarded"].equals(found["measured"])


def test_a_birth_date_slip_is_found_wherever_the_distance_finds_one():
    """The birth-date comparison measures the digits' distance only where the year or the day is
    unchanged; over slipped and unrelated dates it gives every pair the level measuring all would."""
    from linkage.comparisons import COMPARISON_LIST

    dob = next(c for c in COMPARISON_LIST if c.name == "dob")
    rng = np.random.default_rng(11)
    rows = []
    for i in range(5_000):
        day = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 80 * 365)))
        other = None
        while other is None:
            text = _slipped(rng, day.strftime("%Y%m%d")) if rng.random() < 0.7 else str(int(rng.integers(19400101, 20251231)))
            try:
                other = dt.datetime.strptime(text, "%Y%m%d").date() if len(text) == 8 else None
            except ValueError:
                other = None
        rows += [_profile(2 * i, {"dob": day.isoformat()}), _profile(2 * i + 1, {"dob": other.isoformat()})]
    profiles = pl.DataFrame(rows, schema=SCHEMA).with_columns(pl.col("dob").dt.year().cast(pl.Int32).alias("birth_year"))
    measured = dob.level_sql().replace(next(level.sql for level in dob.levels if "damerau" in (level.sql or "")), (
        "abs(date_diff('day', l.dob, r.dob)) = 1 OR damerau_levenshtein(strftime(l.dob, '%Y%m%d'), strftime(r.dob, '%Y%m%d')) = 1"
    ))
    con = scratch()
    try:
        con.register("profiles", profiles)
        con.register("pairs", pl.DataFrame({"l": list(range(0, 10_000, 2)), "r": list(range(1, 10_000, 2))}))
        levels = con.sql(
            f"SELECT {dob.level_sql()} AS guarded, {measured} AS measured FROM pairs p JOIN profiles l ON l.pid = p.l JOIN profiles r ON r.pid = p.r"
        ).pl()
    finally:
        con.close()
    assert (levels["measured"] == 3).sum() > 1_000  # one slip apart: the level the guard could lose
    assert levels["guarded"].equals(levels["measured"])


def test_the_not_comparable_shortcut_gives_the_levels_the_comparison_gives_without_it():
    """A comparison's not-comparable test is said first only to skip work: every pair of values
    (blank, the same, one slip apart, different, short) lands where the levels alone put it."""
    import dataclasses
    import itertools

    values = [None, "9434765919", "9434769519", "4010232137", "94347", "A123456789012"]
    rows = [dict.fromkeys(PROFILE_FIELDS) | {"pid": i, "nhs_number": a, "upn": b, "nino": c}
            for i, (a, b, c) in enumerate(itertools.product(values, [None, "A123456789012", "A123456789021"], [None, "AB123456C"]))]
    identifier = COMPARISONS_BY_NAME["identifier"]
    assert identifier.not_comparable
    con = scratch()
    try:
        con.register("profiles", pl.DataFrame(rows, schema=SCHEMA))
        pairs = "FROM profiles l, profiles r"
        with_shortcut = con.sql(f"SELECT {identifier.level_sql()} AS code {pairs} ORDER BY l.pid, r.pid").fetchall()
        without = con.sql(f"SELECT {dataclasses.replace(identifier, not_comparable=None).level_sql()} AS code {pairs} ORDER BY l.pid, r.pid").fetchall()
    finally:
        con.close()
    assert with_shortcut == without
    assert {code for (code,) in without} == {-1, 0, 1, 2}


def test_the_household_rules_pair_only_those_at_one_address_who_might_be_one_person():
    """Two at one address or postcode are a candidate pair when one has no birth date, both were
    born in one year or on one day of the year, or their forenames start alike: not a mother and
    her son, who share only a surname and an address, but the son and daughter as partners keyed
    them, each with a forename's letters and their birth date mis-keyed."""
    people = [
        ("FATIMA", "1985-03-02"),   # 0: the mother
        ("IMRAN", "2012-06-01"),    # 1: her son...
        ("MIRAN", "2013-06-01"),    # 2: ...as a partner keyed him: letters swapped, year mis-keyed
        ("NASREEN", "2016-04-02"),  # 3: her daughter...
        ("ANSREEN", "2016-02-04"),  # 4: ...as a partner keyed her: letters swapped, day and month too
        ("MOHAMMED", None),         # 5: her partner, with no birth date (a police notification's)
    ]
    home = {"surname": "KHAN", "postcode": "AB1 2CD", "postcode_sector": "AB1 2", "postcode_district": "AB1", "house_number": "14"}
    rows = [_profile(pid, home | {"forename": forename} | ({"dob": dob} if dob else {})) for pid, (forename, dob) in enumerate(people)]
    profiles = pl.DataFrame(rows, schema=SCHEMA).with_columns(birth_year=pl.col("dob").dt.year().cast(pl.Int32))
    profiles = profiles.with_columns(forename_canonical=canonical_forename(pl.col("forename")), surname_phonetic=phonetic(profiles["surname"]))
    con = scratch()
    try:
        hold_blocking_keys(con, profiles)
        candidate_pairs(con)
        pairs = set(con.sql("SELECT l, r FROM candidates").fetchall())
    finally:
        con.close()
    assert pairs == {(1, 2), (3, 4), (0, 5), (1, 5), (2, 5), (3, 5), (4, 5)}


def test_every_blocking_rule_reads_only_the_blocking_keys():
    held = {"pid", *BLOCKING_CODED, *BLOCKING_AS_THEY_ARE}
    for rule in BLOCKING_RULES + TRAINING_RULES:
        assert set(re.findall(r"\b[lr]\.(\w+)", rule.sql)) <= held, rule.name


# a few names and places, so that profiles share them (a forename another profile's surname too),
# written in more than one script; None: not recorded
_NAMES = st.sampled_from(["ANNE", "ANN", "KHAN", "ÉMILE", "EMILE", "ZOË", "LEE", "AB", None])
_PLACES = st.sampled_from(["AB1 2CD", "AB1 2CE", "ZZ9 9ZZ", None])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(_NAMES, _NAMES, st.sampled_from([None, "2012-06-01", "2012-01-06", "1985-06-01"]), _PLACES, st.sampled_from(["1", "2", None]),
                          st.sampled_from(["4857773456", None])), min_size=2, max_size=12))
# one household's two forenames of one initial, born on other days of other years: paired by the initial alone
@example([("ANNE", "KHAN", "2012-01-06", "AB1 2CD", "1", None), ("ANN", "KHAN", "1985-06-01", "AB1 2CD", "2", None)])
# a forename that is another's surname, the other way round too, on one birth date
@example([("LEE", "KHAN", "2012-06-01", None, None, None), ("KHAN", "LEE", "2012-06-01", "ZZ9 9ZZ", None, None)])
def test_blocking_on_coded_keys_finds_the_pairs_blocking_on_their_text_finds(people):
    """The blocking keys hold text fields as integer codes: every rule must pair exactly the
    profiles it pairs on the text itself (the rules' SQL run over the text, a forename's initial
    as DuckDB's left(forename, 1))."""
    rows = [
        _profile(pid, {"forename": f, "surname": s, "postcode": p, "postcode_sector": p and p[:5], "postcode_district": p and p[:3], "house_number": h, "nhs_number": n}
                 | ({"dob": d} if d else {}))
        for pid, (f, s, d, p, h, n) in enumerate(people)
    ]
    profiles = pl.DataFrame(rows, schema=SCHEMA).with_columns(birth_year=pl.col("dob").dt.year().cast(pl.Int32))
    profiles = profiles.with_columns(forename_canonical=canonical_forename(pl.col("forename")), surname_phonetic=phonetic(profiles["surname"]))
    con = scratch()
    try:
        hold_blocking_keys(con, profiles)
        assert all(dtype.is_integer() for dtype in con.sql(f"SELECT {', '.join(BLOCKING_CODED)} FROM {BLOCKING_TABLE}").pl().schema.dtypes())
        con.register("_text", profiles)
        as_text = ", ".join(c if c != "forename_initial" else "left(forename, 1) AS forename_initial" for c in BLOCKING_CODED)
        con.execute(f"CREATE TEMP TABLE text_keys AS SELECT pid, {', '.join(BLOCKING_AS_THEY_ARE)}, {as_text} FROM _text")
        for rule in BLOCKING_RULES + TRAINING_RULES:
            coded = set(con.sql(rule.pairs_sql()).fetchall())
            text = set(con.sql(rule.pairs_sql("text_keys", "text_keys")).fetchall())
            assert coded == text, rule.name
    finally:
        con.close()
