"""The synthetic county: deterministic, realistic, and in the spec's layouts."""

from __future__ import annotations

import datetime as dt
import hashlib

import polars as pl
import pytest

from data_contracts import load_contracts
from ingestion.identifiers import is_valid_nhs_number, is_valid_upn
from synthetic import generate_county
from synthetic.population import build_county
from synthetic.writer import EXTRACTS
from tests.conftest import MONTH


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.csv"))}


def test_same_seed_same_bytes_other_seed_other_county(tmp_path, village):
    again = tmp_path / "again"
    generate_county(people=2_000, seed=11, month=MONTH, out=again)
    assert _digest(again) == _digest(village)
    other = tmp_path / "other"
    generate_county(people=2_000, seed=12, month=MONTH, out=other)
    assert _digest(other)["truth.csv"] != _digest(village)["truth.csv"]


def test_headers_are_the_partners_own(village):
    for source, contract in load_contracts().items():
        files = sorted((village / source).glob("*.csv"))
        if source == "meeting_outcomes":
            assert not files, "no meeting has decided yet"
            continue
        assert files, source
        header = pl.read_csv(files[0], n_rows=0).columns
        assert header == [c.partner_name for c in contract.columns]


def test_truth_names_every_extract_row(village):
    truth = pl.read_csv(village / "truth.csv")
    for source in EXTRACTS:
        for path in (village / source).glob("*.csv"):
            rows = pl.read_csv(path, infer_schema=False).height
            mine = truth.filter((pl.col("source") == source) & (pl.col("file") == path.name))
            assert sorted(mine["row"].to_list()) == list(range(1, rows + 1)), path.name
    assert truth["person_id"].null_count() == 0 and truth["family_id"].null_count() == 0


def test_history_spans_three_years_and_files_overlap(village):
    dates = pl.concat([pl.read_csv(p, infer_schema=False) for p in (village / "asb_incidents").glob("*.csv")])["INCIDENT_DATE"]
    dates = dates.str.to_date()
    assert dates.max() <= dt.date(2026, 9, 30) and (dates.max() - dates.min()).days >= 3 * 365
    assert len(list((village / "asb_incidents").glob("*.csv"))) >= 4


def test_identifiers_are_valid_where_present(village):
    ae = pl.concat([pl.read_csv(p, infer_schema=False) for p in (village / "ae_attendances").glob("*.csv")])
    numbers = ae["NHS_NUMBER"].drop_nulls().to_list()
    # valid but for the generator's keying errors (about one in 200 fails its check digit)
    invalid = sum(not is_valid_nhs_number(n) for n in numbers)
    assert numbers and 0 < invalid <= 0.015 * len(numbers)
    assert 0.02 < ae["NHS_NUMBER"].null_count() / ae.height < 0.1
    upns = pl.concat([pl.read_csv(p, infer_schema=False) for p in (village / "school_attendance").glob("*.csv")])["UPN"].drop_nulls()
    assert sum(not is_valid_upn(u) for u in upns.to_list()) <= 0.01 * upns.len()


@pytest.fixture(scope="module")
def county():
    return build_county(20_000, 5, "2026-10")


def test_households_are_realistic(county):
    people = county.people
    kinds = county.households["kind"].value_counts()
    assert set(kinds["kind"]) >= {"single", "couple", "couple_children", "lone_parent", "blended", "multi_generation"}
    children = people.filter(pl.col("role") == "child")
    # blended families: children whose surname differs from an adult they live with
    blended = county.households.filter(pl.col("kind") == "blended")["household_id"]
    in_blended = people.filter(pl.col("household_id").is_in(blended.implode()))
    surnames_per_household = in_blended.group_by("household_id").agg(pl.col("surname").n_unique())
    assert (surnames_per_household["surname"] > 1).mean() > 0.5
    # twins: two children of one household with the same date of birth and surname
    twins = children.group_by("household_id", "dob", "surname").len().filter(pl.col("len") >= 2)
    assert twins.height > 0
    # a parent and child who share a forename
    joined = children.join(people.filter(pl.col("role") == "parent"), on=["household_id", "forename"])
    assert joined.height > 0
    assert (people["prev_address_id"] >= 0).mean() > 0.1  # house moves and separations
    assert (people["ex_partner_id"] >= 0).sum() > 0
    smith = (people["surname"] == "Smith").mean()
    assert 0.003 < smith < 0.03  # common surnames are common, not universal


def test_rates_follow_published_figures(tmp_path):
    landing = tmp_path / "landing"
    summary = generate_county(people=20_000, seed=3, month="2026-10", out=landing)
    years = 40 / 12
    attendance = pl.concat([pl.read_csv(p, infer_schema=False) for p in (landing / "school_attendance").glob("*.csv")]).unique()
    year = attendance.filter(pl.col("Academic Year") == "2025/26").with_columns(
        pl.col("Sessions Possible", "Authorised Absence", "Unauthorised Absence").cast(pl.Int64)
    )
    pupils = year.group_by("UPN", "Legal Forename", "DOB").agg(
        ((pl.col("Authorised Absence") + pl.col("Unauthorised Absence")).sum() / pl.col("Sessions Possible").sum()).alias("absence")
    )
    persistent = (pupils["absence"] >= 0.1).mean()
    assert 0.14 < persistent < 0.27  # ~20% (DfE 2023/24)
    da = pl.concat([pl.read_csv(p, infer_schema=False) for p in (landing / "domestic_abuse").glob("*.csv")]).unique()
    incidents_per_1000 = da["NOTIFICATION_ID"].n_unique() / 20 / years
    assert 9 < incidents_per_1000 < 19  # ~14 per 1,000 a year
    asb = pl.concat([pl.read_csv(p, infer_schema=False) for p in (landing / "asb_incidents").glob("*.csv")]).unique()
    assert 10 < asb["INCIDENT_REF"].n_unique() / 20 / years < 24  # ~17 per 1,000 a year
    assert summary.rows["open_cases"] > 0


