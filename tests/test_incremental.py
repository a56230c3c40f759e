"""A monthly run reads only the files that are new since the last: unchanged files (same name,
same SHA-256) are not read or checked again, and the warehouse comes out as a reading of every
file would leave it, table by table."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import duckdb
import polars as pl
import pytest

from data_contracts import CONTRACTS_DIR, load_contracts
from ingestion.load import landing_files, previous_load, read_source, write_source
from tests.conftest import TODAY

LEDGERS = ("quarantine", "set_aside_fields", "superseded_rows", "retention_keys")
#: When a file was checked and loaded differs by nature between the two ways; nothing else may.
WHEN = ("ingested_at", "validated_on")
RESTATED = "ae_attendances_2026-09_restated.csv"


def _ingest(con: duckdb.DuckDBPyConnection, landing: Path, today: dt.date, incremental: bool, in_place: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """Every source through read_source and write_source, as the pipeline's raw assets call them;
    returns (files read, files) per source. in_place: gets the sources whose kept rows stayed in
    the warehouse, their table changed in place."""
    read = {}
    for contract in load_contracts().values():
        result = read_source(contract, landing, today, previous_load(con, contract) if incremental else None)
        write_source(con, contract, result, today)
        read[contract.source] = (result.files_read, len(result.files))
        if in_place is not None and result.in_place is not None:
            in_place.append(contract.source)
    return read


def _tables(path: Path) -> dict[str, pl.DataFrame]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = {c.raw_table: con.sql(f'SELECT * FROM "{c.raw_table}"').pl() for c in load_contracts().values()}
        tables.update({name: con.sql(f"SELECT * FROM {name}").pl() for name in LEDGERS})
        tables["landed_files"] = con.sql("SELECT * FROM landed_files").pl().drop(WHEN)
        # the retention log gains a row per source each run: the last run's rows are what a reading of
        # every file gives (the last inserted: two runs within one second share a `removed_at`)
        tables["retention_log"] = con.sql(
            "SELECT source, retention_years, cutoff, rows_removed FROM retention_log QUALIFY rowid = max(rowid) OVER (PARTITION BY source)"
        ).pl()
    finally:
        con.close()
    return {name: frame.sort(frame.columns) for name, frame in tables.items()}


@pytest.fixture(scope="module")
def months(village, tmp_path_factory) -> tuple[Path, Path]:
    """(last month's landing folder: every source without its latest file; this month's: every
    file, and one more A&E file restating the county's oldest attendance with a new date)."""
    folder = tmp_path_factory.mktemp("months")
    this_month, last_month = folder / "this", folder / "last"
    shutil.copytree(village, this_month)
    oldest, second = [p.read_text().splitlines() for p in sorted((this_month / "ae_attendances").glob("*.csv"))[:2]]
    header = oldest[0].split(",")
    # the county's oldest attendance (past retention on the day of the last run), and one the
    # second file already restated from the first (a replacement of a replacement)
    first_ids = {line.split(",")[0] for line in oldest[1:]}
    twice = next(line for line in second[1:] if line.split(",")[0] in first_ids)
    restated = []
    for line in (oldest[1], twice):
        fields = line.split(",")
        fields[header.index("ARRIVAL_DATE")] = "20260901"
        restated.append(",".join(fields))
    (this_month / "ae_attendances" / RESTATED).write_text("\n".join([oldest[0], *restated]) + "\n")
    shutil.copytree(village, last_month)
    for contract in load_contracts().values():
        files = landing_files(last_month, contract.source)
        if len(files) > 1:
            files[-1].unlink()
    return last_month, this_month


@pytest.mark.parametrize("last_run", [TODAY, TODAY - dt.timedelta(days=200)], ids=["same day", "200 days before"])
def test_a_monthly_run_reads_only_new_files_and_matches_a_reading_of_every_file(months, tmp_path, last_run, monkeypatch):
    from ingestion import load

    last_month, this_month = months
    cold = tmp_path / "cold.duckdb"
    with duckdb.connect(str(cold)) as con:
        _ingest(con, this_month, TODAY, incremental=False)
    monthly = tmp_path / "monthly.duckdb"
    with duckdb.connect(str(monthly)) as con:
        _ingest(con, last_month, last_run, incremental=True)
        ranked_new, rank_new = [], load._rank_new_rows
        monkeypatch.setattr(load, "_rank_new_rows", lambda *given: ranked_new.append(rank_new(*given)) or ranked_new[-1])
        monkeypatch.setattr(load.PreviousLoad, "rows", lambda self: pytest.fail(f"{self.table}: the kept rows read whole"))
        in_place: list[str] = []
        read = _ingest(con, this_month, TODAY, incremental=True, in_place=in_place)
    # the unchanged files' rows stay in the warehouse, never read whole (only their keys), and
    # every table is changed in place, holding its rows in the order a reading of every file
    # writes them; only the new files' rows are ranked
    assert sorted(in_place) == sorted(s for s, (n, files) in read.items() if n < files) and len(in_place) >= 5, read
    assert sum(ranked is not None for ranked in ranked_new) >= 4, "only the new files' rows ranked"
    with duckdb.connect(str(cold), read_only=True) as a, duckdb.connect(str(monthly), read_only=True) as b:
        for contract in load_contracts().values():
            assert b.sql(f'SELECT * FROM "{contract.raw_table}"').pl().equals(a.sql(f'SELECT * FROM "{contract.raw_table}"').pl()), contract.source

    expected, got = _tables(cold), _tables(monthly)
    for name in expected:
        assert got[name].equals(expected[name]), f"{name} differs from a reading of every file"
    # a removed row leaves its file, row and key's digest, never a field of it
    keys = expected["retention_keys"]
    assert keys.columns == ["source", "_file", "_row", "key_sha256"] and keys.filter(pl.col("source") == "ae_attendances").height
    assert keys["key_sha256"].drop_nulls().str.contains("^[0-9a-f]{64}$").all()
    # not vacuous: the new month's files alone were read where nothing else had to be
    assert read["ae_attendances"] == (2, 5), "the new month's file and the restatement"
    reused = [s for s, (n, files) in read.items() if n < files]
    assert len(reused) >= 5, read
    if last_run == TODAY:
        assert all(n == 0 for s, (n, files) in read.items() if files == 1), "an unchanged single file is not read again"
    # the restated attendances replace the originals, whether or not an original had passed
    # retention, and the row the second file had replaced points at its new replacement
    replaced = expected["superseded_rows"].filter(pl.col("replaced_by_file") == RESTATED)
    files = sorted(p.name for p in (this_month / "ae_attendances").glob("*.csv"))
    assert replaced.height == 3 and (files[0], 1) in replaced.select("_file", "_row").rows()
    assert sorted(replaced["_file"]) == sorted([files[0], files[0], files[1]])


def test_kept_rows_not_one_a_key_in_file_order_are_read_whole_and_ranked_again(months, tmp_path):
    """The unchanged files' rows are left in the warehouse only where its table holds them as a
    load leaves them (one row a key, in file and row order); a table changed otherwise (here put
    in reverse order, or given a second copy of one row) is read whole, every row ranked again,
    and comes out as a reading of every file leaves it."""
    last_month, this_month = months
    cold = tmp_path / "cold.duckdb"
    with duckdb.connect(str(cold)) as con:
        _ingest(con, this_month, TODAY, incremental=False)
    for change in ("ORDER BY _file DESC, _row DESC", "UNION ALL (SELECT * FROM raw_ae_attendances LIMIT 1)"):
        monthly = tmp_path / f"monthly_{len(change)}.duckdb"
        with duckdb.connect(str(monthly)) as con:
            _ingest(con, last_month, TODAY, incremental=True)
            con.execute(f"CREATE OR REPLACE TABLE raw_ae_attendances AS SELECT * FROM raw_ae_attendances {change}")
            in_place: list[str] = []
            read = _ingest(con, this_month, TODAY, incremental=True, in_place=in_place)
        assert read["ae_attendances"] == (2, 5) and "ae_attendances" not in in_place and "school_attendance" in in_place, change
        with duckdb.connect(str(cold), read_only=True) as a, duckdb.connect(str(monthly), read_only=True) as b:
            assert b.sql("SELECT * FROM raw_ae_attendances").pl().equals(a.sql("SELECT * FROM raw_ae_attendances").pl()), change
        if change.startswith("ORDER"):
            assert _tables(monthly)["superseded_rows"].equals(_tables(cold)["superseded_rows"])


def test_a_source_without_a_natural_key_keeps_its_rows_in_place_as_a_reading_of_every_file_does(months, tmp_path):
    """A council's contract may name no natural key: every row stands, none replaces another, and
    a month adds its new files' rows to those kept, and removes those past retention."""
    import dataclasses

    last_month, this_month = months
    keyed = load_contracts()["ae_attendances"]
    contract = dataclasses.replace(keyed, columns=tuple(dataclasses.replace(c, key_position=None) for c in keyed.columns))
    assert not contract.natural_key
    tables = []
    for name, steps in (("cold", [(this_month, None)]), ("monthly", [(last_month, TODAY - dt.timedelta(days=60)), (this_month, TODAY)])):
        with duckdb.connect(str(tmp_path / f"{name}.duckdb")) as con:
            for landing, day in steps:
                result = read_source(contract, landing, day or TODAY, previous_load(con, contract) if day else None)
                write_source(con, contract, result, day or TODAY)
            assert (result.in_place is not None) == (name == "monthly") and result.files_read == (len(result.files) if name == "cold" else 2)
            tables.append([con.sql(f"SELECT * FROM {t}").pl() for t in (contract.raw_table, "retention_keys", "superseded_rows", "set_aside_fields")])
    for cold, monthly in zip(*tables):
        assert monthly.sort(monthly.columns).equals(cold.sort(cold.columns))
    assert tables[1][0].equals(tables[0][0]), "the rows in the order a reading of every file writes them"
    assert tables[0][1].height and not tables[0][2].height, "rows past retention, none replaced"


def test_a_file_read_again_for_a_date_now_past_is_read_with_those_after_it_the_files_before_kept(months, tmp_path, monkeypatch):
    """A file whose date last month's day judged to be in the future is read again today, with
    every file after it; the files before it stay as loaded, their rows in the warehouse, never read
    whole (unless the table is not as a load leaves it: then the kept files' rows are read and
    ranked again with the others). A kept file's row that a file gone from the landing folder had
    replaced cannot stand again from the warehouse (it is gone from it): then every file is read.
    Every way, the tables are as a reading of every file leaves them."""
    from ingestion import load

    _, this_month = months
    landing = tmp_path / "landing"
    shutil.copytree(this_month, landing)
    files = landing_files(landing, "ae_attendances")
    # an attendance of the third file that no other file sends, dated five days ago: in the
    # future on the day of last month's run, a month ago
    lines = files[2].read_text().splitlines()
    elsewhere = {line.split(",")[0] for other in files if other != files[2] for line in other.read_text().splitlines()}
    chosen = next(i for i, line in enumerate(lines[1:], 1) if line.split(",")[0] not in elsewhere)
    header, fields = lines[0].split(","), lines[chosen].split(",")
    fields[header.index("ARRIVAL_DATE")] = f"{TODAY - dt.timedelta(days=5):%Y%m%d}"
    lines[chosen] = ",".join(fields)
    files[2].write_text("\n".join(lines) + "\n")
    last_month = tmp_path / "last_month"
    shutil.copytree(landing, last_month)
    (last_month / "ae_attendances" / RESTATED).unlink()
    gone = tmp_path / "gone"
    shutil.copytree(landing, gone)
    (gone / "ae_attendances" / files[2].name).unlink()

    for way, (today_landing, change) in enumerate(((landing, None), (gone, None), (landing, "ORDER BY _file DESC, _row DESC"))):
        cold, monthly = tmp_path / f"{way}_cold.duckdb", tmp_path / f"{way}_monthly.duckdb"
        with duckdb.connect(str(cold)) as con:
            _ingest(con, today_landing, TODAY, incremental=False)
        with duckdb.connect(str(monthly)) as con:
            _ingest(con, last_month, TODAY - dt.timedelta(days=30), incremental=True)
            judged = con.execute("SELECT DISTINCT _file FROM quarantine WHERE source = 'ae_attendances' AND contains(reason, 'in the future')").fetchall()
            assert judged == [(files[2].name,)], "not vacuous: the third file alone had a date in the future"
            replaced = con.execute("SELECT count(*) FROM superseded_rows WHERE _file = ? AND replaced_by_file = ?", [files[1].name, files[2].name]).fetchall()[0][0]
            assert replaced, "not vacuous: the third file replaced rows of the second"
            if change:
                con.execute(f"CREATE OR REPLACE TABLE raw_ae_attendances AS SELECT * FROM raw_ae_attendances {change}")
            elif today_landing is landing:
                monkeypatch.setattr(load.PreviousLoad, "rows", lambda self: pytest.fail(f"{self.table}: the kept rows read whole"))
            in_place: list[str] = []
            read = _ingest(con, today_landing, TODAY, incremental=True, in_place=in_place)
            monkeypatch.undo()
        if today_landing is landing:
            # the first two files kept, the third read again with the one after it and the new one
            assert read["ae_attendances"] == (3, 5) and ("ae_attendances" in in_place) == (change is None), read
        else:
            assert read["ae_attendances"] == (4, 4) and "ae_attendances" not in in_place, read
        with duckdb.connect(str(cold), read_only=True) as a, duckdb.connect(str(monthly), read_only=True) as b:
            for contract in load_contracts().values():
                assert b.sql(f'SELECT * FROM "{contract.raw_table}"').pl().equals(a.sql(f'SELECT * FROM "{contract.raw_table}"').pl()), contract.source
            loaded = b.execute("SELECT count(*) FROM raw_ae_attendances WHERE _file = ? AND arrival_date = ?", [files[2].name, TODAY - dt.timedelta(days=5)]).fetchall()[0][0]
            assert loaded == (today_landing is landing), "the attendance in the future then is loaded now"
        expected, got = _tables(cold), _tables(monthly)
        for name in expected:
            assert got[name].equals(expected[name]), f"{today_landing.name}, {change}: {name} differs from a reading of every file"


def _oldest_gone(landing: Path, into: Path) -> dict[str, str]:
    """A copy of `landing` without each source's oldest file where it sends several (as a council
    deleting files past retention leaves it); returns the file gone of each source."""
    shutil.copytree(landing, into)
    gone = {}
    for contract in load_contracts().values():
        files = landing_files(into, contract.source)
        if len(files) > 1:
            files[0].unlink()
            gone[contract.source] = files[0].name
    return gone


def test_files_gone_before_the_rest_leave_the_files_after_them_kept(months, tmp_path, monkeypatch):
    """Each source's oldest file gone from the landing folder (deleted once past retention, or
    archived) takes its rows out of the table, and the files after it stay as loaded, their rows in
    the warehouse, never read whole, where no row of it had replaced one of theirs. A file loaded
    as the duplicate of one now gone is read again, with every file after it. Every way, the
    tables are as a reading of every file leaves them."""
    from ingestion import load

    last_month, this_month = months
    today_landing = tmp_path / "this_month"
    gone = _oldest_gone(this_month, today_landing)
    assert len(gone) >= 5, gone
    # the oldest A&E file sent again under another name: loaded once, as that file's duplicate
    with_copy = tmp_path / "with_copy"
    shutil.copytree(last_month, with_copy)
    oldest = landing_files(with_copy, "ae_attendances")[0]
    copy = oldest.with_name(oldest.stem + "_again.csv")
    shutil.copyfile(oldest, copy)
    for way, before in (("oldest gone", last_month), ("a duplicate's original gone", with_copy)):
        now = today_landing
        if before is with_copy:
            now = tmp_path / "now_with_copy"
            shutil.copytree(today_landing, now)
            shutil.copyfile(copy, now / "ae_attendances" / copy.name)
        cold, monthly = tmp_path / f"{way}_cold.duckdb", tmp_path / f"{way}_monthly.duckdb"
        with duckdb.connect(str(cold)) as con:
            _ingest(con, now, TODAY, incremental=False)
        with duckdb.connect(str(monthly)) as con:
            _ingest(con, before, TODAY, incremental=True)
            if before is with_copy:
                status = con.execute("SELECT status, duplicate_of FROM landed_files WHERE file = ?", [copy.name]).fetchall()
                assert status == [("duplicate", oldest.name)], "not vacuous: the copy was loaded as a duplicate"
            else:
                monkeypatch.setattr(load.PreviousLoad, "rows", lambda self: pytest.fail(f"{self.table}: the kept rows read whole"))
            in_place: list[str] = []
            read = _ingest(con, now, TODAY, incremental=True, in_place=in_place)
            monkeypatch.undo()
        new = {c.source: [p.name for p in landing_files(now, c.source) if not (before / c.source / p.name).exists()] for c in load_contracts().values()}
        for source in gone:
            if way == "oldest gone" or source != "ae_attendances":
                # only the files new this month read: the gone file's rows left the table in place
                assert read[source][0] == len(new[source]) and source in in_place, (source, read[source])
        if way != "oldest gone":
            # the copy, now the first file, loads the rows its original did: every file read
            assert read["ae_attendances"][0] == read["ae_attendances"][1], read["ae_attendances"]
        with duckdb.connect(str(monthly), read_only=True) as con:
            assert not con.execute("SELECT count(*) FROM landed_files WHERE file IN (SELECT unnest(?))", [list(gone.values())]).fetchall()[0][0]
        expected, got = _tables(cold), _tables(monthly)
        for name in expected:
            assert got[name].equals(expected[name]), f"{way}: {name} differs from a reading of every file"


def test_a_rerun_on_the_same_day_reads_nothing_and_changes_nothing(months, tmp_path):
    _, this_month = months
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        _ingest(con, this_month, TODAY, incremental=True)
    first = _tables(path)
    with duckdb.connect(str(path)) as con:
        read = _ingest(con, this_month, TODAY, incremental=True)
    assert all(n == 0 for n, _ in read.values()), read
    second = _tables(path)
    assert [name for name in first if not second[name].equals(first[name])] == []


def test_a_changed_file_or_contract_is_read_again(months, tmp_path):
    _, this_month = months
    landing = tmp_path / "landing"
    shutil.copytree(this_month, landing)
    path = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        _ingest(con, landing, TODAY, incremental=True)
        first = sorted((landing / "school_attendance").glob("*.csv"))[0]
        first.write_text(first.read_text().replace("\n", "\r\n"))  # same rows, other bytes
        read = _ingest(con, landing, TODAY, incremental=True)
    assert read["school_attendance"][0] == read["school_attendance"][1], "every file read again after one changed"
    assert read["asb_incidents"][0] == 0
    # the same files under the contract as the IG lead edited it (its retention cut): every file
    # read again under it, and the table as a reading of every file under it leaves it
    contracts = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    edited = contracts / "ae_attendances.yaml"
    edited.write_text(edited.read_text().replace("value: 3\n    unit: y", "value: 2\n    unit: y", 1))
    contract = load_contracts(contracts)["ae_attendances"]
    assert contract.retention_years == 2, "not vacuous: the contract was edited"
    every = tmp_path / "every_file.duckdb"
    with duckdb.connect(str(path)) as con, duckdb.connect(str(every)) as cold:
        result = read_source(contract, landing, TODAY, previous_load(con, contract))
        write_source(con, contract, result, TODAY)
        assert result.files_read == len(result.files), "every file read again under the edited contract"
        write_source(cold, contract, read_source(contract, landing, TODAY, None), TODAY)
        removed = con.execute("SELECT rows_removed FROM retention_log WHERE source = 'ae_attendances' AND retention_years = 2").fetchall()
        assert removed and removed[0][0] > 0, "not vacuous: the shorter retention removed rows"
        assert con.sql("SELECT * FROM raw_ae_attendances").pl().equals(cold.sql("SELECT * FROM raw_ae_attendances").pl())


def test_a_file_sent_again_corrected_no_longer_replaces_the_kept_row_it_replaced(months, tmp_path):
    """A partner sends an earlier file again, corrected, under its name: the row that had replaced
    a kept file's row now holds another record. The kept row, gone from the warehouse, stands
    again, as a reading of every file has it: a replacement counts as loaded again only from the
    bytes that made it."""
    last_month, this_month = months
    before = tmp_path / "before.duckdb"
    with duckdb.connect(str(before)) as con:
        _ingest(con, last_month, TODAY - dt.timedelta(days=30), incremental=True)
        # a kept row that a row still held replaced, its key sent by no file after the replacement's
        files = [p.name for p in landing_files(this_month, "ae_attendances")]
        sent = {name: {line.split(",")[0] for line in (this_month / "ae_attendances" / name).read_text().splitlines()} for name in files}
        replaced = [
            (file, row, by_file, by_row) for file, row, by_file, by_row, key in con.execute(
                "SELECT s._file, s._row, s.replaced_by_file, s.replaced_by_row, r.attendance_id FROM superseded_rows s "
                "JOIN raw_ae_attendances r ON r._file = s.replaced_by_file AND r._row = s.replaced_by_row "
                "WHERE s.source = 'ae_attendances' ORDER BY s._file, s._row",
            ).fetchall() if not any(key in sent[later] for later in files[files.index(by_file) + 1:])
        ]
    assert replaced, "not vacuous: a row of one A&E file replaced by a row of the next, which no later file sends"
    first, kept_row, second, row = replaced[0]
    for way in ("a record corrected", "a record taken back"):
        landing = tmp_path / way
        shutil.copytree(this_month, landing)
        path = landing / "ae_attendances" / second
        lines = path.read_text().splitlines()
        # (the village's records are a line each)
        if way == "a record corrected":
            lines[row] = "ED_CORRECTED," + lines[row].split(",", 1)[1]  # the attendance's reference keyed wrong, now right
        else:
            del lines[row]
        path.write_text("\n".join(lines) + "\n")
        cold, monthly = tmp_path / f"{way}_cold.duckdb", tmp_path / f"{way}_monthly.duckdb"
        with duckdb.connect(str(cold)) as con:
            _ingest(con, landing, TODAY, incremental=False)
        shutil.copyfile(before, monthly)
        with duckdb.connect(str(monthly)) as con:
            read = _ingest(con, landing, TODAY, incremental=True)
            back = con.execute("SELECT count(*) FROM raw_ae_attendances WHERE _file = ? AND _row = ?", [first, kept_row]).fetchall()[0][0]
        assert read["ae_attendances"][0] > 0 and back == 1, (read["ae_attendances"], "the kept row replaced no longer stands again")
        expected, got = _tables(cold), _tables(monthly)
        for name in expected:
            assert got[name].equals(expected[name]), f"{way}: {name} differs from a reading of every file"


@pytest.fixture(scope="module")
def august(months, tmp_path_factory) -> Path:
    """Last month's run on last month's landing folder, made once: each way of running this month
    starts from a copy of its output folder (warehouse, Dagster instance, packs), as a council's
    folder stands after that run."""
    from pipelines.cli import run_pipeline

    out = tmp_path_factory.mktemp("august") / "out"
    assert run_pipeline(months[0], "2026-08", out).success
    return out


@pytest.mark.parametrize("oldest_gone", [False, True], ids=["every file still there", "each source's oldest file gone"])
def test_a_monthly_run_leaves_every_table_as_a_run_reading_every_file_does(months, august, tmp_path, oldest_gone):
    """The whole pipeline, last month then this month: taking unchanged files from the warehouse
    changes nothing downstream (persons, families, indicators, scores, lists) either; nor where
    each source's oldest file has gone from the landing folder since (the mentions of the files
    after it kept, their places in person_records moved up)."""
    from pipelines.cli import run_pipeline
    from tests.conftest import MONTH, run_from
    from tests.test_pipeline import warehouse_snapshot

    last_month, this_month = months
    if oldest_gone:
        gone = _oldest_gone(this_month, tmp_path / "landing")
        this_month = tmp_path / "landing"
    snapshots, validated, lines_matched, files_read = {}, {}, {}, {}
    for way, every_file in (("monthly", False), ("every file", True)):
        out = tmp_path / way.replace(" ", "_")
        run_from(august, out)
        result = run_pipeline(this_month, MONTH, out, read_every_file=every_file)
        assert result.success
        snapshots[way] = warehouse_snapshot(out / "warehouse.duckdb")
        checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        validated[way] = {
            c.asset_key.path[-1]: (c.metadata["validated_this_run"].value, c.metadata["files_validated_this_run"].value, c.metadata["rows_validated_this_run"].value)
            for c in checks if c.check_name == "meets_contract"
        }
        family_members = next(e.materialization for e in result.all_events if e.is_step_materialization and e.materialization.asset_key.path[-1] == "family_members")
        lines_matched[way] = family_members.metadata["address_lines_matched_afresh"].value
        files_read[way] = {
            e.materialization.asset_key.path[-1]: e.materialization.metadata["files_read"].value
            for e in result.all_events if e.is_step_materialization and "files_read" in e.materialization.metadata
        }
    monthly, every = snapshots["monthly"], snapshots["every file"]
    assert set(monthly) == set(every) and len(monthly) > 30
    for table, frame in every.items():
        assert monthly[table].equals(frame), table
    # a month matches to the gazetteer only the address lines new since last month
    assert 0 < lines_matched["monthly"] < lines_matched["every file"] / 2, lines_matched
    # reading every file validates every source's whole table; a month only the rows of the
    # files new since last month, and a source that sent none is not validated again
    con = duckdb.connect(str(tmp_path / "monthly" / "warehouse.duckdb"), read_only=True)
    whole = {c.raw_table: con.execute(f'SELECT count(DISTINCT _file), count(*) FROM "{c.raw_table}"').fetchall()[0] for c in load_contracts().values()}
    assert validated["every file"] == {table: (True, *counted) for table, counted in whole.items()}
    new_files = {c.raw_table: [p.name for p in landing_files(this_month, c.source) if not (last_month / c.source / p.name).exists()] for c in load_contracts().values()}
    changed = {table for table, files in new_files.items() if files}
    # the files read: those new since last month alone (the warehouse's for the rest)
    assert files_read["monthly"] == {table: len(files) for table, files in new_files.items()}
    assert changed and {t for t, (again, _, _) in validated["monthly"].items() if again} == changed
    for table in changed:
        rows = con.execute(f'SELECT count(*) FROM "{table}" WHERE _file IN (SELECT unnest(?))', [new_files[table]]).fetchall()[0][0]
        assert 0 < rows < whole[table][1] and validated["monthly"][table] == (True, len(new_files[table]), rows), table
    if oldest_gone:
        # the gone files' mentions left person_records, and the kept files' moved up a place
        places = "SELECT file, min(record_position) FROM person_records GROUP BY file"
        with duckdb.connect(str(august / "warehouse.duckdb"), read_only=True) as before:
            then = dict(before.execute(places).fetchall())
        now = dict(con.execute(places).fetchall())
        assert set(gone.values()) & set(then) and not set(gone.values()) & set(now)
        assert any(now[file] != then[file] for file in now if file in then), "not vacuous: kept files moved up a place"
    con.close()


def test_a_month_made_a_month_after_the_last_leaves_every_table_as_reading_every_file_does(months, tmp_path, monkeypatch):
    """Last month's run made on its own day, a month and more before this month's, as a council's
    is: files whose dates that day judged to be in the future load those rows now, rows pass
    retention between the two days; the month still leaves every table as a run reading every
    file does (but the day each file was checked, which a month keeps for the files it does not
    read again)."""
    from linkage.person_records import PERSON_RECORDS_MADE
    from pipelines.cli import run_pipeline
    from tests.conftest import MONTH, run_from
    from tests.test_pipeline import warehouse_snapshot

    last_month, this_month = months
    august = tmp_path / "august"
    monkeypatch.setenv("EARLYHELP_TODAY", "2026-09-05")
    assert run_pipeline(last_month, "2026-08", august).success
    monkeypatch.setenv("EARLYHELP_TODAY", TODAY.isoformat())
    snapshots, validated = {}, {}
    for way, every_file in (("monthly", False), ("every_file", True)):
        out = run_from(august, tmp_path / way)
        result = run_pipeline(this_month, MONTH, out, read_every_file=every_file)
        assert result.success
        snapshots[way] = {table: frame.drop("validated_on", strict=False) for table, frame in warehouse_snapshot(out / "warehouse.duckdb").items()}
        checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
        validated[way] = {c.asset_key.path[-1]: c.metadata["files_validated_this_run"].value for c in checks if c.check_name == "meets_contract"}
    # the month's suites validate the rows of every file read this month, the files read again
    # for a date now past among them (their rows can differ from the last reading's), and no other
    with duckdb.connect(str(tmp_path / "monthly" / "warehouse.duckdb"), read_only=True) as con:
        read_now = dict(con.execute(
            "SELECT c.raw_table, count(DISTINCT f.file) FROM landed_files f JOIN (SELECT unnest(?) AS source, unnest(?) AS raw_table) c USING (source) "
            "WHERE f.validated_on = ? AND f.status = 'loaded' AND f.loaded > 0 GROUP BY ALL",
            [[c.source for c in load_contracts().values()], [c.raw_table for c in load_contracts().values()], TODAY],
        ).fetchall())
    again = {t: n for t, n in read_now.items() if n > len([p for p in landing_files(this_month, t.removeprefix("raw_")) if not (last_month / t.removeprefix("raw_") / p.name).exists()])}
    assert again, "not vacuous: a source read files again that last month's run had loaded"
    assert {t: n for t, n in validated["monthly"].items() if n} == read_now, (validated["monthly"], read_now)
    # not vacuous: a file both runs loaded, unchanged, has rows loaded now that it had not then
    with duckdb.connect(str(august / "warehouse.duckdb"), read_only=True) as con:
        then = con.sql(f"SELECT source, file, sha256, rows_loaded FROM {PERSON_RECORDS_MADE}").pl()
    now = snapshots["monthly"][PERSON_RECORDS_MADE].join(then, on=["source", "file", "sha256"], suffix="_then")
    assert (now["rows_loaded"] > now["rows_loaded_then"]).any()
    monthly, every = snapshots["monthly"], snapshots["every_file"]
    assert set(monthly) == set(every) and len(monthly) > 30
    for table, frame in every.items():
        assert monthly[table].equals(frame), table


def _person_records(landing: Path, path: Path) -> pl.DataFrame:
    """person_records made from nothing: every file read, every mention made."""
    from linkage.person_records import PERSON_RECORDS, RECORD_POSITION, write_person_records

    with duckdb.connect(str(path)) as con:
        _ingest(con, landing, TODAY, incremental=False)
        write_person_records(con, list(load_contracts().values()), reuse=False)
        return con.sql(f"SELECT * FROM {PERSON_RECORDS} ORDER BY {RECORD_POSITION}").pl()


def test_linkage_compares_only_pairs_touching_a_new_profile_and_links_as_from_nothing(months, tmp_path, monkeypatch):
    """Last month's compared pairs are reused: only pairs touching a profile last month lacked are
    blocked and compared, and every link, score, review pair and model parameter is what linking
    this month's records from nothing gives. A change to the comparisons reuses nothing."""
    import linkage.model
    from linkage import link_persons
    from linkage.model import store_compared_pairs

    last_month, this_month = months
    before = link_persons(_person_records(last_month, tmp_path / "last.duckdb"))
    records = _person_records(this_month, tmp_path / "this.duckdb")
    afresh = link_persons(records)
    reusing = link_persons(records, compared=before.compared, groups=before.groups)
    assert reusing.person_links.equals(afresh.person_links)
    assert reusing.review_queue.equals(afresh.review_queue)
    assert reusing.pairs.sort(pl.all()).equals(afresh.pairs.sort(pl.all()))
    assert reusing.model.summary() == afresh.model.summary()
    how = ("profiles_compared_afresh", "groups_taken_apart_afresh")
    assert {k: v for k, v in reusing.stats.items() if k not in how} == {k: v for k, v in afresh.stats.items() if k not in how}
    order = ["digest_l", "digest_r"]
    assert reusing.compared.levels.sort(order).equals(afresh.compared.levels.sort(order))
    assert reusing.groups.groups.sort(pl.all()).equals(afresh.groups.groups.sort(pl.all()))
    # not vacuous: most profiles were compared last month, and some groups taken apart as they
    # stand (here last month lacks a year's file; a month's file changes fewer), which a run
    # from nothing does again
    assert 0 < reusing.stats["profiles_compared_afresh"] < afresh.stats["profiles"] / 2
    assert afresh.stats["profiles_compared_afresh"] == afresh.stats["profiles"]
    assert 0 < reusing.stats["groups_taken_apart_afresh"] < afresh.stats["groups_taken_apart_afresh"]
    # the pipeline's way: the levels handed on as Parquet files, never a frame, and the same links
    (tmp_path / "last").mkdir()
    (tmp_path / "this").mkdir()
    on_disk = link_persons(_person_records(last_month, tmp_path / "last.duckdb"), levels_to=tmp_path / "last")
    assert isinstance(on_disk.compared.levels, Path)
    from_disk = link_persons(records, compared=on_disk.compared, groups=on_disk.groups, levels_to=tmp_path / "this")
    assert from_disk.person_links.equals(afresh.person_links)
    assert from_disk.stats == reusing.stats
    # only the pairs compared now are handed on; the warehouse's table of last month's pairs,
    # updated with them, holds this month's
    added = pl.read_parquet(from_disk.compared.levels)
    assert from_disk.compared.added_to_last and 0 < added.height < afresh.compared.levels.height / 2
    with duckdb.connect(str(tmp_path / "pairs.duckdb")) as con:
        store_compared_pairs(con, "compared_pairs", on_disk.compared)
        assert con.sql("SELECT count(*) FROM compared_pairs").fetchall()[0][0] == pl.read_parquet(on_disk.compared.levels).height
        # a pair of a profile this month no longer has (a record past retention, say) goes
        con.execute("INSERT INTO compared_pairs SELECT * REPLACE (CAST(1 AS UBIGINT) AS digest_l) FROM compared_pairs LIMIT 1")
        store_compared_pairs(con, "compared_pairs", from_disk.compared)
        assert con.sql("SELECT * FROM compared_pairs").pl().sort(order).equals(afresh.compared.levels.sort(order))
    # a month whose profiles the last run mostly lacked compares every pair afresh (cheaper than
    # blocking the new against all), and links alike
    monkeypatch.setattr(linkage.model, "MIN_KNOWN_SHARE", 0.99)
    mostly_new = link_persons(records, compared=before.compared)
    assert mostly_new.stats["profiles_compared_afresh"] == afresh.stats["profiles"]
    assert mostly_new.person_links.equals(afresh.person_links)
    monkeypatch.undo()
    # comparisons changed since (here, in name): nothing the last run compared is taken
    monkeypatch.setattr(linkage.model, "_comparisons_version", lambda: "comparisons as they are after a change")
    changed = link_persons(records, compared=before.compared)
    assert changed.stats["profiles_compared_afresh"] == afresh.stats["profiles"]
    assert changed.person_links.equals(afresh.person_links)


def test_person_records_keep_unchanged_files_mentions_from_the_last_run(months, tmp_path):
    """The mentions of a file the last run made, unchanged and read the same way, stay as the
    warehouse holds them (those of its rows still loaded); the records are those made afresh."""
    from linkage.person_records import PERSON_RECORDS, PERSON_RECORDS_MADE, RECORD_POSITION, mentions_made, write_person_records

    last_month, this_month = months
    contracts = list(load_contracts().values())
    table = f"SELECT * FROM {PERSON_RECORDS} ORDER BY {RECORD_POSITION}"
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        _ingest(con, last_month, TODAY, incremental=True)
        write_person_records(con, contracts)
        read = _ingest(con, this_month, TODAY, incremental=True)
        # some kept files lost rows to the new month's (their mentions are looked up row by row),
        # others kept every row (their mentions are kept without)
        then = con.sql(f"SELECT source, file, rows_loaded FROM {PERSON_RECORDS_MADE}").pl()
        now = mentions_made(con, contracts).join(then, on=["source", "file"], suffix="_then")
        assert (now["rows_loaded"] < now["rows_loaded_then"]).any() and (now["rows_loaded"] == now["rows_loaded_then"]).any()
        by_source = write_person_records(con, contracts)
        kept_and_made = con.sql(table).pl()
        # changed in place, not written again: the new files' mentions follow every kept one in
        # the table, so its rows are out of person_records' order (record_position restores it)
        as_stored = con.sql(f"SELECT {RECORD_POSITION} FROM {PERSON_RECORDS}").pl().to_series()
        assert not as_stored.is_sorted() and as_stored.sort().equals(kept_and_made[RECORD_POSITION])
        # a sentinel in the table: it stays where the mentions are kept, so the next run's copy shows it
        con.execute(f"UPDATE {PERSON_RECORDS} SET role = 'KEPT' WHERE file = (SELECT max(file) FROM {PERSON_RECORDS})")
        write_person_records(con, contracts)
        reusing = con.sql(table).pl()
        # made another way (other code, another contract): nothing is kept
        con.execute(f"UPDATE {PERSON_RECORDS_MADE} SET made_with = 'other code'")
        write_person_records(con, contracts)
        otherwise = con.sql(table).pl()
        # asked to read every file: nothing is kept either
        con.execute(f"UPDATE {PERSON_RECORDS} SET role = 'KEPT' WHERE file = (SELECT max(file) FROM {PERSON_RECORDS})")
        write_person_records(con, contracts, reuse=False)
        every_file = con.sql(table).pl()
    afresh = _person_records(this_month, tmp_path / "afresh.duckdb")
    assert sum(n for n, _ in read.values()) > 0
    assert afresh.equals(afresh.sort("source", "file", "row")), "record_position numbers person_records' order: source, file, row"
    assert kept_and_made.equals(afresh), "kept and made, in person_records' order"
    assert by_source == dict(afresh.group_by("source").len().iter_rows())
    assert reusing.filter(pl.col("role") == "KEPT").height > 0, "not vacuous: some mentions were kept, not made"
    assert reusing.filter(pl.col("role") != "KEPT").equals(afresh.filter(pl.col("file") != afresh["file"].max()))
    assert otherwise.equals(afresh) and every_file.equals(afresh)


def test_person_records_of_a_kept_file_gain_the_rows_loaded_since(months, tmp_path):
    """A file the last run loaded can have rows loaded today that were not then, unchanged: a date
    the last run's day judged to be in the future is not one today (the file is read again, and
    its mentions are made again), or, the same day, a later file that had replaced some of its
    rows is gone (the file's own reading stands: its mentions are kept, and those of the rows it
    gained are made). Either way the records are those made afresh today."""
    from linkage.person_records import PERSON_RECORDS, PERSON_RECORDS_MADE, RECORD_POSITION, mentions_made, write_person_records

    last_month, this_month = months
    # this month less the A&E file that replaced rows of the one before it
    less_a_file = tmp_path / "less_a_file"
    shutil.copytree(this_month, less_a_file)
    sent = [p for p in landing_files(less_a_file, "ae_attendances") if p.name != RESTATED]
    sent[-1].unlink()
    contracts = list(load_contracts().values())
    table = f"SELECT * FROM {PERSON_RECORDS} ORDER BY {RECORD_POSITION}"
    for (before, day), after in (((last_month, TODAY - dt.timedelta(days=200)), this_month), ((this_month, TODAY), less_a_file)):
        with duckdb.connect(str(tmp_path / f"{after.name}.duckdb")) as con:
            _ingest(con, before, day, incremental=True)
            write_person_records(con, contracts)
            _ingest(con, after, TODAY, incremental=True)
            then = con.sql(f"SELECT source, file, sha256, validated_on, rows_loaded FROM {PERSON_RECORDS_MADE}").pl()
            now = mentions_made(con, contracts).join(then, on=["source", "file", "sha256"], suffix="_then")
            gained = now.filter(pl.col("rows_loaded") > pl.col("rows_loaded_then"))
            assert gained.height, "not vacuous: an unchanged file has more rows loaded today"
            # read again another day; the same day, its own reading kept
            assert (gained["validated_on"] != gained["validated_on_then"]).all() if day != TODAY else (gained["validated_on"] == gained["validated_on_then"]).all()
            write_person_records(con, contracts)
            kept_and_made = con.sql(table).pl()
            if day == TODAY:
                # a file's rows from another reading (another day, another contract) have their
                # mentions made again; the others' stay as the warehouse holds them
                kept = [f for (f,) in con.execute(f"SELECT file FROM {PERSON_RECORDS} WHERE source = 'school_attendance' GROUP BY file ORDER BY file LIMIT 3").fetchall()]
                con.execute(f"UPDATE {PERSON_RECORDS} SET role = 'KEPT' WHERE file IN (SELECT unnest(?))", [kept])
                con.execute("UPDATE landed_files SET validated_on = validated_on + 1 WHERE file = ?", [kept[0]])
                con.execute("UPDATE landed_files SET contract_sha256 = 'another contract' WHERE file = ?", [kept[1]])
                write_person_records(con, contracts)
                sentinels = dict(con.execute(f"SELECT file, count(*) FILTER (role = 'KEPT') FROM {PERSON_RECORDS} WHERE file IN (SELECT unnest(?)) GROUP BY file", [kept]).fetchall())
                assert sentinels[kept[0]] == sentinels[kept[1]] == 0 < sentinels[kept[2]], sentinels
        assert kept_and_made.equals(_person_records(after, tmp_path / f"{after.name}_afresh.duckdb")), after.name


def test_a_handoff_folder_is_private_and_what_a_killed_run_left_is_removed(tmp_path):
    """Pairs handed between the warehouse and the linkage as Parquet lie in a private folder beside
    the warehouse, gone afterwards; one a killed run left behind is removed by the next."""
    from warehouse import handoff_folder

    warehouse = tmp_path / "warehouse.duckdb"
    left = tmp_path / "warehouse.duckdb.tmp" / "handoff-killed"
    left.mkdir(parents=True)
    (left / "known_levels.parquet").write_bytes(b"left by a killed run")
    with handoff_folder(warehouse) as folder:
        assert folder.parent == tmp_path / "warehouse.duckdb.tmp"
        assert folder.stat().st_mode & 0o077 == 0 and folder.parent.stat().st_mode & 0o077 == 0
        assert not left.exists()
        (folder / "compared_levels.parquet").write_bytes(b"levels")
    assert not folder.exists()
