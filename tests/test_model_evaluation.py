"""The scorecard model's evaluation on counties whose signal is known: the figures must come out
right, and a model must not be said to earn its place when it does not. Plain Python, no Dagster."""

from __future__ import annotations

import datetime as dt
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score

from features import load_registry
from features.calendar import shift_months
from models.nonnegative_logistic import NonNegativeLogistic
from models.metrics import Ranked, ranking_metrics, selected_share, wilson
from models.scorecard import (
    OUTCOME_MONTHS,
    _scorecard,
    evaluate_snapshots,
    evaluation_plan,
    model_card,
    window_held,
)

REFERENCE = dt.date(2026, 9, 30)
FEATURES = ["strong", "medium", "weak", "noise_a", "noise_b", "protective"]
TRUTH = np.array([1.6, 1.0, 0.5, 0.0, 0.0, -0.8])
INTERCEPT = -3.8


def test_ranking_metrics_equal_scikit_learns_with_ties_and_count_ties_by_chance():
    rng = np.random.default_rng(1)
    y = (rng.random(3_000) < 0.1).astype(float)
    ranking = rng.integers(0, 12, 3_000) + 2 * y  # few distinct values: many ties
    roc, pr, precision, recall = ranking_metrics(Ranked.of(ranking), y, np.ones_like(y), 300)
    assert roc == pytest.approx(roc_auc_score(y, ranking))
    assert pr == pytest.approx(average_precision_score(y, ranking))
    # the list of 300 cuts through a value shared by many: expected hits, not the lucky order
    order = np.argsort(-ranking, kind="stable")
    boundary = ranking[order[299]]
    above, tied = ranking > boundary, ranking == boundary
    expected = y[above].sum() + (300 - above.sum()) * y[tied].mean()
    assert precision == pytest.approx(expected / 300) and recall == pytest.approx(expected / y.sum())
    assert selected_share(Ranked.of(ranking), 300).sum() == pytest.approx(300)
    # a weight of 2 is the family drawn twice
    weights = rng.integers(0, 3, 3_000).astype(float)
    repeated = np.repeat(np.arange(3_000), weights.astype(int))
    assert ranking_metrics(Ranked.of(ranking), y, weights, 300)[:2] == pytest.approx(
        (roc_auc_score(y[repeated], ranking[repeated]), average_precision_score(y[repeated], ranking[repeated]))
    )


def test_wilson_interval_holds_the_rate_and_stays_in_zero_to_one():
    low, high = wilson(np.array([0, 5, 50]), np.array([10, 10, 50]))
    assert low[0] == 0 and 0 < high[0] < 0.35
    assert low[1] < 0.5 < high[1]
    assert high[2] == 1 and 0.9 < low[2] < 1


def test_no_training_outcome_window_reaches_into_its_test_month():
    plan = evaluation_plan(REFERENCE)
    assert len(plan) == 3 and plan[0].test_month == shift_months(REFERENCE, -OUTCOME_MONTHS)
    for origin in plan:
        assert all(shift_months(m, OUTCOME_MONTHS) <= origin.test_month for m in origin.train_months)
    # a history too short for the earlier months drops them, and says nothing it cannot test
    usable = {shift_months(REFERENCE, -m) for m in range(12, 27)}
    shorter = evaluation_plan(REFERENCE, usable)
    assert all(set(o.train_months) <= usable and o.test_month in usable for o in shorter)
    assert [len(o.train_months) for o in shorter] == [2, 1]
    assert evaluation_plan(REFERENCE, {shift_months(REFERENCE, -12)}) == []


def test_the_evaluation_moves_once_a_quarter():
    from models.scorecard import evaluation_anchor, evaluation_key

    assert evaluation_anchor(dt.date(2026, 10, 31)) == evaluation_anchor(dt.date(2026, 11, 30)) == dt.date(2026, 9, 30)
    assert evaluation_anchor(dt.date(2026, 9, 30)) == dt.date(2026, 9, 30)
    assert evaluation_anchor(dt.date(2026, 1, 31)) == dt.date(2025, 12, 31)
    registry = load_registry()
    same = evaluation_key(dt.date(2026, 10, 31), registry, "supporting_families")
    assert same == evaluation_key(dt.date(2026, 11, 30), registry, "supporting_families")
    assert same != evaluation_key(dt.date(2026, 12, 31), registry, "supporting_families")
    assert same != evaluation_key(dt.date(2026, 10, 31), registry, "families_first")


