"""The scorecard model: does a learned weighting of the indicators find the families who
go on to need statutory services better than the transparent score, or than counting
headline needs? Measured so that it cannot flatter itself.

The outcome is observed as a council would, in its own `open_cases`: a child of the family
opened to child in need, child protection or looked-after services within 12 months after
a reference month, among families with no such case open then. Families and indicators are
rebuilt as they stood at earlier months with the same functions a monthly run uses, from the
same records (each matched to the council's gazetteer as the monthly run matched it).

How it is tested (rolling origin): the latest test month is the last whose 12 months have
passed; two more lie `STEP_MONTHS` and twice that before it. Each test month has its own
model, trained only on months whose outcome windows had closed by then (training month +
12 <= test month), so no escalation the test counts was known in training. A month is used
only when every source holds at least half of its indicators' look-back window (a
contract's retention deletes old rows: A&E keeps three years), and the card says how much
each month held. Every figure has a bootstrap interval (families resampled within each test
month), and the methods are judged where the meeting works: at the size of its list (the
families eligible under the programme rule that month), ties never broken in a method's
favour. The model earns its place only when it finds more escalations at that size than
both simpler rankings in 95% of replicates; otherwise the card says so and the switch
stays off.

The scorecard is a logistic regression whose points cannot be negative (no need lowers a
family's place); the unconstrained fit is shown beside it, with the indicator each
negative coefficient travels with. The model that orders this month's families, if a
council switches it on, is trained on the latest months whose outcomes are known.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import polars as pl

from features import compute_indicators
from features.compute import indicator_sources, sources_mentions
from features.calendar import shift_months, window_start
from features.registry import Registry
from linkage import FamilyRecords, form_families
from linkage.gazetteer import held_household_records
from models.metrics import Ranked, ranking_metrics, selected_share, wilson
from models.score import score_families
from rules import STATUTORY_SERVICES, is_adult, is_child
from warehouse import linked_rows, register

if TYPE_CHECKING:
    from sklearn.calibration import CalibratedClassifierCV

#: The warehouse table of this month's model probabilities, read when a council orders lists by the model.
MODEL_SCORES = "family_model_scores"
#: How long after a reference month an escalation counts.
OUTCOME_MONTHS = 12
#: Test months (rolling origin), and the most training months each test month's model learns from.
TEST_MONTHS = 3
TRAINING_MONTHS = 3
#: Months between test months, and between one test month's training months.
STEP_MONTHS = 2
#: A month is used only when every source holds at least this share of its look-back window.
MIN_WINDOW_HELD = 0.5
#: Bootstrap replicates behind every interval.
REPLICATES = 200
#: The rankings compared, in the card's order.
METHODS = ("scorecard model", "transparent score", "headline needs met")
METRICS = ("roc_auc", "pr_auc", "precision_at_list_size", "recall_at_list_size")
#: Groups reported in the fairness tables (the partner extracts hold no ethnicity or deprivation).
GROUPS = ("locality", "youngest_child_age_band", "youngest_child_sex", "household")


@dataclass(frozen=True)
class History:
    """What every month's snapshot reads alike, read once: the linked records families form from
    (held in DuckDB: `close`, or leave a `with` block, to let them go), the council's statutory
    cases, the sex each person's records mostly state, and the localities."""

    linked: FamilyRecords
    cases: pl.DataFrame  # person_id, open_date, close_date
    sex: pl.DataFrame  # person_id, sex
    localities: pl.DataFrame  # postcode, locality

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> History:
        # the outcome, from the council's own case records, linked to persons like any source
        cases = con.sql(f"{linked_rows('open_cases', 'pl.person_id, r.open_date, r.close_date')} WHERE r.service IN {STATUTORY_SERVICES}").pl()
        localities = con.sql("SELECT postcode, locality FROM raw_postcode_localities").pl()
        # prepared once for the months' family formation, not once a month
        linked = held_household_records(con)
        held = linked.connect()
        try:
            # sex as the partners state it, the most frequent across a person's mentions: read off the
            # linked records just held (every mention with its person), not joined again in the
            # warehouse (0.4 rather than 0.9 s at 1.2M residents)
            sex = held.sql(f"""SELECT person_id, first(sex ORDER BY n DESC, sex) AS sex
                               FROM (SELECT person_id, sex, count(*) AS n FROM {linked.table} WHERE sex IN ('M', 'F') GROUP BY ALL)
                               GROUP BY person_id ORDER BY person_id""").pl().with_columns(linked.person_ids(pl.col("person_id")).alias("person_id"))
        except BaseException:
            linked.close()
            raise
        finally:
            held.close()
        return cls(linked, cases, sex, localities)

    def close(self) -> None:
        self.linked.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def snapshot(
    con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, history: History | None = None, linked: str | None = None
) -> pl.DataFrame:
    """One row per family as it stood at `reference`: indicators (0/1 columns), the transparent
    score, headline outcomes met, locality, and the escalation outcome in the next 12 months.
    Families are formed as of `reference`; indicators are computed over the warehouse's own
    tables with those families' members (no copy of the partners' rows). `linked`: the
    mentions every month's indicators start from (`features.compute.sources_mentions`)."""
    if history is None:
        with History.read(con) as history:
            return snapshot(con, registry, reference, history, linked)
    families = form_families(history.linked, reference)
    register(con, "snapshot_members", families.members)
    try:
        hits = compute_indicators(con, registry, reference, members="snapshot_members", linked=linked, with_evidence=False)
    finally:
        con.unregister("snapshot_members")
    scores = score_families(registry, hits.person_indicators, hits.family_indicators, families.families, families.members, explained=False).scores
    wide = hits.family_indicators.with_columns(pl.lit(1).alias("hit")).pivot(on="indicator_id", index="family_ref", values="hit", aggregate_function="max")
    frame = scores.select("family_ref", "score", "needs_met", "eligible").join(wide, on="family_ref", how="left")
    for indicator in registry.indicators:
        if indicator.id not in frame.columns:
            frame = frame.with_columns(pl.lit(0).alias(indicator.id))
    frame = frame.with_columns([pl.col(i.id).fill_null(0).cast(pl.Int8) for i in registry.indicators])
    members = families.members.select("person_id", "family_ref", "age")
    children = members.filter(is_child(pl.col("age")))
    cases = history.cases.join(children, on="person_id")
    horizon = shift_months(reference, 12)
    already = cases.filter((pl.col("open_date") <= reference) & (pl.col("close_date").is_null() | (pl.col("close_date") > reference)))["family_ref"].unique()
    escalated = cases.filter((pl.col("open_date") > reference) & (pl.col("open_date") <= horizon))["family_ref"].unique()
    household_postcode = families.members.select("family_ref", pl.col("household_postcode").alias("postcode"))
    locality = household_postcode.join(history.localities, on="postcode", how="left").group_by("family_ref").agg(pl.col("locality").drop_nulls().first())
    frame = frame.filter(~pl.col("family_ref").is_in(already.implode())).with_columns(
        pl.col("family_ref").is_in(escalated.implode()).cast(pl.Int8).alias("escalated"), pl.lit(reference).alias("reference")
    )
    youngest = (
        members.filter(is_child(pl.col("age"))).join(history.sex, on="person_id", how="left").sort(["family_ref", "age", "person_id"])
        .group_by("family_ref", maintain_order=True).agg(pl.col("age").first().alias("youngest_child_age"), pl.col("sex").first().alias("youngest_child_sex"))
    )
    adults = members.filter(is_adult(pl.col("age"))).group_by("family_ref").len().rename({"len": "adults"})
    return frame.join(locality, on="family_ref", how="left").join(youngest, on="family_ref", how="left").join(adults, on="family_ref", how="left")


