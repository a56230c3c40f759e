"""Retention beyond the partners' rows: derived tables, subject access exports, landing files."""

from __future__ import annotations

import datetime as dt
import os

import duckdb
import polars as pl

from data_contracts import load_contract
from governance.retention import DERIVED_TABLES, delete_landing_files, expire_derived, expire_exports, landing_past_retention
from ingestion.load import read_source, write_source

TODAY = dt.date(2026, 11, 23)


def test_every_derived_table_loses_its_rows_past_retention_and_counts_them(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    old, recent = dt.date(2019, 5, 1), dt.date(2026, 5, 1)
    for table in DERIVED_TABLES:
        column = "meeting_date" if "meeting_date" in table.aged_by else "event_date" if "event_date" in table.aged_by else None
        if column:
            frame = pl.DataFrame({column: [old, recent], "family_ref": ["F1", "F2"]})
        else:
            name = "identified_month" if "identified_month" in table.aged_by else "month"
            frame = pl.DataFrame({name: ["2019-05", "2026-05"], "family_ref": ["F1", "F2"]})
        con.register("_t", frame)
        con.execute(f'CREATE TABLE "{table.name}" AS SELECT * FROM _t')
        con.unregister("_t")
    removed = expire_derived(con, TODAY, years=6)
    assert removed == {t.name: 1 for t in DERIVED_TABLES}
    for table in DERIVED_TABLES:
        assert con.execute(f'SELECT family_ref FROM "{table.name}"').fetchall() == [("F2",)], table.name
    logged = dict(con.execute("SELECT source, rows_removed FROM retention_log").fetchall())
    assert logged == removed
    # a second run finds nothing more to remove
    assert set(expire_derived(con, TODAY, years=6).values()) == {0}


def test_old_subject_access_exports_are_removed(tmp_path):
    folder = tmp_path / "subject_access"
    (folder / "SAR-OLD").mkdir(parents=True)
    (folder / "SAR-OLD" / "source_ae_attendances.csv").write_text("x\n")
    (folder / "SAR-NEW").mkdir()
    long_ago = dt.datetime(2026, 6, 1).timestamp()
    os.utime(folder / "SAR-OLD", (long_ago, long_ago))
    assert expire_exports(folder, TODAY, days=90) == ["SAR-OLD"]
    assert [p.name for p in folder.iterdir()] == ["SAR-NEW"]


def test_landing_files_past_retention_are_reported_and_deleted_only_on_request(tmp_path):
    landing = tmp_path / "landing"
    (landing / "ae_attendances").mkdir(parents=True)
    header = "ATTENDANCE_ID,ARRIVAL_DATE,NHS_NUMBER,PERSON_GIVEN_NAME,PERSON_FAMILY_NAME,PERSON_BIRTH_DATE,PERSON_STATED_GENDER,POSTCODE,COMPLAINT_GROUP,SAFEGUARDING_CONCERN"
    (landing / "ae_attendances" / "ae_2020.csv").write_text(f"{header}\nED0,20201101,,Ann,Lee,20050112,2,CM22 8HR,OTHER,N\n")
    (landing / "ae_attendances" / "ae_2026.csv").write_text(f"{header}\nED1,20260701,,Ann,Lee,20050112,2,CM22 8HR,OTHER,N\n")
    contract = load_contract("ae_attendances")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, read_source(contract, landing, TODAY), TODAY)
    stale = landing_past_retention(con)
    assert stale == [("ae_attendances", "ae_2020.csv")]
    assert (landing / "ae_attendances" / "ae_2020.csv").exists(), "reported, not deleted"
    assert delete_landing_files(landing, stale) == 1
    assert sorted(p.name for p in (landing / "ae_attendances").iterdir()) == ["ae_2026.csv"]