def test_a_month_says_how_much_of_each_sources_window_the_warehouse_holds():
    registry = load_registry()
    first = {source: dt.date(2023, 12, 2) for source in {i.source for i in registry.indicators if i.source}}
    held = window_held(first, registry, dt.date(2024, 6, 30))
    assert held["ae_attendances"] == pytest.approx(7 / 12, abs=0.001)  # Dec 2023 to Jun 2024 of Jul 2023 to Jun 2024
    assert held["worklessness"] == 1.0  # its window is six months
    assert window_held(first, registry, dt.date(2025, 6, 30))["ae_attendances"] == 1.0


def _families(month: dt.date, rng: np.random.Generator, n: int, score: str) -> pl.DataFrame:
    x = (rng.random((n, len(FEATURES))) < 0.12).astype(np.int8)
    logit = INTERCEPT + x @ TRUTH
    escalated = (rng.random(n) < expit(logit)).astype(np.int8)
    needs = x.sum(axis=1)
    return pl.DataFrame({
        "family_ref": [f"F{i:06d}" for i in range(n)],
        "score": rng.integers(0, 30, n) if score == "noise" else np.round(logit * 10).astype(int),
        "needs_met": needs, "eligible": needs >= 2, **{f: x[:, i] for i, f in enumerate(FEATURES)},
        "escalated": escalated, "reference": month, "true_probability": expit(logit),
        "locality": rng.choice(["North", "South"], n), "youngest_child_age": rng.integers(0, 18, n),
        "youngest_child_sex": rng.choice(["F", "M"], n), "adults": rng.integers(1, 3, n),
    })


def _county(score: str, seed: int = 3) -> tuple[dict, list]:
    rng = np.random.default_rng(seed)
    plan = evaluation_plan(REFERENCE)
    months = sorted({o.test_month for o in plan} | {m for o in plan for m in o.train_months})
    return {m: _families(m, rng, 20_000, score) for m in months}, plan


@pytest.fixture(scope="module")
def known_signal():
    snapshots, plan = _county("noise")
    return snapshots, plan, evaluate_snapshots(snapshots, plan, FEATURES, replicates=200)


def test_a_model_of_known_signal_recovers_its_order_and_never_a_negative_point(known_signal):
    _, _, evaluation = known_signal
    points = dict(evaluation.scorecard.select("indicator", "points").iter_rows())
    assert points["strong"] == 10 and points["strong"] > points["medium"] > points["weak"] > 0
    assert points["noise_a"] <= 1 and points["noise_b"] <= 1
    assert evaluation.scorecard["points"].min() >= 0 and points["protective"] == 0
    protective = evaluation.scorecard.filter(pl.col("indicator") == "protective").row(0, named=True)
    assert protective["unconstrained_coefficient"] < -0.4 and protective["most_often_with"]
    assert "`protective`" in model_card(evaluation)


def test_the_figures_of_known_signal_come_out_right(known_signal):
    snapshots, plan, evaluation = known_signal
    oracle = np.mean([roc_auc_score(snapshots[o.test_month]["escalated"], snapshots[o.test_month]["true_probability"]) for o in plan])
    model = evaluation.comparison.filter(pl.col("method") == "scorecard model").row(0, named=True)
    assert abs(model["roc_auc"] - oracle) < 0.02
    assert model["roc_auc_low"] < oracle < model["roc_auc_high"]
    noise = evaluation.comparison.filter(pl.col("method") == "transparent score").row(0, named=True)
    assert noise["roc_auc_low"] < 0.5 < noise["roc_auc_high"]  # a score of noise is no better than chance
    # list size: the families eligible under the rule (two needs or more), each test month
    for origin in plan:
        month = snapshots[origin.test_month]
        sizes = evaluation.per_test_month.filter(pl.col("test_month") == origin.test_month)["list_size"]
        assert (sizes == int(month["eligible"].sum())).all()
    for row in evaluation.calibration.filter(pl.col("families") >= 2_000).iter_rows(named=True):
        assert abs(row["predicted"] - row["observed"]) < 0.015
    assert evaluation.earned_its_place
    assert (evaluation.differences.filter(pl.col("metric") == "recall_at_list_size")["low"] > 0).all()