class NotEnoughOutcomes(ValueError):
    """The history holds too few escalations, or too few usable months, to train or test a model honestly."""


@dataclass(frozen=True)
class Origin:
    """One test month and the months its model may learn from."""

    test_month: dt.date
    train_months: tuple[dt.date, ...]


def evaluation_plan(reference: dt.date, usable: set[dt.date] | None = None) -> list[Origin]:
    """The rolling-origin plan: test months back from the latest whose outcomes are known, each
    trained only on months whose outcome windows closed by its test month. `usable`: the months
    the history can rebuild (all, when None)."""
    def ok(month: dt.date) -> bool:
        return usable is None or month in usable

    latest = shift_months(reference, -OUTCOME_MONTHS)
    origins = []
    for i in range(TEST_MONTHS):
        test = shift_months(latest, -i * STEP_MONTHS)
        train = tuple(
            m for m in (shift_months(test, -OUTCOME_MONTHS - j * STEP_MONTHS) for j in range(TRAINING_MONTHS)) if ok(m)
        )
        if ok(test) and train:
            origins.append(Origin(test, tuple(sorted(train))))
    return origins


def source_first_dates(con: duckdb.DuckDBPyConnection, registry: Registry) -> dict[str, dt.date]:
    """The first dated row the warehouse holds of each source the indicators or the outcome read."""
    sources = sorted({i.source for i in registry.indicators if i.source} | {"open_cases"})
    rows = con.execute(
        "SELECT source, min(event_date) FROM person_records WHERE source IN (SELECT unnest(?)) GROUP BY source", [sources]
    ).fetchall()
    return {source: first for source, first in rows if first is not None}