def test_a_landing_file_whose_records_are_restated_or_unreadable_is_past_retention_with_them(tmp_path):
    """A file's row replaced by a later file's restatement of the record counts as past retention
    once that restatement is (not while it is held); a quarantined record whose date cannot be
    read is kept as long as the latest date among the rows its file loaded, no longer."""
    landing = tmp_path / "landing"
    (landing / "ae_attendances").mkdir(parents=True)
    header = "ATTENDANCE_ID,ARRIVAL_DATE,NHS_NUMBER,PERSON_GIVEN_NAME,PERSON_FAMILY_NAME,PERSON_BIRTH_DATE,PERSON_STATED_GENDER,POSTCODE,COMPLAINT_GROUP,SAFEGUARDING_CONCERN"
    rows = {
        # a row past retention, a row restated next year (past retention too), a date that cannot be read
        "ae_2020.csv": ["ED0,20201101", "ED9,20201102", "EDX,20201131"],
        "ae_2021.csv": ["ED9,20210105"],
        # restated in 2026: the record is held
        "ae_2022.csv": ["ED5,20220101"],
        # held; a date that cannot be read, kept while its file's rows are held
        "ae_2026.csv": ["ED1,20260701", "ED5,20260601", "EDY,20261131"],
    }
    for name, lines in rows.items():
        text = "".join(f"{line},,Ann,Lee,20050112,2,CM22 8HR,OTHER,N\n" for line in lines)
        (landing / "ae_attendances" / name).write_text(f"{header}\n{text}")
    contract = load_contract("ae_attendances")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, read_source(contract, landing, TODAY), TODAY)
    counts = {f: (q, e) for f, q, e in con.execute("SELECT file, quarantined, quarantine_expired FROM landed_files").fetchall()}
    assert counts["ae_2020.csv"] == (1, 1) and counts["ae_2026.csv"] == (1, 0), counts
    assert [f for (f,) in con.execute("SELECT _file FROM quarantine").fetchall()] == ["ae_2026.csv"]
    assert landing_past_retention(con) == [("ae_attendances", "ae_2020.csv"), ("ae_attendances", "ae_2021.csv")]


def test_earlyhelp_run_deletes_the_landing_files_past_retention_when_the_council_switches_it_on(village, tmp_path, monkeypatch):
    """The switch is the council's, read from the environment by `earlyhelp run` as by `dagster
    dev`: a landing file past retention is deleted by the run's retention step, the others kept."""
    import shutil

    from pipelines.cli import run_pipeline
    from tests.conftest import MONTH

    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    header = sorted((landing / "ae_attendances").iterdir())[0].read_text().splitlines()[0]
    (landing / "ae_attendances" / "ae_attendances_2019-12.csv").write_text(f"{header}\nED99999999,20191205,,Ann,Lee,20050112,2,CM22 8HR,OTHER,N\n")
    monkeypatch.setenv("EARLYHELP_DELETE_EXPIRED_LANDING", "1")
    result = run_pipeline(landing, MONTH, tmp_path / "out")
    assert result.success
    retention = next(e.materialization for e in result.all_events if e.is_step_materialization and e.materialization.asset_key.path[-1] == "retention")
    past = retention.metadata["landing_files_past_retention"].value
    assert "ae_attendances/ae_attendances_2019-12.csv" in past and retention.metadata["landing_files_deleted"].value == len(past)
    left = sorted(f"{p.parent.name}/{p.name}" for p in landing.glob("*/*"))
    assert not set(past) & set(left) and len(left) + len(past) == len(list(village.glob("*/*"))) + 1, "the files past retention deleted, every other kept"


def test_month_folders_of_packs_older_than_retention_are_removed(tmp_path):
    from governance.retention import expire_monthly_folders

    packs = tmp_path / "packs"
    for month in ("2020-10", "2020-11", "2026-09"):
        (packs / month).mkdir(parents=True)
        (packs / month / "north.html").write_text("x")
    (packs / "notes").mkdir()  # not a month: left alone
    assert expire_monthly_folders(packs, TODAY, years=6) == ["2020-10"]
    assert sorted(p.name for p in packs.iterdir()) == ["2020-11", "2026-09", "notes"]
    assert expire_monthly_folders(tmp_path / "absent", TODAY) == []