def test_a_model_no_better_than_the_transparent_score_is_told_so():
    snapshots, plan = _county("oracle", seed=4)  # the transparent score is the true risk itself
    evaluation = evaluate_snapshots(snapshots, plan, FEATURES, replicates=100)
    assert not evaluation.earned_its_place
    card = model_card(evaluation)
    assert "does not earn its place; leave the switch off" in card and "transparent score" in evaluation.notes[-1]


def test_the_bounded_fit_equals_scikit_learns_when_no_bound_binds():
    rng = np.random.default_rng(7)
    x = (rng.random((30_000, 4)) < 0.2).astype(float)
    y = (rng.random(30_000) < expit(-3 + x @ np.array([1.2, 0.6, 0.3, 0.9]))).astype(int)
    ours, theirs = NonNegativeLogistic().fit(x, y), LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x, y)
    assert ours.coef_[0] == pytest.approx(theirs.coef_[0], abs=2e-3)
    assert ours.intercept_[0] == pytest.approx(theirs.intercept_[0], abs=2e-3)


def test_an_evaluation_stored_before_the_estimator_had_its_own_module_still_loads():
    # a quarter's stored evaluation pickled the estimator as models.scorecard.NonNegativeLogistic
    x = np.array([[0, 1], [1, 0], [1, 1], [0, 0]] * 50, dtype=float)
    y = np.array([0, 1, 1, 0] * 50)
    fitted = NonNegativeLogistic().fit(x, y)
    stored = pickle.dumps(fitted, protocol=0).replace(b"models.nonnegative_logistic", b"models.scorecard")
    assert b"models.scorecard\nNonNegativeLogistic" in stored
    loaded = pickle.loads(stored)
    assert loaded.predict_proba(x) == pytest.approx(fitted.predict_proba(x))


def test_a_run_that_does_not_train_the_model_never_imports_scikit_learn():
    # scikit-learn and what it loads took 1.3 s of every run's start (importing the pipeline 3.53 -> 2.25 s without them)
    code = "import sys, pipelines.definitions; print(sorted(m for m in ('sklearn', 'scipy.optimize') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_the_cards_unconstrained_fit_on_patterns_equals_the_fit_on_every_family():
    # the card fits on one weighted row per pattern of indicators and outcome, not on every family-month
    rng = np.random.default_rng(11)
    x = (rng.random((40_000, 5)) < 0.25).astype(float)
    y = (rng.random(40_000) < expit(-2.5 + x @ np.array([1.0, -0.8, 0.4, 0.0, 0.7]))).astype(int)
    card = _scorecard([f"i{i}" for i in range(5)], x, y)
    every_family = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(x, y).coef_[0]
    fitted = dict(zip(card["indicator"], card["unconstrained_coefficient"]))
    assert [fitted[f"i{i}"] for i in range(5)] == pytest.approx(np.round(every_family, 4).tolist(), abs=1e-4)
    assert fitted["i1"] < 0  # not vacuous: the unconstrained fit finds the negative weight the bounded one cannot


def test_a_small_county_is_evaluated_but_no_model_orders_its_lists():
    # training months hold enough escalations; the test months, which the ordering model is
    # trained on, hold fewer than ten between them (a council of a thousand families, say)
    snapshots, plan = _county("noise", seed=5)
    tests = {o.test_month for o in plan}
    for month in tests:
        frame = snapshots[month]
        keep = np.zeros(frame.height, dtype=bool)
        keep[np.flatnonzero(frame["escalated"].to_numpy())[:2]] = True  # two escalations each
        snapshots[month] = frame.with_columns(pl.Series("escalated", keep.astype(np.int8)))
    evaluation = evaluate_snapshots(snapshots, plan, FEATURES, replicates=50)
    assert evaluation.model is None
    card = model_card(evaluation)
    assert "leave the switch off" in card and "No model trained to order this month's lists" in card