def window_held(first: dict[str, dt.date], registry: Registry, month: dt.date) -> dict[str, float]:
    """Per source, the share of its longest look-back window, ending with `month`, that the
    warehouse holds rows for."""
    windows: dict[str, int] = {}
    for indicator in registry.indicators:
        if indicator.source:
            windows[indicator.source] = max(windows.get(indicator.source, 0), indicator.window_months)
    held = {}
    for source, months in windows.items():
        start = window_start(month, months)
        since = first.get(source)
        if since is None or since > month:
            held[source] = 0.0
        else:
            missing = max(0, (since.year - start.year) * 12 + since.month - start.month)
            held[source] = round(max(0.0, 1 - missing / months), 3)
    return held


#: The fewest escalations (and non-escalations) a model is trained on: fewer leave a fold of the
#: calibration's three without one, and say nothing a meeting could use.
MIN_ESCALATIONS = 10


def _trainable(y: np.ndarray) -> bool:
    return MIN_ESCALATIONS <= y.sum() <= len(y) - MIN_ESCALATIONS


def _calibrated(x: np.ndarray, y: np.ndarray) -> CalibratedClassifierCV:
    from sklearn.calibration import CalibratedClassifierCV

    from models.nonnegative_logistic import NonNegativeLogistic

    # sigmoid on three folds: the folds follow row order, so callers sort, and a rerun gives the same model
    return CalibratedClassifierCV(NonNegativeLogistic(), method="sigmoid", cv=3).fit(x, y)


@dataclass
class Evaluation:
    origins: list[Origin]
    per_test_month: pl.DataFrame  # test_month, training months, families, escalations, list_size, method, metrics
    comparison: pl.DataFrame  # method, each metric with its interval (mean over test months)
    differences: pl.DataFrame  # the model against each simpler ranking at the list size, with intervals
    scorecard: pl.DataFrame  # indicator, points, coefficient, unconstrained coefficient, found with
    calibration: pl.DataFrame  # bin, families, predicted, observed and its interval
    by_group: pl.DataFrame  # group, value, families, escalations, per method selected share and recall with intervals
    calibration_by_group: pl.DataFrame  # group, value, families, predicted, observed and its interval
    window_held: pl.DataFrame  # month, source, share of its look-back window held (only months short of whole)
    production_months: tuple[dt.date, ...]
    replicates: int
    notes: list[str] = field(default_factory=list)
    model: CalibratedClassifierCV | None = None  # trained on production_months, to order this month's families when switched on
    features: list[str] = field(default_factory=list)
    earned_its_place: bool = False
    test_selection: pl.DataFrame | None = None  # reference, family_ref, selected (the model's chance of listing), escalated

    @property
    def test_month(self) -> dt.date:
        return self.origins[0].test_month

    @property
    def train_months(self) -> list[dt.date]:
        return sorted({m for o in self.origins for m in o.train_months})

    def predict(self, family_indicators: pl.DataFrame, families: pl.Series) -> pl.DataFrame:
        """family_ref, model_probability for `families`, from this month's family_indicators."""
        return predict(self.model, self.features, family_indicators, families)


def predict(model: CalibratedClassifierCV, features: list[str], family_indicators: pl.DataFrame, families: pl.Series) -> pl.DataFrame:
    """family_ref, model_probability for `families`, from this month's family_indicators."""
    hits = family_indicators.select("family_ref", "indicator_id").unique().with_columns(pl.lit(1, dtype=pl.Int8).alias("hit"))
    wide = pl.DataFrame({"family_ref": families}).join(
        hits.pivot(on="indicator_id", index="family_ref", values="hit") if hits.height else pl.DataFrame(schema={"family_ref": pl.String}),
        on="family_ref", how="left",
    )
    for feature in features:
        if feature not in wide.columns:
            wide = wide.with_columns(pl.lit(0, dtype=pl.Int8).alias(feature))
    x = wide.select([pl.col(f).fill_null(0) for f in features]).to_numpy()
    return pl.DataFrame({"family_ref": wide["family_ref"], "model_probability": model.predict_proba(x)[:, 1].round(6)})


