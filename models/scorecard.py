"""The scorecard model: does a learned weighting of the indicators predict escalation better
than the transparent score, or than simply counting headline needs? Measured out of time.

For a series of earlier reference months, families and indicators are rebuilt as they
stood then (the same functions a monthly run uses), and the outcome is observed later in
the council's own `open_cases`, as a council would: a child of the family opened to child
in need, child protection or looked-after services within 12 months after the reference
month, among families with no such case open at the reference month. A logistic
regression (scikit-learn) on the indicators is trained on the earlier months and tested
on the latest month whose 12 months have passed; it is presented as a scorecard (points
per indicator), calibrated, and compared on the same test families against the
transparent score and the count of headline outcomes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import duckdb
import numpy as np
import polars as pl
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from features import compute_indicators
from features.calendar import shift_months
from features.registry import Registry
from linkage import form_families
from linkage.person_records import linked_person_records
from models.score import score_families
from rules import STATUTORY_SERVICES, is_adult, is_child
from warehouse import linked_rows

#: The warehouse table of this month's model probabilities, read when a council orders lists by the model.
MODEL_SCORES = "family_model_scores"


def snapshot(con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, linked: pl.DataFrame | None = None) -> pl.DataFrame:
    """One row per family as it stood at `reference`: indicators (0/1 columns), the transparent
    score, headline outcomes met, locality, and the escalation outcome in the next 12 months.
    Families are formed as of `reference`; indicators are computed over the warehouse's own
    tables with those families' members (no copy of the partners' rows)."""
    linked = linked if linked is not None else linked_person_records(con)
    families = form_families(linked, reference)
    con.register("snapshot_members", families.members)
    try:
        hits = compute_indicators(con, registry, reference, members="snapshot_members")
    finally:
        con.unregister("snapshot_members")
    scores = score_families(registry, hits.person_indicators, hits.family_indicators, families.families, families.members).scores
    wide = hits.family_indicators.with_columns(pl.lit(1).alias("hit")).pivot(on="indicator_id", index="family_ref", values="hit", aggregate_function="max")
    frame = scores.select("family_ref", "score", "needs_met", "eligible").join(wide, on="family_ref", how="left")
    for indicator in registry.indicators:
        if indicator.id not in frame.columns:
            frame = frame.with_columns(pl.lit(0).alias(indicator.id))
    frame = frame.with_columns([pl.col(i.id).fill_null(0).cast(pl.Int8) for i in registry.indicators])
    # the outcome, from the council's own case records, linked to persons like any source
    cases = con.sql(f"{linked_rows('open_cases', 'pl.person_id, r.open_date, r.close_date')} WHERE r.service IN {STATUTORY_SERVICES}").pl()
    members = families.members.select("person_id", "family_ref", "age")
    children = members.filter(is_child(pl.col("age")))
    cases = cases.join(children, on="person_id")
    horizon = shift_months(reference, 12)
    already = cases.filter((pl.col("open_date") <= reference) & (pl.col("close_date").is_null() | (pl.col("close_date") > reference)))["family_ref"].unique()
    escalated = cases.filter((pl.col("open_date") > reference) & (pl.col("open_date") <= horizon))["family_ref"].unique()
    locality = _localities(con, families.members)
    frame = frame.filter(~pl.col("family_ref").is_in(already.implode())).with_columns(
        pl.col("family_ref").is_in(escalated.implode()).cast(pl.Int8).alias("escalated"), pl.lit(reference).alias("reference")
    )
    # sex as the partners state it, the most frequent across a person's mentions
    sex = (
        linked.filter(pl.col("sex").is_in(["M", "F"]))
        .group_by("person_id", "sex").len().sort(["person_id", "len", "sex"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True).agg(pl.col("sex").first())
    )
    youngest = (
        members.filter(is_child(pl.col("age"))).join(sex, on="person_id", how="left").sort(["family_ref", "age", "person_id"])
        .group_by("family_ref", maintain_order=True).agg(pl.col("age").first().alias("youngest_child_age"), pl.col("sex").first().alias("youngest_child_sex"))
    )
    adults = members.filter(is_adult(pl.col("age"))).group_by("family_ref").len().rename({"len": "adults"})
    return frame.join(locality, on="family_ref", how="left").join(youngest, on="family_ref", how="left").join(adults, on="family_ref", how="left")


def _localities(con, members: pl.DataFrame) -> pl.DataFrame:
    postcodes = con.sql("SELECT postcode, locality FROM raw_postcode_localities").pl()
    household_postcode = members.select("family_ref", pl.col("household_postcode").alias("postcode"))
    return household_postcode.join(postcodes, on="postcode", how="left").group_by("family_ref").agg(pl.col("locality").drop_nulls().first())


class NotEnoughOutcomes(ValueError):
    """The history holds too few escalations to train or test a model honestly."""


@dataclass
class Evaluation:
    train_months: list[dt.date]
    test_month: dt.date
    families_train: int
    families_test: int
    escalations_test: int
    list_size: int
    comparison: pl.DataFrame  # method, roc_auc, pr_auc, brier, precision_at_k, recall_at_k
    fairness: pl.DataFrame  # group, value, families, selected share, escalation rate, recall at k
    scorecard: pl.DataFrame  # indicator, coefficient, points
    calibration: pl.DataFrame  # bin, predicted, observed, families
    notes: list[str] = field(default_factory=list)
    model: CalibratedClassifierCV | None = None  # the calibrated model, to order this month's families when switched on
    features: list[str] = field(default_factory=list)
    earned_its_place: bool = False  # beat the transparent score and the headline count on PR AUC out of time
    test_selection: pl.DataFrame | None = None  # family_ref (as formed at the test month), selected by the model, escalated

    def predict(self, family_indicators: pl.DataFrame, families: pl.Series) -> pl.DataFrame:
        """family_ref, model_probability for `families`, from this month's family_indicators."""
        hits = family_indicators.select("family_ref", "indicator_id").unique().with_columns(pl.lit(1, dtype=pl.Int8).alias("hit"))
        wide = pl.DataFrame({"family_ref": families}).join(
            hits.pivot(on="indicator_id", index="family_ref", values="hit") if hits.height else pl.DataFrame(schema={"family_ref": pl.String}),
            on="family_ref", how="left",
        )
        for feature in self.features:
            if feature not in wide.columns:
                wide = wide.with_columns(pl.lit(0, dtype=pl.Int8).alias(feature))
        x = wide.select([pl.col(f).fill_null(0) for f in self.features]).to_numpy()
        return pl.DataFrame({"family_ref": wide["family_ref"], "model_probability": self.model.predict_proba(x)[:, 1].round(6)})