def test_the_consistent_identifier_is_mostly_childrens_and_version_one_has_it_in_ae_only(tmp_path, village):
    school = pl.concat([pl.read_csv(p, infer_schema=False) for p in (village / "school_attendance").glob("*.csv")])
    share = 1 - school["NHS_NUMBER"].null_count() / school.height
    assert 0.5 < share < 0.7  # recording.NHS_NUMBER_RATES: 60% of pupils' rows
    benefits = pl.concat([pl.read_csv(p, infer_schema=False) for p in (village / "worklessness").glob("*.csv")])
    assert 1 - benefits["NHS_NUMBER"].null_count() / benefits.height < 0.08
    v1 = tmp_path / "v1"
    generate_county(people=2_000, seed=11, month=MONTH, out=v1, nhs_number=False)
    for source in EXTRACTS:
        header = pl.read_csv(next((v1 / source).glob("*.csv")), n_rows=0).columns
        assert ("NHS_NUMBER" in header) == (source == "ae_attendances"), source
    # the same county otherwise: the identifier draws from a stream of its own
    assert _digest(v1)["truth.csv"] == _digest(village)["truth.csv"]


def test_the_hard_recording_mode_records_people_as_the_field_does(tmp_path, village):
    hard = tmp_path / "hard"
    generate_county(people=2_000, seed=11, month=MONTH, out=hard, recording_mode="hard")
    rows = pl.concat([pl.read_csv(p, infer_schema=False) for p in (hard / "asb_incidents").glob("*.csv")] +
                     [pl.read_csv(p, infer_schema=False).rename({"PERSON_GIVEN_NAME": "FIRST_NAME", "PERSON_FAMILY_NAME": "SURNAME"}).select("FIRST_NAME", "SURNAME")
                      for p in (hard / "ae_attendances").glob("*.csv")], how="diagonal")
    assert (rows["FIRST_NAME"].str.len_chars() == 1).sum() > 0, "initials for forenames"
    assert rows["SURNAME"].is_in(["Begum", "Khatun", "Bibi"]).sum() > 0, "women's conventional surnames"
    addresses = pl.concat([pl.read_csv(p, infer_schema=False) for p in (hard / "worklessness").glob("*.csv")])["ADDRESS_LINE_1"]
    assert addresses.str.contains(r"^[0-9]+/[0-9]+ ").sum() > 0, "flats written as 14/2 or 2/14"
    people = pl.read_csv(hard / "truth_people.csv")
    assert people["name_tradition"].is_in(["pakistani_bangladeshi", "polish"]).mean() > 0.1
    # every row still has its truth, and every property its place in the gazetteer's truth
    truth = pl.read_csv(hard / "truth.csv")
    assert truth.height == sum(pl.read_csv(p, infer_schema=False).height for s in EXTRACTS for p in (hard / s).glob("*.csv"))
    assert pl.read_csv(hard / "truth_addresses.csv")["uprn"].null_count() == 0
    gazetteer = pl.read_csv(hard / "address_gazetteer" / "address_gazetteer.csv", infer_schema=False)
    assert gazetteer["PARENT_UPRN"].drop_nulls().is_in(gazetteer["UPRN"].implode()).all(), "a flat's building is in the gazetteer"


def test_monthly_files_hold_the_same_rows_one_file_a_month(tmp_path, village):
    """`files="monthly"` cuts the same rows into a file a month (as partners send them), each
    re-sending the week before its month: every distinct row of the yearly county, nothing else."""
    monthly = tmp_path / "monthly"
    generate_county(people=2_000, seed=11, month=MONTH, out=monthly, files="monthly")
    for source in ("asb_incidents", "ae_attendances", "school_attendance"):
        files = sorted((monthly / source).glob("*.csv"))
        # a file for each month with events in it: schools' rows are termly
        assert len(files) >= (9 if source == "school_attendance" else 36), source
        rows = lambda paths: pl.concat([pl.read_csv(p, infer_schema=False) for p in paths]).unique()  # noqa: E731
        assert rows(files).sort(pl.all()).equals(rows((village / source).glob("*.csv")).sort(pl.all())), source
    asb = [pl.read_csv(p, infer_schema=False)["INCIDENT_DATE"].str.to_date() for p in sorted((monthly / "asb_incidents").glob("*.csv"))]
    assert any(later.min() < earlier.max() for earlier, later in zip(asb, asb[1:])), "a monthly file re-sends the days before its month"
    assert [p.name for p in (monthly / "open_cases").glob("*.csv")] == [f"open_cases_{MONTH}.csv"]


def test_a_county_too_small_for_some_sources_is_generated_without_their_rows(tmp_path):
    """Thirty residents: no anti-social behaviour, no contact at the front door. Each source's
    rows are what the county gives, none where it gives none; the generator once failed on an
    empty column of references."""
    summary = generate_county(people=30, seed=1, month=MONTH, out=tmp_path)
    assert summary.rows["asb_incidents"] == summary.rows["front_door_contacts"] == 0 and summary.rows["school_attendance"] > 0
    truth = pl.read_csv(tmp_path / "truth.csv")
    assert truth.height == sum(n for source, n in summary.rows.items() if source in EXTRACTS)
