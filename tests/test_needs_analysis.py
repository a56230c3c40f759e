"""The partnership's needs analysis: no personal data, no count under 5, and no hidden count that
a published total gives away."""

from __future__ import annotations

import re

import duckdb
import numpy as np
import polars as pl
import pytest

from models.needs_analysis import SUPPRESSED, suppression_mask
from tests.conftest import MONTH


def test_a_lone_hidden_count_takes_the_next_smallest_of_its_line_with_it():
    # a locality of three wards: 3 + 9 + 20 = 32; the 3 alone would be 32 - 9 - 20
    counts = np.array([[32], [3], [9], [20]])
    lines = [[(0, 0), (1, 0), (2, 0), (3, 0)]]
    assert suppression_mask(counts, lines).ravel().tolist() == [False, True, True, False]
    # two hidden already: nothing more to hide
    counts = np.array([[30], [3], [2], [25]])
    assert suppression_mask(counts, lines).ravel().tolist() == [False, True, True, False]


def test_suppression_leaves_no_line_with_exactly_one_hidden_count():
    rng = np.random.default_rng(5)
    for _ in range(200):
        inner = rng.integers(0, 30, size=(5, 4))
        table = np.zeros((6, 5), dtype=int)
        table[:5, :4] = inner
        table[5, :4] = inner.sum(axis=0)
        table[:, 4] = table[:, :4].sum(axis=1)
        lines = [[(i, j) for j in range(5)] for i in range(6)] + [[(i, j) for i in range(6)] for j in range(5)]
        hidden = suppression_mask(table, lines)
        assert hidden[table < 5].all()
        assert all(sum(hidden[c] for c in line) != 1 for line in lines)


@pytest.fixture
def analysed(listed):
    return listed


def test_the_needs_analysis_holds_no_count_under_5_and_no_personal_data(analysed):
    folder = analysed / "needs_analysis" / MONTH
    files = sorted(folder.glob("*.csv"))
    assert {f.name for f in files} == {"needs_by_area.csv", "needs_together.csv", "needs_by_month.csv", "decisions_by_locality.csv"}
    shown = 0
    for path in files:
        frame = pl.read_csv(path, infer_schema=False)
        for column in ("families", "children", "decisions"):
            for value in frame[column].to_list() if column in frame.columns else []:
                assert value == SUPPRESSED or int(value.replace(",", "")) >= 5, f"{path.name}: {column} {value}"
                shown += value != SUPPRESSED
    assert shown > 0, "the village shows some counts"
    page = (folder / "needs_analysis.html").read_text()
    cells = re.findall(r"<(?:td|text)[^>]*>\s*([^<]*?)\s*</(?:td|text)>", page)
    counts = [c for c in cells if re.fullmatch(r"[\d,]+", c)]
    assert counts and all(int(c.replace(",", "")) >= 5 for c in counts), "no count under 5 on the page"
    con = duckdb.connect(str(analysed / "warehouse.duckdb"), read_only=True)
    people = con.sql("SELECT DISTINCT forename, surname, dob, postcode, address FROM person_records").pl()
    text = page + "".join(p.read_text() for p in files)
    lowered = text.lower()
    for forename, surname, dob, postcode, address in people.iter_rows():
        if forename and surname:
            assert f"{forename} {surname}".lower() not in lowered
        if dob:
            assert dob.isoformat() not in text and dob.strftime("%d/%m/%Y") not in text
        if postcode and len(postcode) >= 6:
            assert postcode.lower() not in lowered
        if address and len(address) > 8:
            assert address.lower() not in lowered


def test_wards_and_localities_never_give_a_hidden_count_away(analysed):
    areas = pl.read_csv(analysed / "needs_analysis" / MONTH / "needs_by_area.csv", infer_schema=False)
    for measure in ("families", "children"):
        for need in areas["need"].unique():
            column = areas.filter(pl.col("need") == need)
            localities = column.filter(pl.col("area_type") != "ward")
            lines = [localities[measure].to_list()]
            for locality in column.filter(pl.col("area_type") == "locality")["area"]:
                wards = column.filter((pl.col("area_type") == "ward") & (pl.col("locality") == locality))[measure].to_list()
                own = column.filter((pl.col("area_type") == "locality") & (pl.col("area") == locality))[measure].to_list()
                lines.append(own + wards)
            for line in lines:
                assert sum(v == SUPPRESSED for v in line) != 1, f"{measure}, {need}: {line}"
                if SUPPRESSED not in line:
                    assert int(line[0].replace(",", "")) == sum(int(v.replace(",", "")) for v in line[1:]), "a total is its parts' sum"