def evaluation_anchor(reference: dt.date) -> dt.date:
    """The quarter's end the evaluation is made as of: the latest March, June, September or
    December ending on or before `reference`. The plan moves once a quarter, so the two monthly
    runs between reuse the last evaluation (`evaluation_key`) instead of rebuilding six months."""
    return shift_months(reference, -(reference.month % 3))


#: Bumped whenever the evaluation's method changes, so a stored evaluation is not reused across it.
METHOD_VERSION = "2026-12-rolling-origin-1"


def evaluation_key(reference: dt.date, registry: Registry, programme: str) -> str:
    """What an evaluation depends on besides the data: its quarter, the registry, the programme,
    the method. A run whose key matches the stored evaluation's reuses it unless asked to retrain."""
    import hashlib

    registry_sha = hashlib.sha256(registry.path.read_bytes()).hexdigest() if registry.path else "packaged"
    return hashlib.sha256(f"{evaluation_anchor(reference)}|{registry_sha}|{programme}|{METHOD_VERSION}".encode()).hexdigest()[:32]


def evaluate(con: duckdb.DuckDBPyConnection, registry: Registry, reference: dt.date, replicates: int = REPLICATES) -> Evaluation:
    """Rebuild the months of the rolling-origin plan (as of the quarter's end, `evaluation_anchor`)
    from the warehouse and evaluate on them."""
    reference = evaluation_anchor(reference)
    first = source_first_dates(con, registry)
    candidates = {shift_months(reference, -m) for m in range(OUTCOME_MONTHS, OUTCOME_MONTHS * 4)}
    held = {m: window_held(first, registry, m) for m in candidates}
    usable = {m for m, shares in held.items() if shares and min(shares.values()) >= MIN_WINDOW_HELD}
    origins = evaluation_plan(reference, usable)
    if not origins:
        raise NotEnoughOutcomes(
            f"no test month has a usable training month {OUTCOME_MONTHS} months before it: every source must hold "
            f"{MIN_WINDOW_HELD:.0%} of its look-back window, and the history is too short"
        )
    months = sorted({o.test_month for o in origins} | {m for o in origins for m in o.train_months})
    with History.read(con) as history, sources_mentions(con, indicator_sources(registry)) as linked:
        snapshots = {m: snapshot(con, registry, m, history, linked) for m in months}
    shortfall = pl.DataFrame(
        [{"month": m, "source": s, "share_held": v} for m in months for s, v in sorted(held[m].items()) if v < 1],
        schema={"month": pl.Date, "source": pl.String, "share_held": pl.Float64},
    )
    return evaluate_snapshots(snapshots, origins, [i.id for i in registry.indicators], replicates, shortfall)


def _age_band(age: pl.Expr) -> pl.Expr:
    return pl.when(age <= 4).then(pl.lit("0-4")).when(age <= 10).then(pl.lit("5-10")).when(age.is_not_null()).then(pl.lit("11-17")).otherwise(None)


