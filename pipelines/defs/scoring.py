"""Dagster assets for indicators and the transparent family score, with their checks."""

import datetime as dt
import json
import pickle

import dagster as dg
import polars as pl

from features import compute_indicators
from features.calendar import previous_month
from reports import markdown_page
from models.score import ScoreSettings, score_families
from models.scorecard import MODEL_SCORES, NotEnoughOutcomes, evaluate, evaluation_key, model_card, predict
from pipelines.apart import apart
from pipelines.partitions import PARTITIONS
from pipelines.resources import EarlyhelpSettings
from warehouse import (
    read_table,
    replace_tables,
    write_parquet_atomically,
    write_text_atomically,
)

SCORING = "scoring"
FAMILY_SCORES_FILE = "family_scores.parquet"
BREAKDOWN_SUMS = "breakdown_sums_to_score"
PREVALENCE = "indicator_prevalence_plausible"
SCORE_SHIFT = "score_distribution_shift"
#: This month's families scored by the scorecard model (used only when a list is switched to it).
#: An indicator hitting more than this share of people is more likely a broken rule than a county.
MAX_PREVALENCE = 0.25


@dg.asset(partitions_def=PARTITIONS, group_name=SCORING, kinds={"duckdb", "polars"}, deps=["family_members"])
@apart
def indicators(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """Every indicator of the registry for every person and family as of the reference month,
    with its evidence: the source rows (source, file, row), dates and values behind each hit."""
    registry = settings.registry()
    with settings.warehouse() as con:
        result = compute_indicators(con, registry, settings.reference_date)
        replace_tables(
            con,
            {
                "person_indicators": result.person_indicators,
                "indicator_evidence": result.evidence,
                "family_indicators": result.family_indicators,
            },
        )
    counts = dict(result.family_indicators.group_by("indicator_id").len().sort("indicator_id").iter_rows())
    context.log.info(f"indicators: {result.person_indicators.height:,} person hits, {result.evidence.height:,} evidence rows")
    return dg.MaterializeResult(
        metadata={
            "registry": str(registry.path),
            "person_hits": result.person_indicators.height,
            "evidence_rows": result.evidence.height,
            "families_by_indicator": dg.MetadataValue.json(counts),
        }
    )


@dg.asset(partitions_def=PARTITIONS, group_name=SCORING, kinds={"duckdb", "polars"}, deps=["indicators"])
@apart
def family_scores(context: dg.AssetExecutionContext, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """The transparent score of every family: points per indicator capped per source, the
    headline needs met, eligibility under the programme rule, a band, the top reasons in plain
    English, and a breakdown (`family_score_breakdown`) that sums exactly to each score.
    Exported as family_scores.parquet."""
    registry = settings.registry()
    with settings.warehouse() as con:
        history = read_table(con, "family_scores_history")
        result = score_families(
            registry,
            con.sql("SELECT * FROM person_indicators").pl(),
            con.sql("SELECT * FROM family_indicators").pl(),
            con.sql("SELECT * FROM families").pl(),
            # what scoring reads of each member: not their names, dates of birth and homes
            con.sql("SELECT person_id, age FROM family_members").pl(),
            ScoreSettings(programme=settings.council_programme),
        )
        scores = result.scores.with_columns(pl.lit(settings.reference_month).alias("month"))
        # each month's scores are kept (this month's replaced on a rerun), so a later month
        # can see whose needs are rising and whether the distribution moved
        this_month = scores.select("month", "family_ref", "score", "eligible")
        kept = history.filter(pl.col("month") != settings.reference_month) if history is not None else None
        replace_tables(
            con,
            {
                "family_scores": scores,
                "family_score_breakdown": result.breakdown,
                "family_scores_history": pl.concat([kept, this_month], how="vertical_relaxed") if kept is not None else this_month,
            },
        )
    write_parquet_atomically(scores, settings.output / FAMILY_SCORES_FILE)
    eligible = int(scores["eligible"].sum())
    context.log.info(f"family_scores: {scores.height:,} families, {eligible:,} eligible under {settings.council_programme}")
    bands = dict(scores.filter(pl.col("eligible")).group_by("band").len().iter_rows())
    return dg.MaterializeResult(
        metadata={
            "families": scores.height,
            "eligible": eligible,
            "programme": settings.council_programme,
            "eligible_by_band": dg.MetadataValue.json(bands),
            "mean_score": round(float(scores["score"].mean() or 0), 3),
            "family_scores": dg.MetadataValue.path(str(settings.output / FAMILY_SCORES_FILE)),
        }
    )


@dg.asset_check(asset=family_scores, name=BREAKDOWN_SUMS, blocking=True, description="Every family's breakdown sums exactly to its score.")
def breakdown_sums_to_score(settings: EarlyhelpSettings) -> dg.AssetCheckResult:
    with settings.warehouse(read_only=True) as con:
        wrong = con.execute(
            """SELECT count(*) FROM family_scores s LEFT JOIN (
                   SELECT family_ref, sum(points_awarded) AS total FROM family_score_breakdown GROUP BY family_ref
               ) b USING (family_ref) WHERE s.score <> coalesce(b.total, 0)"""
        ).fetchall()[0][0]
    return dg.AssetCheckResult(passed=wrong == 0, metadata={"families_not_summing": wrong})


@dg.asset_check(asset=indicators, name=PREVALENCE, description=f"Warns when an indicator hits more than {MAX_PREVALENCE:.0%} of the people it applies to, or none at all.")
def indicator_prevalence(settings: EarlyhelpSettings) -> dg.AssetCheckResult:
    registry = settings.registry()
    with settings.warehouse(read_only=True) as con:
        people = con.execute("SELECT count(*) FROM family_members").fetchall()[0][0]
        hits = dict(con.execute("SELECT indicator_id, count(DISTINCT person_id) FROM person_indicators GROUP BY 1").fetchall())
    shares = {i.id: round(hits.get(i.id, 0) / max(people, 1), 4) for i in registry.indicators if i.rule.person_level}
    odd = sorted(k for k, v in shares.items() if v > MAX_PREVALENCE or v == 0)
    return dg.AssetCheckResult(
        passed=not odd, severity=dg.AssetCheckSeverity.WARN, description=f"Implausible prevalence: {odd}" if odd else None,
        metadata={"share_of_people": dg.MetadataValue.json(shares)},
    )


@dg.asset_check(asset=family_scores, name=SCORE_SHIFT, description="Warns when the mean family score moves by more than a quarter since the previous month.")
def score_distribution_shift(settings: EarlyhelpSettings) -> dg.AssetCheckResult:
    with settings.warehouse(read_only=True) as con:
        now = con.execute("SELECT avg(score) FROM family_scores").fetchall()[0][0] or 0.0
        history = read_table(con, "family_scores_history")
    previous = history.filter(pl.col("month") == previous_month(settings.reference_month)) if history is not None else None
    if previous is None or previous.is_empty():
        return dg.AssetCheckResult(passed=True, metadata={"mean_score": now, "previous": "none"})
    before = float(previous["score"].mean() or 0.0)
    shift = abs(now - before) / before if before else 0.0
    return dg.AssetCheckResult(
        passed=shift <= 0.25, severity=dg.AssetCheckSeverity.WARN,
        metadata={"mean_score": round(now, 3), "previous_mean_score": round(before, 3), "relative_shift": round(shift, 3)},
    )


class ScorecardConfig(dg.Config):
    # evaluate in this run: though no list is ordered by the model, or again though this quarter's
    # evaluation is stored
    retrain: bool = False


#: The stored evaluation: its key, the card, the pickled model that would order lists, when it was made.
STORED_EVALUATION = "scorecard_evaluation"


#: Why a run left the model unevaluated, as its log and metadata say it.
NOT_ASKED = (
    "not evaluated: no list in this run is ordered by the model (locality_lists order_by=score, the default); "
    "`earlyhelp run --retrain-model` or `earlyhelp model` evaluates it and writes its card"
)


def lists_ordered_by_model(run_config: dict) -> bool:
    """Whether a run's lists are ordered by the scorecard model (`ListConfig.order_by`), read from
    the run's configuration: the model is evaluated for the runs that use it."""
    from pipelines.defs.lists import ListConfig

    given = ((run_config.get("ops") or {}).get("locality_lists") or {}).get("config") or {}
    return ListConfig(**given).order_by == "model"


@dg.asset(partitions_def=PARTITIONS, group_name=SCORING, kinds={"scikitlearn"}, deps=["family_scores"])
def scorecard_model(context: dg.AssetExecutionContext, config: ScorecardConfig, settings: EarlyhelpSettings) -> dg.MaterializeResult:
    """The scorecard model tested by rolling origin (training outcome windows closed before each
    test month) against the transparent score and the headline count at the meetings' list
    size, with bootstrap intervals, calibration and fairness by group: model_card.md and
    model_card.html in the output folder. Evaluated in a run whose lists it orders, or when
    asked (`retrain`), as of the quarter's end, and stored; the months between reuse the stored
    evaluation. It orders nothing unless a council switches it on, and never adds or removes a
    family: a run that neither orders by it nor asks leaves it unevaluated (at 1.2M residents the
    evaluation forms six months of families, a quarter of a run from nothing)."""
    return _scorecard_model(context, config=config, settings=settings, ordering=lists_ordered_by_model(context.run.run_config))


@apart
def _scorecard_model(context: dg.AssetExecutionContext, config: ScorecardConfig, settings: EarlyhelpSettings, ordering: bool) -> dg.MaterializeResult:
    registry = settings.registry()
    key = evaluation_key(settings.reference_date, registry, settings.council_programme)
    with settings.warehouse(read_only=True) as con:
        stored = read_table(con, STORED_EVALUATION)
    reused = stored is not None and stored.height == 1 and stored["key"][0] == key and not config.retrain
    if reused:
        kept = stored.row(0, named=True)
        context.log.info(f"scorecard_model: this quarter's evaluation (made {kept['evaluated_at']}) reused; set retrain to evaluate again")
    elif not (ordering or config.retrain):
        context.log.info(f"scorecard_model: {NOT_ASKED}")
        with settings.warehouse() as con:
            con.execute(f"DROP TABLE IF EXISTS {MODEL_SCORES}")  # no stale model to order a list by
        return dg.MaterializeResult(metadata={"trained": False, "evaluated": False, "reason": NOT_ASKED, "reused": False})
    else:
        try:
            with settings.warehouse(read_only=True) as con:
                evaluation = evaluate(con, registry, settings.reference_date)
            card = model_card(evaluation)
            trained = evaluation.model is not None
            kept = {
                "key": key, "evaluated_at": dt.datetime.now().replace(microsecond=0), "card": card,
                "model": pickle.dumps(evaluation.model) if trained else None, "features": json.dumps(evaluation.features),
                "earned_its_place": evaluation.earned_its_place and trained, "reason": None if trained else evaluation.notes[-1],
                "test_months": ", ".join(o.test_month.strftime("%Y-%m") for o in evaluation.origins),
                "trained_on": ", ".join(m.strftime("%Y-%m") for m in evaluation.production_months),
            }
        except NotEnoughOutcomes as exc:
            kept = {
                "key": key, "evaluated_at": dt.datetime.now().replace(microsecond=0), "card": None, "model": None, "features": "[]",
                "earned_its_place": False, "reason": str(exc), "test_months": "", "trained_on": "",
            }
        with settings.warehouse() as con:
            replace_tables(con, {STORED_EVALUATION: pl.DataFrame([kept], schema=EVALUATION_SCHEMA)})
    if kept["card"] is not None:
        write_text_atomically(kept["card"], settings.output / "model_card.md")
        write_text_atomically(markdown_page(kept["card"], "earlyhelp model card"), settings.output / "model_card.html")
    if kept["model"] is None:
        context.log.warning(f"scorecard_model: {kept['reason']}")
        with settings.warehouse() as con:
            con.execute(f"DROP TABLE IF EXISTS {MODEL_SCORES}")  # no stale month's model to order a list by
        return dg.MaterializeResult(metadata={"trained": False, "evaluated": True, "reason": kept["reason"], "reused": reused})
    with settings.warehouse() as con:
        current = con.sql("SELECT * FROM family_indicators").pl()
        families = con.sql("SELECT family_ref FROM family_scores").pl()["family_ref"]
        scores = predict(pickle.loads(kept["model"]), json.loads(kept["features"]), current, families)
        replace_tables(con, {MODEL_SCORES: scores.with_columns(pl.lit(kept["earned_its_place"]).alias("earned_its_place"))})
    return dg.MaterializeResult(
        metadata={
            "trained": True,
            "evaluated": True,
            "reused": reused,
            "evaluated_at": str(kept["evaluated_at"]),
            "earned_its_place": kept["earned_its_place"],
            "test_months": kept["test_months"],
            "trained_on": kept["trained_on"],
            "model_card": dg.MetadataValue.path(str(settings.output / "model_card.html")),
        }
    )


EVALUATION_SCHEMA = {
    "key": pl.String, "evaluated_at": pl.Datetime("us"), "card": pl.String, "model": pl.Binary, "features": pl.String,
    "earned_its_place": pl.Boolean, "reason": pl.String, "test_months": pl.String, "trained_on": pl.String,
}


SCORE_ASSETS = [indicators, family_scores, scorecard_model]
SCORE_CHECKS = [breakdown_sums_to_score, indicator_prevalence, score_distribution_shift]
