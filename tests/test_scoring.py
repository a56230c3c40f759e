"""Indicators and the transparent score, on a synthetic county run through Dagster."""

from __future__ import annotations

import datetime as dt
import random
import re
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from features.registry import DEFAULT_REGISTRY, RegistryError, load_registry
from pipelines.cli import run_pipeline
from tests.conftest import MONTH, assert_renders_as_document, run_from

REFERENCE = dt.date(2026, 9, 30)


@pytest.fixture(scope="module")
def scored(september, tmp_path_factory):
    """The village's run from nothing (the session's), in this module's own folder: its last test runs it again."""
    return run_from(september[1], tmp_path_factory.mktemp("scored") / "out")


def _raw_row(con, source: str, file: str, row: int) -> dict:
    cursor = con.execute(f'SELECT * FROM "raw_{source}" WHERE _file = ? AND _row = ?', [file, row])
    names = [d[0] for d in cursor.description]
    return dict(zip(names, cursor.fetchall()[0]))


def _window_start(months: int) -> dt.date:
    index = REFERENCE.year * 12 + REFERENCE.month - 1 - months + 1
    return dt.date(index // 12, index % 12 + 1, 1)


def test_scores_rederived_by_hand_from_raw_rows(scored):
    """Pick families at random; from each breakdown line's evidence rows, read straight from the
    partner's raw table, re-derive that the indicator holds and the points, then the score."""
    registry = load_registry()
    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    scores = con.sql("SELECT family_ref, score FROM family_scores WHERE score > 0").pl()
    breakdown = con.sql("SELECT * FROM family_score_breakdown").pl()
    evidence = con.sql("SELECT * FROM indicator_evidence").pl()
    ages = dict(con.execute("SELECT person_id, age FROM family_members").fetchall())
    caps = registry.source_caps
    picked = random.Random(4).sample(scores["family_ref"].to_list(), 12)
    for family in picked:
        lines = breakdown.filter(pl.col("family_ref") == family)
        by_source: dict[str, int] = {}
        expected_total = 0
        for line in lines.sort(["points", "latest", "indicator_id", "person_id"], descending=[True, True, False, False], nulls_last=True).iter_rows(named=True):
            indicator = registry.get(line["indicator_id"])
            if indicator.kind != "household":
                rows = evidence.filter((pl.col("indicator_id") == indicator.id) & (pl.col("person_id") == line["person_id"]))
                raw = [_raw_row(con, r["source"], r["file"], r["row"]) for r in rows.iter_rows(named=True)]
                assert raw, "every hit has source rows behind it"
                age = ages[line["person_id"]]
                if indicator.applies_to == "child":
                    assert age <= 17
                if indicator.kind == "attendance":
                    possible = sum(r["sessions_possible"] for r in raw)
                    absent = sum(r["authorised_absence"] + r["unauthorised_absence"] for r in raw)
                    assert 1 - absent / possible < indicator.threshold
                    assert len(raw) <= indicator.terms
                elif indicator.kind == "open_within":
                    assert any(r[indicator.start] <= REFERENCE and (r[indicator.end] is None or r[indicator.end] >= _window_start(indicator.window_months)) for r in raw)
                else:
                    dates = [r.get("incident_date") or r.get("arrival_date") or (r["incident_datetime"].date() if r.get("incident_datetime") else None) for r in raw]
                    if all(d is not None for d in dates):
                        assert all(_window_start(indicator.window_months) <= d <= REFERENCE for d in dates)
                    amount = sum(r[indicator.measure] for r in raw) if indicator.kind == "sum" else len(raw)
                    assert amount >= indicator.threshold
            source = indicator.source or registry.get(indicator.of).source
            room = caps.get(source, 10**6) - by_source.get(source, 0)
            awarded = max(0, min(indicator.points, room))
            by_source[source] = by_source.get(source, 0) + indicator.points
            assert line["points_awarded"] == awarded, (family, indicator.id)
            expected_total += awarded
        assert scores.filter(pl.col("family_ref") == family)["score"][0] == expected_total


def test_every_breakdown_sums_and_reasons_are_plain_english(scored):
    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    frame = pl.read_parquet(scored / "family_scores.parquet")
    assert {"family_ref", "score", "outcomes_met", "needs", "needs_met", "eligible", "band", "top_reasons"} <= set(frame.columns)
    eligible = frame.filter(pl.col("eligible"))
    assert eligible.height > 0
    assert (eligible["outcomes_met"] >= 3).all() and (eligible["dependent_children"] > 0).all()
    assert frame["needs"].equals(frame["outcomes"], check_names=False), "Supporting Families: the needs are its outcomes"
    reasons = eligible["top_reasons"].explode().drop_nulls().to_list()
    assert reasons and all(r[0].isupper() and "{" not in r for r in reasons)
    wrong = con.execute(
        "SELECT count(*) FROM family_scores s LEFT JOIN (SELECT family_ref, sum(points_awarded) t FROM family_score_breakdown GROUP BY 1) b USING (family_ref) WHERE s.score <> coalesce(b.t, 0)"
    ).fetchall()[0][0]
    assert wrong == 0


def test_scores_without_their_explanation_are_the_same_scores(scored):
    """The scorecard's earlier months are scored without sentences: every score, need and
    eligibility must be what the explained scoring gives, only the reasons left out."""
    from models.score import score_families

    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    tables = [con.sql(f"SELECT * FROM {t}").pl() for t in ("person_indicators", "family_indicators", "families", "family_members")]
    explained = score_families(load_registry(), *tables)
    plain = score_families(load_registry(), *tables, explained=False)
    assert explained.scores.filter(pl.col("eligible")).height > 0 and explained.scores["score"].n_unique() > 3
    assert plain.scores.equals(explained.scores.drop("top_reasons"))
    assert plain.breakdown["points_awarded"].sum() == explained.breakdown["points_awarded"].sum()


def test_a_council_changes_a_weight_and_a_threshold_without_code(village, scored, tmp_path):
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    for item in document["indicators"]:
        if item["id"] == "frequent_ae":
            item["threshold"] = 2  # two attendances, not three
        if item["id"] == "persistent_absence":
            item["points"] = 5
    document["source_caps"]["school_attendance"] = 20
    registry = tmp_path / "our_indicators.yaml"
    registry.write_text(yaml.safe_dump(document, sort_keys=False))
    out = tmp_path / "out"
    assert run_pipeline(village, MONTH, out, registry=registry).success
    before = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    after = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    count = "SELECT count(*) FROM person_indicators WHERE indicator_id = 'frequent_ae'"
    assert after.execute(count).fetchall()[0][0] > before.execute(count).fetchall()[0][0]
    points = "SELECT DISTINCT points FROM family_score_breakdown WHERE indicator_id = 'persistent_absence'"
    assert after.execute(points).fetchall() == [(5,)] and before.execute(points).fetchall() == [(2,)]


def test_programme_rule_is_selectable(village, tmp_path):
    out = tmp_path / "out"
    assert run_pipeline(village, MONTH, out, programme="troubled_families").success
    frame = pl.read_parquet(out / "family_scores.parquet")
    assert (frame["programme"] == "troubled_families").all()
    assert frame.filter(pl.col("eligible"))["problems_met"].min() >= 2
    assert frame["needs_met"].equals(frame["problems_met"].cast(pl.UInt32), check_names=False)


def test_registry_mistakes_are_named(tmp_path):
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    document["indicators"][0]["outcome"] = "being nice"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(RegistryError, match="persistent_absence.*outcome"):
        load_registry(path)
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    document["indicators"][2]["measure"] = "no_such_column"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(RegistryError, match="no column 'no_such_column'"):
        load_registry(Path(path))


def test_model_card_compares_the_model_with_the_transparent_score(tmp_path):
    import subprocess
    import sys

    from synthetic import generate_county

    # a small town: a village holds too few escalations to train on honestly
    landing, out = tmp_path / "town", tmp_path / "out"
    generate_county(people=8_000, seed=5, month=MONTH, out=landing)
    # asked: no list is ordered by the model, so a run leaves it unevaluated unless told to evaluate it
    assert run_pipeline(landing, MONTH, out, retrain_model=True).success
    run = subprocess.run([sys.executable, "-m", "pipelines.cli", "model", "--out", str(out), "--month", MONTH], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    card = (out / "model_card.md").read_text()
    for method in ("scorecard model", "transparent score", "headline needs met"):
        assert re.search(rf"\| {method} \| 0\.\d+ \(0\.\d+-0\.\d+\) \|", card), f"{method} has no figure with its interval"
    assert "## Fairness" in card and "## Scorecard" in card and "Intended use" in card and "**Verdict:" in card
    assert "Past families are formed with today's linkage" in card
    # the plan on the card: no training month's outcome window reaches into its test month
    plan = re.findall(r"^\| (\d{4}-\d\d) \| ([\d\-, ]+) \| (\d{4}-\d\d) \|", card, re.M)
    assert len(plan) >= 2
    assert all(closes <= test for test, _, closes in plan)
    points = re.search(r"## Scorecard.*?\n\n(\|.*?)\n\n", card, re.S).group(1).splitlines()[2:]
    assert points and all(int(line.split("|")[2]) >= 0 for line in points)
    assert "<table>" in (out / "model_card.html").read_text()
    assert_renders_as_document(out / "model_card.html", tmp_path)
    # the quarter's evaluation is stored: the next run of the quarter reuses it, unless asked to retrain
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    first = con.sql("SELECT evaluated_at, card FROM scorecard_evaluation").fetchall()
    scores = con.sql("SELECT * FROM family_model_scores ORDER BY family_ref").pl()
    con.close()
    again = run_pipeline(landing, MONTH, out)
    metadata = _scorecard_metadata(again)
    assert metadata["reused"].value is True
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    assert con.sql("SELECT evaluated_at, card FROM scorecard_evaluation").fetchall() == first
    assert con.sql("SELECT * FROM family_model_scores ORDER BY family_ref").pl().equals(scores)
    con.close()


def test_too_few_outcomes_is_said_not_papered_over(scored):
    import subprocess
    import sys

    from models.scorecard import NotEnoughOutcomes, evaluate

    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    try:
        evaluate(con, load_registry(), REFERENCE)
    except NotEnoughOutcomes:
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "model", "--out", str(scored), "--month", MONTH], capture_output=True, text=True)
        assert run.returncode == 3 and "too few" in run.stderr
    else:
        pytest.skip("this village holds enough escalations to train on")