def evaluate_snapshots(
    snapshots: dict[dt.date, pl.DataFrame],
    origins: list[Origin],
    features: list[str],
    replicates: int = REPLICATES,
    window_shortfall: pl.DataFrame | None = None,
    seed: int = 0,
) -> Evaluation:
    """The evaluation itself, on families as they stood at each month (`snapshot`'s columns):
    plain data in, figures out, so a test can feed it a county whose signal it knows."""
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(seed)
    notes: list[str] = []
    per_month_rows, replicate_metrics, tested = [], [], []
    kept_origins = []
    for origin in origins:
        train = pl.concat([snapshots[m] for m in origin.train_months], how="diagonal_relaxed").sort("reference", "family_ref")
        test = snapshots[origin.test_month].sort("family_ref")
        y_train = train["escalated"].to_numpy()
        if not _trainable(y_train) or test["escalated"].sum() == 0:
            notes.append(f"Test month {_month(origin.test_month)} left out: {int(y_train.sum())} escalations to train on, {int(test['escalated'].sum())} to test on.")
            continue
        kept_origins.append(origin)
        model = _calibrated(train.select(features).to_numpy(), y_train)
        p = model.predict_proba(test.select(features).to_numpy())[:, 1]
        y = test["escalated"].to_numpy().astype(float)
        eligible = test["eligible"].fill_null(False).to_numpy().astype(float)
        rankings = {"scorecard model": Ranked.of(p), "transparent score": Ranked.of(test["score"].to_numpy()), "headline needs met": Ranked.of(test["needs_met"].to_numpy())}

        def list_size(weights: np.ndarray, eligible: np.ndarray = eligible) -> float:
            # the meeting's list: every family eligible under the programme rule (5% of families if none is)
            size = float((weights * eligible).sum())
            return size if size else 0.05 * float(weights.sum())

        ones = np.ones(len(y))
        k = list_size(ones)
        for method, ranked in rankings.items():
            roc, pr, precision, recall = ranking_metrics(ranked, y, ones, k)
            per_month_rows.append({
                "test_month": origin.test_month, "trained_on": ", ".join(_month(m) for m in origin.train_months),
                "families": len(y), "escalations": int(y.sum()), "list_size": int(round(k)), "method": method,
                "roc_auc": roc, "pr_auc": pr, "precision_at_list_size": precision, "recall_at_list_size": recall,
                "brier": float(brier_score_loss(y, p)) if method == "scorecard model" else None,
            })
        # families alike in every ranking's value, in escalating and in eligibility count alike in
        # every metric: a replicate's draws are counted once per such group, not once per family and
        # ranking (the counts are whole numbers, so the sums, and the figures, are the same)
        alike = np.column_stack([*(rankings[m].value_index for m in METHODS), y, eligible]).astype(np.int64)
        _, first, group = np.unique(alike, axis=0, return_index=True, return_inverse=True)
        group = group.ravel()
        grouped = {m: Ranked(rankings[m].value_index[first], rankings[m].values) for m in METHODS}
        draws = np.empty((replicates, len(METHODS), len(METRICS)))
        for b in range(replicates):
            weights = np.bincount(group[rng.integers(0, len(y), len(y))], minlength=len(first)).astype(float)
            size = list_size(weights, eligible[first])
            for j, method in enumerate(METHODS):
                draws[b, j] = ranking_metrics(grouped[method], y[first], weights, size)
        replicate_metrics.append(draws)
        tested.append(test.with_columns(
            pl.Series("model_probability", p),
            pl.Series("selected_model", selected_share(rankings["scorecard model"], k)),
            pl.Series("selected_score", selected_share(rankings["transparent score"], k)),
        ))
    if not kept_origins:
        raise NotEnoughOutcomes("too few escalations in every test month to train and test on: " + " ".join(notes))

    per_month = pl.DataFrame(per_month_rows).with_columns(pl.col(m).round(4) for m in (*METRICS, "brier"))
    draws = np.nanmean(np.stack(replicate_metrics), axis=0)  # replicate x method x metric, the mean over test months
    low, high = np.nanpercentile(draws, 2.5, axis=0), np.nanpercentile(draws, 97.5, axis=0)
    point = per_month.group_by("method").agg(pl.col(m).mean() for m in METRICS)
    comparison = pl.DataFrame([
        {"method": method, **{
            f: value for i, metric in enumerate(METRICS) for f, value in (
                (metric, round(float(point.filter(pl.col("method") == method)[metric][0]), 4)),
                (f"{metric}_low", round(float(low[j, i]), 4)), (f"{metric}_high", round(float(high[j, i]), 4)),
            )
        }} for j, method in enumerate(METHODS)
    ])
    differences = pl.DataFrame([
        {
            "versus": METHODS[j], "metric": METRICS[i],
            "difference": round(float(comparison[METRICS[i]][0] - comparison[METRICS[i]][j]), 4),
            "low": round(float(np.nanpercentile(draws[:, 0, i] - draws[:, j, i], 2.5)), 4),
            "high": round(float(np.nanpercentile(draws[:, 0, i] - draws[:, j, i], 97.5)), 4),
        }
        for j in (1, 2) for i in (3, 1)
    ])
    at_list = differences.filter(pl.col("metric") == "recall_at_list_size")
    earned = bool((at_list["low"] > 0).all())
    if not earned:
        behind = at_list.filter(pl.col("low") <= 0)["versus"].to_list()
        notes.append(
            "The scorecard model has not earned a place in ordering lists: at the meetings' list size it does not find "
            f"more escalations than the {' or the '.join(behind)} in 95% of bootstrap replicates."
        )

    pooled = pl.concat(tested, how="diagonal_relaxed").with_columns(
        _age_band(pl.col("youngest_child_age")).alias("youngest_child_age_band"),
        pl.when(pl.col("adults") == 1).then(pl.lit("one adult")).otherwise(pl.lit("two or more adults")).alias("household"),
    )
    by_group, calibration_by_group = _by_group(pooled)
    calibration = _calibration(pooled.with_columns((pl.col("model_probability") * 10).cast(pl.Int32).clip(0, 9).alias("value")))

    production_months = tuple(sorted(o.test_month for o in kept_origins))
    train = pl.concat([snapshots[m] for m in production_months], how="diagonal_relaxed").sort("reference", "family_ref")
    x, y_all = train.select(features).to_numpy(), train["escalated"].to_numpy()
    # a small county's test months may hold too few escalations to train the model that would order
    # this month's families: the evaluation stands, and the lists keep the transparent score's order
    production = _calibrated(x, y_all) if _trainable(y_all) else None
    if production is None:
        notes.append(f"No model trained to order this month's lists: {int(y_all.sum())} escalations in the test months, fewer than {MIN_ESCALATIONS}.")
    scorecard = _scorecard(features, x, y_all)
    return Evaluation(
        origins=kept_origins, per_test_month=per_month, comparison=comparison, differences=differences, scorecard=scorecard,
        calibration=calibration, by_group=by_group, calibration_by_group=calibration_by_group,
        window_held=window_shortfall if window_shortfall is not None else pl.DataFrame(),
        production_months=production_months, replicates=replicates, notes=notes, model=production, features=features,
        earned_its_place=earned,
        test_selection=pooled.select("reference", "family_ref", pl.col("selected_model").alias("selected"), "escalated"),
    )