def _at_k(y: np.ndarray, ranking: np.ndarray, k: int) -> tuple[float, float, np.ndarray]:
    order = np.argsort(-ranking, kind="stable")[:k]
    selected = np.zeros(len(y), dtype=bool)
    selected[order] = True
    hits = y[selected].sum()
    return hits / max(k, 1), hits / max(y.sum(), 1), selected


def evaluate(con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, list_share: float = 0.05) -> Evaluation:
    """Train on reference months 24, 21 and 18 months before the latest testable month; test on it."""
    test_month = shift_months(reference, -12)
    train_months = [shift_months(test_month, -m) for m in (15, 12, 9)]
    linked = linked_person_records(con)
    # in a fixed order: the calibration's folds follow row order, and a rerun must give the same model
    train = pl.concat([snapshot(con, registry, m, linked) for m in train_months], how="diagonal_relaxed").sort("reference", "family_ref")
    test = snapshot(con, registry, test_month, linked).sort("family_ref")
    features = [i.id for i in registry.indicators]
    x_train, y_train = train.select(features).to_numpy(), train["escalated"].to_numpy()
    x_test, y_test = test.select(features).to_numpy(), test["escalated"].to_numpy()
    notes = []
    if len(set(y_train.tolist())) < 2 or y_train.sum() < 10:
        raise NotEnoughOutcomes(f"{int(y_train.sum())} escalations in the training months: too few to train on")
    base = LogisticRegression(C=1.0, max_iter=1000, class_weight=None)
    base.fit(x_train, y_train)
    calibrated = CalibratedClassifierCV(LogisticRegression(C=1.0, max_iter=1000), method="sigmoid", cv=3)
    calibrated.fit(x_train, y_train)
    model_p = calibrated.predict_proba(x_test)[:, 1]
    k = max(1, int(round(list_share * len(y_test))))
    rows, selections = [], {}
    for method, ranking in (
        ("scorecard model", model_p),
        ("transparent score", test["score"].to_numpy().astype(float)),
        ("headline needs met", test["needs_met"].to_numpy().astype(float)),
    ):
        precision, recall, selected = _at_k(y_test, ranking + 1e-9 * test["score"].to_numpy(), k)
        selections[method] = selected
        rows.append(
            {
                "method": method,
                "roc_auc": round(float(roc_auc_score(y_test, ranking)), 4) if 0 < y_test.sum() < len(y_test) else None,
                "pr_auc": round(float(average_precision_score(y_test, ranking)), 4) if y_test.sum() else None,
                "brier": round(float(brier_score_loss(y_test, model_p)), 4) if method == "scorecard model" else None,
                f"precision_at_{k}": round(float(precision), 4),
                f"recall_at_{k}": round(float(recall), 4),
            }
        )
    comparison = pl.DataFrame(rows)
    points = np.round(base.coef_[0] / max(np.abs(base.coef_[0]).max(), 1e-9) * 10).astype(int)
    scorecard = pl.DataFrame({"indicator": features, "coefficient": np.round(base.coef_[0], 4), "points": points}).sort("points", descending=True)
    bins = np.clip((model_p * 10).astype(int), 0, 9)
    calibration = pl.DataFrame({"bin": bins, "p": model_p, "y": y_test}).group_by("bin").agg(
        pl.col("p").mean().round(4).alias("predicted"), pl.col("y").mean().round(4).alias("observed"), pl.len().alias("families")
    ).sort("bin")
    test = test.with_columns(
        pl.Series("selected", selections["scorecard model"]),
        pl.when(pl.col("youngest_child_age") <= 4).then(pl.lit("0-4")).when(pl.col("youngest_child_age") <= 10).then(pl.lit("5-10")).otherwise(pl.lit("11-17")).alias("youngest_child_age_band"),
        pl.when(pl.col("adults") == 1).then(pl.lit("one adult")).otherwise(pl.lit("two or more adults")).alias("household"),
    )
    fairness = pl.concat(
        [
            test.group_by(pl.col(group).fill_null("unknown").alias("value")).agg(
                pl.len().alias("families"),
                pl.col("selected").mean().round(4).alias("selected_share"),
                pl.col("escalated").mean().round(4).alias("escalation_rate"),
                ((pl.col("selected") & (pl.col("escalated") == 1)).sum() / pl.col("escalated").sum().clip(1)).round(4).alias("recall_at_k"),
            ).with_columns(pl.lit(group).alias("group")).select("group", "value", "families", "selected_share", "escalation_rate", "recall_at_k")
            for group in ("locality", "youngest_child_age_band", "youngest_child_sex", "household")
        ]
    ).sort("group", "value")
    best = comparison.sort("pr_auc", descending=True, nulls_last=True)["method"][0]
    if best != "scorecard model":
        notes.append(f"The scorecard model does not beat the {best} on PR AUC out of time: it has not earned a place in ordering lists.")
    return Evaluation(
        train_months=train_months, test_month=test_month, families_train=train.height, families_test=test.height,
        escalations_test=int(y_test.sum()), list_size=k, comparison=comparison, fairness=fairness,
        scorecard=scorecard, calibration=calibration, notes=notes,
        model=calibrated, features=features, earned_its_place=best == "scorecard model",
        test_selection=test.select("family_ref", "selected", "escalated"),
    )