def _scorecard_metadata(result) -> dict:
    return next(
        e.materialization.metadata for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.to_user_string() == "scorecard_model"
    )


def _materialise(village: Path, out: Path, selection: list[str], run_config: dict):
    import dagster as dg

    from pipelines.definitions import ALL_ASSETS
    from pipelines.partitions import partition_key
    from pipelines.resources import EarlyhelpSettings

    settings = EarlyhelpSettings(landing_dir=str(village), output_dir=str(out), month=MONTH)
    return dg.materialize(ALL_ASSETS, selection=selection, resources={"settings": settings}, partition_key=partition_key(MONTH, None), run_config=run_config)


def test_a_run_evaluates_the_model_only_for_lists_ordered_by_it_or_when_asked(september, village, tmp_path):
    """The model orders nothing by default: a run from nothing does not spend six months of
    families on evaluating it, and says so; a run whose lists it orders evaluates it."""
    result, out = september
    metadata = _scorecard_metadata(result)
    assert metadata["evaluated"].value is False and "order_by" in metadata["reason"].value
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    con.close()
    assert "scorecard_evaluation" not in tables and "family_model_scores" not in tables
    assert "not been evaluated" in (out / "governance" / "atrs_record.md").read_text()
    ordered = _materialise(village, run_from(out, tmp_path / "out"), ["scorecard_model", "locality_lists"], {"ops": {"locality_lists": {"config": {"order_by": "model"}}}})
    assert ordered.success and _scorecard_metadata(ordered)["evaluated"].value is True
    con = duckdb.connect(str(tmp_path / "out" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM scorecard_evaluation").fetchall() == [(1,)]
    con.close()


def test_retrain_model_evaluates_again_though_the_quarter_is_stored(scored, village):
    """Last in this module: it runs the shared village again."""
    assert _materialise(village, scored, ["scorecard_model"], {"ops": {"scorecard_model": {"config": {"retrain": True}}}}).success
    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    ((key, made),) = con.sql("SELECT key, evaluated_at FROM scorecard_evaluation").fetchall()
    con.close()
    result = run_pipeline(village, MONTH, scored, retrain_model=True)
    metadata = _scorecard_metadata(result)
    assert metadata["reused"].value is False and metadata["evaluated"].value is True
    con = duckdb.connect(str(scored / "warehouse.duckdb"), read_only=True)
    ((again_key, again_made),) = con.sql("SELECT key, evaluated_at FROM scorecard_evaluation").fetchall()
    con.close()
    assert again_key == key and again_made >= made


def test_each_hit_is_explained_by_its_own_indicators_sentence():
    # the reasons are made indicator by indicator and put back in the hits' order: each hit must
    # get its own indicator's sentence, with its own value and date, whatever order the hits are in
    from models.score import _reasons, _sentence

    registry = load_registry()
    rows = []
    for i, indicator in enumerate(registry.indicators):
        for k in range(3):
            rows.append({"indicator_id": indicator.id, "value": 0.25 + i + k, "latest": dt.date(2025, 1 + (i + k) % 12, 1)})
    rows.append({"indicator_id": "not_in_the_registry", "value": 1.0, "latest": dt.date(2026, 1, 1)})
    random.Random(7).shuffle(rows)
    hits = pl.DataFrame(rows, schema={"indicator_id": pl.String, "value": pl.Float64, "latest": pl.Date})
    reasons = _reasons(hits, registry).to_list()
    by_id = {indicator.id: indicator for indicator in registry.indicators}
    for row, reason in zip(hits.iter_rows(named=True), reasons):
        if row["indicator_id"] not in by_id:
            assert reason is None
            continue
        alone = pl.DataFrame([row], schema=hits.schema).select(_sentence(by_id[row["indicator_id"]]))[0, 0]
        assert reason == alone and "{" not in reason, (row, reason)
    assert len(set(reasons)) > len(registry.indicators)  # the values and dates are each hit's own


def test_indicators_read_only_the_mentions_their_windows_reach_and_find_the_same(september, monkeypatch):
    """The people's mentions are made for the dates some indicator reads (`dates_read`): every
    person hit, evidence row and family hit is the one reading every mention finds, and fewer
    mentions are made (three years of records, windows of a year)."""
    from features import compute

    registry = load_registry(DEFAULT_REGISTRY)
    con = duckdb.connect(str(september[1] / "warehouse.duckdb"), read_only=True)
    try:
        read = compute.dates_read(registry, REFERENCE, con)
        every_date = dict.fromkeys(compute.indicator_sources(registry))
        assert set(read) == set(every_date)
        assert read["asb_incidents"] == (_window_start(12), REFERENCE)
        assert read["worklessness"] is None  # claims are dated by their own start and end
        made = {}
        for name, dates in (("windowed", read), ("every", every_date)):
            with compute.people_mentions(con, "family_members", dates) as mentions:
                made[name] = con.execute(f'SELECT count(*) FROM "{mentions}"').fetchall()[0][0]
        windowed = compute.compute_indicators(con, registry, REFERENCE)
        monkeypatch.setattr(compute, "dates_read", lambda registry, reference, con: every_date)
        every = compute.compute_indicators(con, registry, REFERENCE)
    finally:
        con.close()
    assert 0 < made["windowed"] < made["every"]
    assert windowed.person_indicators.height > 0 and windowed.evidence.height > 0
    for name in ("person_indicators", "evidence", "family_indicators"):
        assert getattr(windowed, name).equals(getattr(every, name)), name