def _with_interval(frame: pl.DataFrame, successes: str, trials: str, name: str) -> pl.DataFrame:
    low, high = wilson(frame[successes].to_numpy(), frame[trials].to_numpy())
    return frame.with_columns(
        (pl.col(successes) / pl.col(trials)).round(4).alias(name), pl.Series(f"{name}_low", low).round(4), pl.Series(f"{name}_high", high).round(4)
    )


def _calibration(frame: pl.DataFrame) -> pl.DataFrame:
    table = frame.group_by("value").agg(
        pl.len().alias("families"), pl.col("model_probability").mean().round(4).alias("predicted"), pl.col("escalated").sum().alias("escalations")
    )
    return _with_interval(table, "escalations", "families", "observed").sort("value")


def _by_group(pooled: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    selection, calibration = [], []
    for group in GROUPS:
        frame = pooled.with_columns(pl.col(group).cast(pl.String).fill_null("unknown").alias("value"))
        table = frame.group_by("value").agg(
            pl.len().alias("families"), pl.col("escalated").sum().alias("escalations"),
            *[pl.col(f"selected_{m}").sum().alias(f"selected_{m}") for m in ("score", "model")],
            *[(pl.col(f"selected_{m}") * pl.col("escalated")).sum().alias(f"found_{m}") for m in ("score", "model")],
        )
        for m in ("score", "model"):
            table = _with_interval(table, f"selected_{m}", "families", f"{m}_selected_share")
            table = _with_interval(table, f"found_{m}", "escalations", f"{m}_recall")
        selection.append(table.with_columns(pl.lit(group).alias("group")))
        calibration.append(_calibration(frame).with_columns(pl.lit(group).alias("group")))
    order = ["group", "value", "families", "escalations"]
    by_group = pl.concat(selection).select(order + [c for c in selection[0].columns if c.endswith(("share", "recall", "_low", "_high"))]).sort("group", "value")
    return by_group, pl.concat(calibration).select("group", "value", "families", "predicted", "observed", "observed_low", "observed_high").sort("group", "value")


def _scorecard(features: list[str], x: np.ndarray, y: np.ndarray) -> pl.DataFrame:
    """Points from the non-negative fit; beside them the unconstrained fit, and for each
    indicator it makes negative, the indicator that most often comes with it (the weight it
    carries instead: indicators that travel together share their evidence)."""
    from sklearn.linear_model import LogisticRegression

    from models.nonnegative_logistic import NonNegativeLogistic, weighted_patterns

    constrained = NonNegativeLogistic().fit(x, y).coef_[0]
    # the unconstrained fit on the same weighted patterns: scikit-learn's penalised likelihood with
    # sample weights is the sum over the families each row stands for
    patterns, families, escalated = weighted_patterns(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    stacked = np.vstack([patterns, patterns])
    outcome = np.concatenate([np.ones(len(patterns)), np.zeros(len(patterns))])
    weight = np.concatenate([escalated, families - escalated])
    kept = weight > 0
    free = LogisticRegression(C=1.0, max_iter=5000, tol=1e-8).fit(stacked[kept], outcome[kept], sample_weight=weight[kept]).coef_[0]
    points = np.round(constrained / max(constrained.max(), 1e-9) * 10).astype(int)
    found_with = []
    for i, name in enumerate(features):
        carriers = x[:, i] == 1
        if free[i] >= 0 or not carriers.any():
            found_with.append(None)
            continue
        shares = x[carriers].mean(axis=0)
        shares[i] = -1
        j = int(np.argmax(shares))
        found_with.append(f"{features[j]} ({shares[j]:.0%} of its families)")
    return pl.DataFrame({
        "indicator": features, "points": points, "coefficient": np.round(constrained, 4),
        "unconstrained_coefficient": np.round(free, 4), "most_often_with": found_with,
    }, schema_overrides={"most_often_with": pl.String}).sort(["points", "coefficient"], descending=True)


def _month(day: dt.date) -> str:
    """A reference month as the card names it (YYYY-MM): a month, never a day that could be someone's birthday."""
    return day.strftime("%Y-%m")


def _table(frame: pl.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |\n| " + " | ".join("---" for _ in frame.columns) + " |\n"
    return head + "\n".join("| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in frame.iter_rows())


def _with_ranges(frame: pl.DataFrame, names: list[str], labels: dict[str, str] | None = None) -> pl.DataFrame:
    """Each `name` with its `name_low` and `name_high` as one column: 0.123 (0.101-0.145)."""
    labels = labels or {}
    return frame.with_columns(
        pl.format("{} ({}-{})", *(pl.col(c).fill_nan(None).round(3) for c in (n, f"{n}_low", f"{n}_high"))).alias(labels.get(n, n)) for n in names
    ).drop([c for n in names for c in (f"{n}_low", f"{n}_high")] + [n for n in names if labels.get(n, n) != n])


def model_card(evaluation: Evaluation) -> str:
    """The model card in Markdown: use, outcome, how it is tested, performance at the list size
    with intervals, the scorecard, calibration, fairness by group, limits."""
    e = evaluation
    plan = pl.DataFrame([
        {"test month": _month(o.test_month), "trained on": ", ".join(_month(m) for m in o.train_months),
         "outcome windows of training close": _month(shift_months(max(o.train_months), OUTCOME_MONTHS))}
        for o in e.origins
    ]).join(
        e.per_test_month.filter(pl.col("method") == METHODS[0]).select(
            pl.col("test_month").dt.strftime("%Y-%m").alias("test month"), "families", "escalations", "list_size"
        ), on="test month",
    )
    metric_labels = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "precision_at_list_size": "precision at list size", "recall_at_list_size": "recall at list size"}
    comparison = _with_ranges(e.comparison, list(METRICS), metric_labels)
    differences = e.differences.with_columns(pl.col("metric").replace(metric_labels)).pipe(
        lambda f: f.with_columns(pl.format("{} ({} to {})", pl.col("difference"), pl.col("low"), pl.col("high")).alias("model minus it (95% interval)"))
    ).select("versus", "metric", "model minus it (95% interval)")
    per_month = e.per_test_month.select("test_month", "method", *METRICS, "brier")
    negative = e.scorecard.filter(pl.col("unconstrained_coefficient") < 0)
    explained = (
        "Fitted without the bound, these came out negative (a need that would lower a family's place): "
        + "; ".join(f"`{r['indicator']}` {r['unconstrained_coefficient']}, most often found with `{r['most_often_with']}`" for r in negative.iter_rows(named=True))
        + ". A negative coefficient says that, among families with the same other indicators, those with this one went on "
        "to statutory services less often in these months: either it travels with an indicator that carries the weight "
        "for both (the share shown), or the services already around such families act short of a statutory case. Neither "
        "is a reason to place a family lower, so the points are bounded at zero: such an indicator adds nothing beyond "
        "what the family's other indicators say."
        if negative.height else "Fitted without the bound, no indicator comes out negative."
    )
    overall = float(e.comparison.filter(pl.col("method") == "transparent score")["recall_at_list_size"][0])
    gaps = e.by_group.filter(
        (pl.col("families") >= 30) & (pl.col("escalations") > 0) & ((pl.col("score_recall_high") < overall) | (pl.col("score_recall_low") > overall))
    )
    selection = _with_ranges(e.by_group, ["score_selected_share", "score_recall", "model_selected_share", "model_recall"], {
        "score_selected_share": "score: share listed", "score_recall": "score: recall", "model_selected_share": "model: share listed", "model_recall": "model: recall",
    })
    shortfall = (
        "Months rebuilt with part of a source's look-back window missing (the rows were never received, or the contract's "
        "retention has deleted them), by share of the window held:\n\n" + _table(e.window_held.with_columns(pl.col("month").dt.strftime("%Y-%m")))
        if e.window_held.height else "Every month used holds every source's whole look-back window."
    )
    verdict = (
        "**Verdict: the scorecard model earns its place.** At the meetings' list size it finds more escalations than both simpler "
        "rankings in 95% of bootstrap replicates. A council may switch it on to order discussion within its lists."
        if e.earned_its_place and e.model is not None
        else f"**Verdict: the scorecard model does not earn its place; leave the switch off.** {' '.join(n for n in e.notes if 'earned' in n or n.startswith('No model'))}"
    )
    left_out = [n for n in e.notes if n.startswith("Test month")]
    calibration = _table(_with_ranges(e.calibration.rename({"value": "probability tenth"}), ["observed"]))
    return f"""# Model card: earlyhelp escalation scorecard

**Intended use.** To order the discussion of families a locality meeting already has on its
list because they meet the programme rule. It never decides: it cannot add or remove a
family. It orders nothing unless the council switches it on (`order_by: model` in the
locality lists' run configuration); it is off by default, and should stay off unless the
evaluation below shows it earns its place.

**What it predicts.** A child of the family opened to child in need, child protection or
looked-after services within {OUTCOME_MONTHS} months after the reference month, among families with no
such case open then; observed in the council's own `open_cases`. Features: the registry's
indicators (0/1), nothing else: no ethnicity, sex or deprivation is used.

**How it is tested.** As of the quarter ending {_month(shift_months(e.test_month, OUTCOME_MONTHS))} (evaluated again each
quarter, or when asked: `retrain`); rolling origin: {len(e.origins)} test months, each with its own model trained only
on months whose {OUTCOME_MONTHS}-month outcome windows had closed by the test month, so no escalation a
test counts was known in training. Each method is judged at the size of the list the meeting
used that month (every family eligible under the programme rule), ties broken by chance, never
in a method's favour. Intervals: 95%, from {e.replicates} bootstrap replicates of each test month's families.
{' '.join(left_out)}

{_table(plan)}

{shortfall}

## Performance at the meetings' list size (mean over the test months, 95% interval)

{_table(comparison)}

{_table(differences)}

{verdict}

By test month:

{_table(per_month.with_columns(pl.col("test_month").dt.strftime("%Y-%m")))}

## Scorecard (points from a fit bounded at zero, largest = 10)

The model that would order this month's lists is trained on {', '.join(_month(m) for m in e.production_months)}, the latest
months whose outcomes are known.

{_table(e.scorecard)}

{explained}

## Calibration (sigmoid, 3-fold within training; observed on the test months)

{calibration}

## Fairness: who is listed and who is found, by group (all test months)

The list the meeting sees is made by the programme rule and ordered by the transparent score;
the model's columns show what it would list at the same size. Recall: the share of the group's
escalations the list holds.

{_table(selection)}

{"Groups of 30+ families whose recall under the transparent score lies wholly above or below its overall " + f"{overall:.3f}: " + ", ".join(f"{g}={v}" for g, v in gaps.select("group", "value").iter_rows()) if gaps.height else f"No group of 30+ families has a recall interval under the transparent score wholly above or below its overall {overall:.3f}."}

Calibration by group (the model's predicted rate against the observed):

{_table(_with_ranges(e.calibration_by_group, ["observed"]))}

## Limits

Past families are formed with today's linkage and today's addresses, not as the council knew
them then: a family linked better today than it was then looks more complete in the past than
any meeting saw it. Synthetic data: the figures show the method works end to end, not how it
would perform on a council's data. Escalation reflects services' decisions as well as need.
Small groups give wide intervals; read them before the rates. Ethnicity and deprivation are
not in the partner extracts, so fairness is shown for locality, the youngest child's age band
and sex (as partners record it), and household adults; `benchmarks/fairness.py` reports
deprivation and heritage on the synthetic county, whose generator holds them.
"""


def __getattr__(name: str):
    # an evaluation stored before the estimator moved to its own module pickled it as
    # models.scorecard.NonNegativeLogistic; a quarter's stored evaluation must still load
    if name == "NonNegativeLogistic":
        from models.nonnegative_logistic import NonNegativeLogistic

        return NonNegativeLogistic
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