def model_card(evaluation: Evaluation) -> str:
    """The model card in Markdown: data, period, features, performance, fairness, limits, use."""
    def table(frame: pl.DataFrame) -> str:
        head = "| " + " | ".join(frame.columns) + " |\n| " + " | ".join("---" for _ in frame.columns) + " |\n"
        return head + "\n".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows())

    flagged = evaluation.fairness.filter(
        (pl.col("families") >= 30) & ((pl.col("recall_at_k") - pl.col("recall_at_k").mean().over("group")).abs() > 0.15)
    )
    return f"""# Model card: earlyhelp escalation scorecard

**Intended use.** To order the discussion of families a locality meeting already has on its
list because they meet the programme rule. It never decides: it cannot add or remove a
family. It orders nothing unless the council switches it on (`order_by: model` in the
locality lists' run configuration); it is off by default, and should stay off unless the
comparison below shows it earns its place.

**What it predicts.** A child of the family opened to child in need, child protection or
looked-after services within 12 months after the reference month, among families with no
such case open then; observed in the council's own `open_cases`.

**Data and period.** Trained on families as they stood at {', '.join(str(m) for m in evaluation.train_months)}
({evaluation.families_train:,} family-months); tested out of time on {evaluation.test_month}
({evaluation.families_test:,} families, {evaluation.escalations_test:,} escalations). Features: the
registry's indicators (0/1), nothing else: no ethnicity, sex or deprivation is used.

## Performance on the test month (list size {evaluation.list_size}: the top 5% of families)

{table(evaluation.comparison)}

{' '.join(evaluation.notes) or 'The scorecard model beats both simpler rankings on PR AUC out of time.'}

## Scorecard (logistic regression coefficients as points, largest = 10)

{table(evaluation.scorecard)}

## Calibration (sigmoid, 3-fold, on the training months)

{table(evaluation.calibration)}

## Fairness: selection and recall at the list size by group

{table(evaluation.fairness)}

{"Groups whose recall differs from their group's mean by more than 15 points: " + ", ".join(f"{g}={v}" for g, v in flagged.select("group", "value").iter_rows()) if flagged.height else "No group with 30+ families differs from its group's mean recall by more than 15 points."}

## Limits

Synthetic data: the figures show the method works end to end, not how it would perform on a
council's data. Escalation reflects services' decisions as well as need. Small groups give
unstable rates. Ethnicity and deprivation are not in the partner extracts, so fairness is shown for
locality, the youngest child's age band and sex (as partners record it), and household
adults; `benchmarks/fairness.py` reports deprivation and heritage on the synthetic county,
whose generator holds them.
"""
