"""Every comparison level's SQL gives the code its label says, on the level's own worked example."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from warehouse import scratch
from linkage.comparisons import BLOCKING_RULES, COMPARISON_LIST, PROFILE_FIELDS, TF_FIELDS, TRAINING_RULES, free_in
from linkage.model import COMPARISONS, FittedModel, compare, prior_m

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
