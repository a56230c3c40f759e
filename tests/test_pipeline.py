"""The pipeline through real Dagster materialisations, on a real DuckDB file and real files."""

from __future__ import annotations

import datetime as dt
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from pipelines.cli import instance_for, run_pipeline
from pipelines.definitions import defs
from tests.conftest import MONTH, REPO, run_from


def test_definitions_load():
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"raw_school_attendance", "raw_ae_attendances", "person_records"} <= keys
    assert defs.resolve_job_def("monthly_run") is not None
    checks = {k.name for k in graph.asset_check_keys}
    assert {"meets_contract", "rows_accounted_for", "source_received"} <= checks


@pytest.fixture(scope="module")
def village_run(september, tmp_path_factory):
    """The village's run from nothing (the session's), in this module's own folder: a test here runs it again."""
    result, out = september
    return result, run_from(out, tmp_path_factory.mktemp("run") / "out")


def test_village_runs_end_to_end(village_run, village):
    result, out = village_run
    assert result.success
    checks = [e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    errors = [c for c in checks if c.severity == dg.AssetCheckSeverity.ERROR]
    assert errors and all(c.passed for c in errors), [c.check_name for c in errors if not c.passed]
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    received = dict(con.execute("SELECT source, sum(received) FROM landed_files GROUP BY source").fetchall())
    truth = pl.read_csv(village / "truth.csv").group_by("source").len()
    reference = {s: received[s] for s in ("postcode_localities", "address_gazetteer")}
    assert received == {**dict(truth.iter_rows()), **reference}
    mentions = con.execute("SELECT count(*) FROM person_records").fetchall()[0][0]
    current = sum(con.execute(f"SELECT count(*) FROM raw_{s}").fetchall()[0][0] for s in truth["source"])
    assert mentions == current
    # the generator's keying errors: impossible dates quarantine their rows, nothing else does;
    # a broken postcode or identifier is set aside and its row is linked like any other
    hard = con.execute("SELECT DISTINCT reason FROM quarantine WHERE NOT regexp_matches(reason, 'NHS number|UPN|National Insurance|postcode')").fetchall()
    assert hard and all("is not a valid date" in r or "is not a valid timestamp" in r for (r,) in hard), hard
    assert con.execute("SELECT sum(received) - sum(loaded) - sum(quarantined) FROM landed_files WHERE status <> 'duplicate'").fetchall() == [(0,)]
    aside = con.sql("SELECT DISTINCT source, _file AS file, _row AS row FROM set_aside_fields").pl()
    linked = pl.read_parquet(out / "linked_records.parquet")
    assert aside.height > 0 and aside.join(linked, on=["source", "file", "row"], how="anti").is_empty()
    # retention runs every run, for the derived tables too
    assert con.execute("SELECT count(*) FROM audit_log WHERE action = 'retention applied'").fetchall() == [(1,)]
    derived = {r[0] for r in con.execute("SELECT source FROM retention_log").fetchall()}
    assert {"family_scores_history", "list_audit_members"} <= derived
    assert (out / "great_expectations").is_dir()
    docs = list((out / "great_expectations").rglob("index.html"))
    assert docs, "Data Docs are published"


def test_each_partner_gets_a_data_quality_report_with_rows_and_reasons_but_no_values(village_run):
    _, out = village_run
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        values = [v for (v,) in con.execute("SELECT value FROM set_aside_fields").fetchall()]
        expected = dict(con.execute(
            """SELECT source, sum(n) FROM (SELECT source, count(DISTINCT (_file, _row, "column", reason)) n FROM quarantine GROUP BY 1
               UNION ALL SELECT source, count(*) FROM set_aside_fields GROUP BY 1) GROUP BY 1"""
        ).fetchall())
        history = con.execute(f"SELECT count(*) FROM data_quality_history WHERE month = '{MONTH}'").fetchall()[0][0]
    finally:
        con.close()
    folder = out / "partner_reports" / MONTH
    assert values and history == len(list(folder.glob("*.csv")))
    for source in ("ae_attendances", "school_attendance"):
        rows = pl.read_csv(folder / f"{source}.csv")
        assert rows.columns == ["kind", "file", "row", "column", "reason"] and rows.height == expected[source]
        html = (folder / f"{source}.html").read_text()
        assert "set aside" in html and "Trend over the last runs" in html
        for text in (html, (folder / f"{source}.csv").read_text()):
            assert not any(v in text for v in values if len(v) > 3), "a value as sent reached the partner's report"


def test_every_file_and_folder_a_run_writes_is_its_owners_alone(village_run):
    """`find OUT -perm /077` prints nothing: the warehouse and its WAL, the Dagster instance,
    Data Docs, packs, reports, the IG pack, the spill folders."""
    from warehouse import spill_folder

    _, out = village_run
    shared = [p for p in [out, *out.rglob("*")] if p.stat().st_mode & 0o077]
    assert not shared, [str(p.relative_to(out)) for p in shared[:10]]
    assert len(list(out.rglob("*"))) > 20
    assert spill_folder().stat().st_mode & 0o077 == 0 and spill_folder().stat().st_uid == os.getuid()
    assert str(spill_folder()) != str(Path(tempfile.gettempdir()) / "earlyhelp-duckdb"), "not one folder for every user"


def test_tables_are_stored_in_full_row_groups_whatever_the_frame_or_parquet_they_come_from(tmp_path):
    """A frame of several chunks (as concatenated files leave it), and a Parquet file in
    ROW_GROUP_ROWS-row groups, are stored in full row groups: a part-filled one before the last is
    rewritten by the checkpoint when the connection closes (seconds at 1.2M residents). Also
    checks ROW_GROUP_ROWS against DuckDB's own row groups."""
    from warehouse import ROW_GROUP_ROWS, open_warehouse, replace_tables

    def row_groups(con, table):
        return [n for _, n in con.execute(f"SELECT row_group_id, max(count) FROM pragma_storage_info('{table}') WHERE column_id = 0 GROUP BY 1 ORDER BY 1").fetchall()]

    chunks = pl.concat(
        [pl.DataFrame({"k": range(i * 70_000, (i + 1) * 70_000), "name": [f"name {j}" for j in range(70_000)]}) for i in range(6)], rechunk=False
    )
    assert chunks.n_chunks() == 6, "not vacuous: the frame comes in pieces"
    handoff = tmp_path / "handoff.parquet"
    chunks.write_parquet(handoff, row_group_size=ROW_GROUP_ROWS)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        replace_tables(con, {"from_frame": chunks, "from_parquet": handoff})
        for table in ("from_frame", "from_parquet"):
            groups = row_groups(con, table)
            assert sum(groups) == chunks.height
            assert groups[:-1] == [ROW_GROUP_ROWS] * (len(groups) - 1), (table, groups)


def test_every_duckdb_database_a_run_opens_is_capped_and_spills_to_a_private_folder(tmp_path, monkeypatch):
    """The README's promise: 1536 MB a database unless EARLYHELP_DUCKDB_MEMORY says otherwise, the
    warehouse spilling beside itself and the scratch database to the user's own folder."""
    from warehouse import DEFAULT_MEMORY, MEMORY_ENV, open_warehouse, scratch, spill_folder

    def limit(setting: str) -> str:
        con = duckdb.connect()
        con.execute(f"SET memory_limit = '{setting}'")
        return con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    assert DEFAULT_MEMORY == "1536MB"
    assert limit(DEFAULT_MEMORY) != duckdb.connect().execute("SELECT current_setting('memory_limit')").fetchall()[0][0], "not vacuous"
    monkeypatch.delenv(MEMORY_ENV, raising=False)
    with open_warehouse(tmp_path / "w.duckdb") as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == limit(DEFAULT_MEMORY)
        assert con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0] == str(tmp_path / "w.duckdb.tmp")
    assert (tmp_path / "w.duckdb.tmp").stat().st_mode & 0o077 == 0
    con = scratch()
    try:
        assert con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0] == str(spill_folder())
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] in {limit(DEFAULT_MEMORY), limit(os.environ.get(MEMORY_ENV, DEFAULT_MEMORY))}
    finally:
        con.close()
    monkeypatch.setenv(MEMORY_ENV, "2GB")
    with open_warehouse(tmp_path / "w.duckdb") as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == limit("2GB")


def test_a_held_warehouse_gives_each_step_a_connection_of_its_own_and_lets_go_of_what_it_read(tmp_path, monkeypatch):
    """A run holds its warehouse open (`HeldWarehouse`) rather than opening the file for every step:
    each step's connection sees every table and none of another's temporary ones, capped as
    `open_warehouse` caps it; between steps the changes are in the file and DuckDB keeps no table
    block a step read, as when the file was closed; let go, the file opens as any file does."""
    from warehouse import DEFAULT_MEMORY, MEMORY_ENV, HeldWarehouse

    monkeypatch.delenv(MEMORY_ENV, raising=False)
    path = tmp_path / "w.duckdb"
    held = HeldWarehouse(path)

    def blocks_held(con) -> int:
        return con.execute("SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() WHERE tag = 'BASE_TABLE'").fetchall()[0][0]

    with held.connection() as con:
        # hashes, which DuckDB cannot compress: 32 MB of table blocks to read back
        con.execute("CREATE TABLE mentions AS SELECT range AS n, hash(range) AS h FROM range(4000000)")
        con.execute("CREATE TEMP TABLE this_steps_own AS SELECT 1 AS x")
        cap = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    # the step's changes are in the file when it ends, as when it closed the file
    wal = tmp_path / "w.duckdb.wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with held.connection() as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'this_steps_own'").fetchall()[0][0] == 0
        assert con.execute("SELECT count(*), count(DISTINCT h) FROM mentions").fetchall()[0] == (4000000, 4000000)
        read = blocks_held(con)
    with held.connection() as con:
        kept = blocks_held(con)
        assert con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == cap
    assert read > 16 * 2**20, "not vacuous: the step read the table's blocks"
    assert kept < read / 4
    reference = duckdb.connect()
    reference.execute(f"SET memory_limit = '{DEFAULT_MEMORY}'")
    assert cap == reference.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
    held.close()
    assert not (tmp_path / "w.duckdb.wal").exists()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM mentions").fetchall()[0][0] == 4000000
    with pytest.raises(RuntimeError, match="no longer held"):
        with held.connection():
            pass


def test_a_run_opens_its_warehouse_once_and_leaves_it_whole(village_run, village, tmp_path, monkeypatch):
    """Every step of a run in one process reads and writes the warehouse the run opened (60 times a
    run before, 20-25 ms each at 1.2M residents, and a checkpoint each time it closed); when the
    run ends it is let go, with nothing left in its write-ahead log."""
    import warehouse

    _, out = village_run
    out = run_from(out, tmp_path / "out")
    opened = []
    connect = warehouse._connect

    def counted(path, read_only, key):
        if Path(path) == out / "warehouse.duckdb":
            opened.append(read_only)
        return connect(path, read_only, key)

    monkeypatch.setattr(warehouse, "_connect", counted)
    assert run_pipeline(village, MONTH, out).success
    # the run's own opening, and the audit entry written after it (`audit_run`)
    assert len(opened) == 2, opened
    assert not (out / "warehouse.duckdb.wal").exists()
    with duckdb.connect(str(out / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM audit_log").fetchall()[0][0] > 0


def test_a_spill_folder_someone_else_owns_is_refused(tmp_path):
    from warehouse import UnsafeFolder, private_folder

    theirs = tmp_path / "theirs"
    theirs.mkdir()
    if os.getuid() != 0:
        pytest.skip("only root can give a folder to another user here")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(UnsafeFolder, match="belongs to another user"):
        private_folder(theirs)
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    assert private_folder(loose).stat().st_mode & 0o777 == 0o700


#: Tables that record when and by which run, so differ between reruns by design; with the
#: columns that do (the rest of each must still match).
RUN_STAMPED = {
    "audit_log": None, "retention_log": None, "landed_files": ["ingested_at"], "list_audit": ["run_id", "produced_at"],
    "scorecard_evaluation": ["evaluated_at"],
}


def warehouse_snapshot(path) -> dict[str, pl.DataFrame]:
    """Every table of a warehouse, ordered, without the columns that stamp a run."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall()]
        snapshot = {}
        for table in tables:
            if table in RUN_STAMPED and RUN_STAMPED[table] is None:
                continue
            frame = con.sql(f'SELECT * FROM "{table}"').pl().drop(RUN_STAMPED.get(table) or [])
            snapshot[table] = frame.sort(frame.columns) if frame.width and all(not isinstance(t, (pl.List, pl.Struct)) for t in frame.dtypes) else frame
        return snapshot
    finally:
        con.close()


def test_rerun_gives_identical_tables(village_run, village):
    _, out = village_run
    before = warehouse_snapshot(out / "warehouse.duckdb")
    assert len(before) > 30
    assert run_pipeline(village, MONTH, out).success
    after = warehouse_snapshot(out / "warehouse.duckdb")
    assert set(after) == set(before)
    for table, frame in before.items():
        assert after[table].equals(frame), table


def test_steps_run_apart_leave_every_table_and_pack_as_steps_in_the_runs_process(village_run, village, tmp_path, monkeypatch):
    """Heavy steps run in child processes when asked (pipelines/apart.py): the village gets the same
    warehouse and the same packs as its run in one process."""
    _, out = village_run
    monkeypatch.setenv("EARLYHELP_STEPS_APART", "1")
    apart = tmp_path / "apart"
    result = run_pipeline(village, MONTH, apart)
    assert result.success
    with instance_for(apart) as instance:
        logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert "heavy steps run in child processes of their own" in logged
    before, after = warehouse_snapshot(out / "warehouse.duckdb"), warehouse_snapshot(apart / "warehouse.duckdb")
    assert set(after) == set(before) and len(before) > 30
    for table, frame in before.items():
        assert after[table].equals(frame), table
    packs = sorted(p.relative_to(out) for p in (out / "packs" / MONTH).glob("*.csv"))
    assert packs and packs == sorted(p.relative_to(apart) for p in (apart / "packs" / MONTH).glob("*.csv"))
    for pack in packs:
        assert (apart / pack).read_bytes() == (out / pack).read_bytes(), pack


def test_subject_access_finds_every_row_linked_to_the_person(village_run, village, tmp_path):
    _, out = village_run
    truth = pl.read_csv(village / "truth.csv", infer_schema=False)
    # a person seen by three or more sources
    spread = truth.group_by("person_id").agg(pl.col("source").n_unique().alias("sources"), pl.len().alias("rows")).filter(pl.col("sources") >= 3).sort("rows", "person_id")
    person = spread["person_id"][0]
    mine = truth.filter(pl.col("person_id") == person)
    first = mine.filter(pl.col("source") == "school_attendance").vstack(mine.filter(pl.col("source") != "school_attendance")).row(0, named=True)
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    raw = con.execute(f'SELECT forename, surname, dob FROM "raw_{first["source"]}" WHERE _file = ? AND _row = ?', [first["file"], int(first["row"])]).fetchall()[0]
    con.close()
    reference = "TEST-SAR-1"
    from governance.subject_access import find_candidates
    from pipelines.cli import main

    request = ["subject-access", "--out", str(out), "--forename", raw[0], "--surname", raw[1], "--dob", raw[2].isoformat(), "--reference", reference]
    assert main(request) == 0 and not (out / "subject_access" / reference).exists(), "candidates are listed, nothing exported yet"
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        candidates = find_candidates(con, raw[0], raw[1], raw[2])
        # as linkage finds people: a birth date with day and month transposed, names in capitals
        swapped = raw[2].replace(month=raw[2].day, day=raw[2].month) if raw[2].day <= 12 and raw[2].day != raw[2].month else raw[2]
        loose = find_candidates(con, raw[0].upper(), raw[1].upper(), swapped)
        linked = con.sql(
            f"SELECT DISTINCT person_id FROM person_links JOIN person_records USING (record_key) WHERE source = '{first['source']}' AND file = ? AND row = ?",
            params=[first["file"], int(first["row"])],
        ).fetchall()[0][0]
    finally:
        con.close()
    assert candidates["person_id"][0] == linked and candidates["probability"][0] > 0.99
    assert linked in loose["person_id"].to_list()
    assert main([*request, "--person", linked]) == 0
    folder = out / "subject_access" / reference
    exported = pl.concat(
        [pl.read_csv(p, infer_schema=False).select("source", "_file", "_row") for p in folder.glob("source_*.csv")]
    )
    truth_rows = set(mine.select("source", "file", "row").iter_rows())
    found = set(exported.iter_rows())
    assert len(truth_rows & found) >= 0.9 * len(truth_rows), "the export holds the person's rows across sources"
    assert exported.select("source").n_unique() >= 3
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.iterdir())
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    audit = con.execute("SELECT detail FROM audit_log WHERE action LIKE 'subject access %'").fetchall()
    con.close()
    assert len(audit) == 2 and all(reference in d for (d,) in audit) and not any(raw[1] in d for (d,) in audit)
    derived = {p.name for p in folder.glob("derived_*.csv")}
    assert {"derived_family_membership.csv", "derived_family_score_history.csv"} <= derived
    # where the council's gazetteer placed them: every match of every record of theirs
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    matched = con.sql("SELECT a.record_key, a.uprn FROM address_matches a JOIN person_links USING (record_key) WHERE person_id = ? ORDER BY 1", params=[linked]).pl()
    read = con.sql("SELECT h.record_key FROM household_addresses h JOIN person_links USING (record_key) WHERE person_id = ? ORDER BY 1", params=[linked]).pl()
    con.close()
    assert matched.height > 0, "the village's gazetteer matches this person's addresses"
    assert pl.read_csv(folder / "derived_address_matches.csv", infer_schema=False).select("record_key", "uprn").equals(matched.cast(pl.String))
    exported_read = folder / "derived_addresses_read.csv"
    assert (pl.read_csv(exported_read, infer_schema=False).select("record_key").equals(read) if read.height else not exported_read.exists())


def test_a_run_killed_half_way_leaves_the_previous_outputs_and_the_next_run_completes(village, august, listed, tmp_path):
    """kill -9 during a run for a new month: every table is still readable and is either the
    previous run's or the new run's whole; files are never half written; the rerun completes
    and matches a clean run of that month."""
    import signal

    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    out = run_from(august, tmp_path / "out")
    previous = warehouse_snapshot(out / "warehouse.duckdb")
    run = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "run", "--landing", str(landing), "--month", MONTH, "--out", str(out), "-v", "--log-level", "DEBUG"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    # killed as the indicators step starts: linkage's tables are this month's, the rest last month's
    for line in run.stderr:
        if " - indicators - STEP_START" in line:
            break
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert run.returncode == -signal.SIGKILL
    killed = warehouse_snapshot(out / "warehouse.duckdb")
    for path in out.rglob("*.parquet"):
        pl.read_parquet(path)  # never half written
    # a clean run of the two months: the session's (`listed`), on the same files
    new = warehouse_snapshot(listed / "warehouse.duckdb")
    assert set(killed) == set(previous)
    for table, frame in killed.items():
        assert frame.equals(previous[table]) or frame.equals(new[table]), f"{table} is neither last month's nor this month's whole"
    assert killed["family_members"].equals(new["family_members"]) and not new["family_members"].equals(previous["family_members"])
    assert killed["family_scores"].equals(previous["family_scores"]) and not new["family_scores"].equals(previous["family_scores"])
    assert run_pipeline(landing, MONTH, out).success
    recovered = warehouse_snapshot(out / "warehouse.duckdb")
    for table, frame in new.items():
        assert recovered[table].equals(frame), table


def _county_people(village) -> tuple[set[str], set[str]]:
    """Every surname (5+ letters, so it cannot match an ordinary word) and date of birth the
    county's partners sent, as they appear in outputs (upper or title case; ISO dates)."""
    surnames, dobs = set(), set()
    for path in village.glob("*/*.csv"):
        frame = pl.read_csv(path, infer_schema=False)
        for column in frame.columns:
            upper = column.upper()
            if "SURNAME" in upper or "FAMILY_NAME" in upper or upper in ("LAST_NAME", "LASTNAME"):
                surnames |= {s.strip() for s in frame[column].drop_nulls().to_list() if len(s.strip()) > 4 and s.strip().isalpha()}
            if "BIRTH" in upper or upper in ("DOB", "D_O_B"):
                for value in frame[column].drop_nulls().to_list():
                    digits = "".join(ch for ch in value if ch.isdigit())
                    if len(digits) == 8:  # yyyymmdd or ddmmyyyy, written back as ISO
                        iso = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}" if digits[:2] in ("19", "20") else f"{digits[4:]}-{digits[2:4]}-{digits[:2]}"
                        dobs.add(iso)
    # surnames that are also words of the project's own text (Young, Green...) cannot be told apart
    vocabulary = " ".join(
        p.read_text(errors="replace") for folder in ("pipelines", "governance", "models", "features", "linkage", "ingestion", "data_contracts")
        for p in (REPO / folder).rglob("*") if p.suffix in (".py", ".yaml")
    )
    return {v for s in surnames for v in (s.upper(), s.title()) if s.title() not in vocabulary and s.lower() not in vocabulary}, dobs


def test_no_personal_data_in_logs_metadata_errors_data_docs_or_documents(village_run, village):
    """The PII search: the county's surnames and dates of birth must not appear in the Dagster
    event log (messages and every event's metadata), error and reason texts, the audit and
    retention logs, Great Expectations Data Docs, or any document meant to carry no personal
    data (IG pack, ATRS record, model card, linkage report, summary pages, outcomes report)."""
    result, out = village_run
    surnames, dobs = _county_people(village)
    assert len(surnames) > 200 and len(dobs) > 500
    with dg.DagsterInstance.from_config(str(out / ".dagster")) as instance:
        events = " ".join(str(r.dagster_event.event_specific_data) + " " + (r.user_message or "") if r.dagster_event else (r.user_message or "") for r in instance.all_logs(result.run_id))
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    logs = " ".join(
        str(row) for query in (
            "SELECT message, ignored_columns FROM landed_files", "SELECT reason, \"column\" FROM quarantine",
            "SELECT * FROM audit_log", "SELECT * FROM retention_log", "SELECT issue FROM decision_discrepancies",
        ) for row in con.execute(query).fetchall()
    )
    con.close()
    docs_folder = out / "great_expectations"
    data_docs = " ".join(p.read_text(errors="replace") for p in docs_folder.rglob("*") if p.is_file() and p.suffix in (".html", ".json"))
    assert "<html" in data_docs.lower()
    documents = {
        p.relative_to(out).as_posix(): p.read_text(errors="replace")
        for pattern in ("governance/*", "model_card.*", "linkage_report.html", "packs/*/summary.html", "outcomes/*/*")
        for p in out.glob(pattern) if p.is_file()
    }
    assert {"governance/ig_pack.html", "governance/atrs_record.md", "linkage_report.html"} <= set(documents)
    for where, text in {"dagster events": events, "log tables": logs, "data docs": data_docs, **documents}.items():
        leaked = sorted(s for s in surnames if s in text)
        assert not leaked, f"{where} holds {len(leaked)} surnames"
    for where, text in {"dagster events": events, "log tables": logs, "data docs": data_docs}.items():
        leaked = sorted(d for d in dobs if d in text)
        assert not leaked, f"{where} holds {len(leaked)} dates of birth"


def test_missing_source_blocks_person_records(village, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    shutil.rmtree(landing / "worklessness")
    result = run_pipeline(landing, MONTH, tmp_path / "out")
    assert not result.success
    failed = {
        (e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name)
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    }
    assert ("raw_worklessness", "source_received") in failed
    materialised = {e.asset_key.to_user_string() for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert "raw_school_attendance" in materialised and "person_records" not in materialised


def test_a_sources_checks_run_as_one_step_and_any_one_alone(village_run, tmp_path):
    """Each source's four checks are one step of the run (each evaluated, under its own name), and
    any one of them can be run by itself, as from the UI's checks tab: only it is evaluated."""
    from data_contracts import load_contracts
    from pipelines.definitions import ALL_ASSETS, ALL_CHECKS
    from pipelines.resources import EarlyhelpSettings

    result, out = village_run
    evaluated = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            check = event.asset_check_evaluation_data
            evaluated.setdefault(event.step_key, set()).add((check.asset_key.to_user_string(), check.check_name))
    four = {"meets_contract", "rows_accounted_for", "source_received", "quarantine_share"}
    for contract in load_contracts().values():
        assert evaluated[f"{contract.raw_table}_checks"] == {(contract.raw_table, name) for name in four}, contract.source
    copy = tmp_path / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".run.lock"))
    key = dg.AssetCheckKey(dg.AssetKey("raw_worklessness"), "rows_accounted_for")
    job = dg.define_asset_job("one_check", selection=dg.AssetSelection.checks(key))
    settings = EarlyhelpSettings(landing_dir=str(tmp_path / "unused"), output_dir=str(copy), month=MONTH)
    alone = dg.Definitions(assets=ALL_ASSETS, asset_checks=ALL_CHECKS, jobs=[job], resources={"settings": settings}).resolve_job_def(job.name).execute_in_process()
    [check] = [e.asset_check_evaluation_data for e in alone.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    rows = duckdb.connect(str(copy / "warehouse.duckdb"), read_only=True).execute("SELECT count(*) FROM raw_worklessness").fetchall()[0][0]
    assert (check.check_name, check.passed, check.metadata["current_rows"].value) == ("rows_accounted_for", True, rows)


def test_a_council_without_the_optional_sources_of_spec_v2_still_runs(village, tmp_path):
    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    for optional in ("front_door_contacts", "address_gazetteer"):
        shutil.rmtree(landing / optional)
    result = run_pipeline(landing, MONTH, tmp_path / "out")
    assert result.success
    con = duckdb.connect(str(tmp_path / "out" / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM family_indicators WHERE indicator_id = 'repeated_front_door_nfa'").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM address_matches").fetchall() == [(0,)], "households from partners' addresses alone"
    assert con.execute("SELECT count(*) FROM locality_lists").fetchall()[0][0] > 0


def test_cli_generate_and_run(tmp_path):
    landing, out = tmp_path / "landing", tmp_path / "out"
    cli = [sys.executable, "-m", "pipelines.cli"]
    gen = subprocess.run([*cli, "generate", "--people", "600", "--seed", "2", "--month", MONTH, "--out", str(landing)], capture_output=True, text=True)
    assert gen.returncode == 0, gen.stderr
    assert "600 residents" in gen.stdout
    run = subprocess.run([*cli, "run", "--landing", str(landing), "--month", MONTH, "--out", str(out)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "succeeded" in run.stdout and "ae_attendances" in run.stdout and "quarantined" in run.stdout
    # a run an analyst can watch: a line per step, the job the UI knows, where the packs and the log are
    steps = re.findall(r"^\[\s*(\d+)/(\d+)\] (\S+)\s+done", run.stderr, re.M)
    assert steps and len(steps) == int(steps[0][1]) and [int(n) for n, _, _ in steps] == list(range(1, len(steps) + 1))
    assert {"person_links", "locality_lists", "governance_pack"} <= {step for _, _, step in steps}
    assert " - dagster - " not in run.stderr, "Dagster's own log goes to the file unless -v"
    assert "(monthly_run) succeeded" in run.stdout and f"Packs for the meetings: {out / 'packs' / MONTH}" in " ".join(run.stdout.split())
    # the model orders no list by default, so it is not evaluated, and the summary says why and how to ask
    assert re.search(r"^Model card: +none: not evaluated: no list in this run is ordered by the model.*--retrain-model", run.stdout, re.M), run.stdout
    log = Path(re.search(r"Dagster's log of the run: (\S+)", run.stdout).group(1))
    assert log.parent == out / "logs" and "STEP_SUCCESS" in log.read_text() and "person_links" in log.read_text()
    assert log.stat().st_mode & 0o077 == 0 and log.parent.stat().st_mode & 0o077 == 0, "the run's log is owner-only"
    again = subprocess.run([*cli, "run", "--landing", str(landing), "--month", MONTH, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 0 and re.search(r"\] governance_pack\s+done.*about 0s left", again.stderr), "the second run estimates from the first"
    evaluate = subprocess.run([*cli, "evaluate", "--landing", str(landing), "--out", str(out)], capture_output=True, text=True)
    assert evaluate.returncode == 0 and "person" in evaluate.stdout and "family" in evaluate.stdout
    report = (out / "linkage_report.html").read_text()
    assert "<svg" in report and "Link rates between sources" in report
    names = pl.read_csv(next((landing / "ae_attendances").glob("*.csv")), infer_schema=False)["PERSON_FAMILY_NAME"]
    assert not [n for n in names.unique().to_list() if len(n) > 4 and n.upper() in report], "the report holds no names"
    assert (out / "linked_records.parquet").stat().st_mode & 0o077 == 0, "outputs naming people are owner-only"
    bad = subprocess.run([*cli, "run", "--landing", str(landing), "--month", "2026-13", "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr


def test_every_option_says_what_it_does_and_the_version_is_given():
    import argparse

    from pipelines.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"earlyhelp {name} {'/'.join(action.option_strings)} has no help text"
    version = subprocess.run([sys.executable, "-m", "pipelines.cli", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and re.fullmatch(r"earlyhelp \d+\.\d+\.\d+\s*", version.stdout)


def test_data_docs_open_without_internet_and_show_what_was_observed(village_run):
    from data_contracts import load_contracts

    _, out = village_run
    index = (out / "great_expectations" / "index.html").read_text()
    assert not re.search(r"<(script|link|img)\b", index), "nothing fetched: it opens on a machine without internet"
    for source in load_contracts():
        assert f'id="{source}"' in index
    assert re.search(r"<td>\d[\d,]* of \d[\d,]* rows failing \(\d+\.\d\d%\)</td>", index), "observed counts, not just passed or failed"
    for link in re.findall(r'href="(gx/[^"]+)"', index):
        assert (out / "great_expectations" / link).is_file()


def _quality(result) -> dict:
    for event in result.all_events:
        if event.event_type_value == "ASSET_MATERIALIZATION" and event.asset_key.to_user_string() == "linkage_quality":
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError("linkage_quality was not materialised")


def test_linkage_quality_is_measured_against_truth(village_run):
    result, out = village_run
    quality = _quality(result)
    assert quality["person_f1"] >= 0.99
    assert quality["family_f1"] >= 0.93
    linked = pl.read_parquet(out / "linked_records.parquet")
    assert linked.columns == ["source", "file", "row", "person_id", "family_id", "match_probability"]
    assert linked["person_id"].null_count() == 0 and linked["family_id"].null_count() == 0


def test_twins_and_same_name_parent_and_child_are_never_merged(village_run, village):
    _, out = village_run
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    records = con.sql("SELECT source, file, row, forename, surname, dob FROM person_records").pl()
    linked = pl.read_parquet(out / "linked_records.parquet")
    truth = pl.read_csv(village / "truth.csv").rename({"person_id": "true_person", "family_id": "true_family"})
    frame = records.join(linked, on=["source", "file", "row"]).join(truth, on=["source", "file", "row"])
    people = frame.group_by("true_person").agg(
        pl.col("true_family").first(), pl.col("dob").drop_nulls().mode().first(), pl.col("forename").mode().first(), pl.col("surname").mode().first()
    )
    pairs = people.join(people, on="true_family", suffix="_b").filter(pl.col("true_person") < pl.col("true_person_b"))
    twins = pairs.filter((pl.col("dob") == pl.col("dob_b")) & (pl.col("forename") != pl.col("forename_b")))
    namesakes = pairs.filter((pl.col("forename") == pl.col("forename_b")) & (pl.col("surname") == pl.col("surname_b")) & (pl.col("dob") != pl.col("dob_b")))
    assert twins.height > 0 and namesakes.height > 0, "the village should hold both cases"
    persons_of = frame.group_by("true_person").agg(pl.col("person_id").unique())
    lookup = {p: set(ids) for p, ids in persons_of.iter_rows()}
    for case in (twins, namesakes):
        for a, b in case.select("true_person", "true_person_b").iter_rows():
            assert not lookup[a] & lookup[b], f"true persons {a} and {b} were merged"


def test_a_new_month_keeps_references(village, tmp_path):
    """Run the month before on the data known then, then this month on everything: records keep
    their person ids, and families whose members are unchanged keep their reference."""
    earlier = tmp_path / "earlier"
    cutoff = "2026-08-31"
    date_columns = {
        "school_attendance": None, "asb_incidents": "INCIDENT_DATE", "domestic_abuse": "INCIDENT_DATETIME",
        "ae_attendances": "ARRIVAL_DATE", "worklessness": "CLAIM_START", "open_cases": "OPEN_DATE",
    }
    shutil.copytree(village, earlier)
    for source, column in date_columns.items():
        for path in (earlier / source).glob("*.csv"):
            frame = pl.read_csv(path, infer_schema=False)
            if column == "ARRIVAL_DATE":
                frame = frame.filter(pl.col(column) <= cutoff.replace("-", ""))
            elif column == "CLAIM_START":
                frame = frame.filter(pl.col(column).str.to_date("%d-%b-%Y") <= dt.date.fromisoformat(cutoff))
            elif column:
                frame = frame.filter(pl.col(column).str.slice(0, 10) <= cutoff)
            frame.write_csv(path)
    out = tmp_path / "out"
    assert run_pipeline(earlier, "2026-08", out).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    before_people = con.sql("SELECT record_key, person_id FROM person_links").pl()
    before_families = con.sql("SELECT family_ref, list_sort(list(person_id)) AS members FROM family_members GROUP BY family_ref").pl()
    con.close()
    assert run_pipeline(village, MONTH, out).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    after_people = con.sql("SELECT record_key, person_id FROM person_links").pl()
    after_families = con.sql("SELECT family_ref, list_sort(list(person_id)) AS members FROM family_members GROUP BY family_ref").pl()
    kept = before_people.join(after_people, on="record_key", suffix="_after")
    assert kept.height > 0.9 * before_people.height
    # a person whose earlier records are still exactly one person keeps the id; the rest are
    # merges and splits that the new month's evidence decided
    same_records = (
        kept.group_by("person_id").agg(pl.col("person_id_after").n_unique().alias("now_in"), pl.col("person_id_after").first())
        .filter(pl.col("now_in") == 1)
        .join(kept.group_by("person_id_after").agg(pl.col("person_id").n_unique().alias("was_in")), on="person_id_after")
        .filter(pl.col("was_in") == 1)
    )
    assert same_records.height > 0.95 * before_people["person_id"].n_unique()
    assert (same_records["person_id"] == same_records["person_id_after"]).all()
    unchanged = before_families.join(after_families, on="members", suffix="_after")
    assert unchanged.height > 0.8 * before_families.height
    assert (unchanged["family_ref"] == unchanged["family_ref_after"]).all()


def test_a_reviewers_match_and_non_match_are_honoured_on_the_next_run(village, september, tmp_path):
    out = run_from(september[1], tmp_path / "out")
    con = duckdb.connect(str(out / "warehouse.duckdb"))
    try:
        left, right = con.execute("SELECT record_key_l, record_key_r FROM review_queue ORDER BY match_probability DESC, 1, 2 LIMIT 1").fetchall()[0]
        # two mentions one person was linked from, described differently (so two profiles)
        apart = con.execute(
            """SELECT a.record_key, b.record_key FROM person_links la JOIN person_links lb ON la.person_id = lb.person_id AND la.record_key < lb.record_key
               JOIN person_records a ON a.record_key = la.record_key JOIN person_records b ON b.record_key = lb.record_key
               WHERE a.postcode IS DISTINCT FROM b.postcode AND a.forename = b.forename ORDER BY 1, 2 LIMIT 1"""
        ).fetchall()[0]
        person = dict(con.execute("SELECT record_key, person_id FROM person_links").fetchall())
        assert person[left] != person[right] and person[apart[0]] == person[apart[1]]
        con.execute("CREATE TABLE review_decisions (record_key_l VARCHAR, record_key_r VARCHAR, decision VARCHAR)")
        con.execute("INSERT INTO review_decisions VALUES (?, ?, 'MATCH'), (?, ?, 'NON_MATCH')", [left, right, *apart])
    finally:
        con.close()
    assert run_pipeline(village, MONTH, out).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        person = dict(con.execute("SELECT record_key, person_id FROM person_links").fetchall())
        queued = con.execute("SELECT count(*) FROM review_queue WHERE record_key_l = ? AND record_key_r = ?", [left, right]).fetchall()[0][0]
    finally:
        con.close()
    assert person[left] == person[right], "MATCH: one person now"
    assert person[apart[0]] != person[apart[1]], "NON_MATCH: two persons now"
    assert queued == 0, "a decided pair leaves the review queue"


def test_no_personal_data_where_things_go_wrong(village, tmp_path):
    """The PII search again, on a run where things go wrong: a refused file (a column missing)
    full of names, set-aside fields and quarantined rows, and a step that fails with a traceback
    (a council's registry naming a column no contract has); searched: the Dagster event log with
    every error and its stack, the compute logs, the ledger tables' messages and reasons, the
    partner reports, the summary's outputs."""
    import yaml

    from features.registry import DEFAULT_REGISTRY

    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    source = next((landing / "asb_incidents").glob("*.csv"))
    refused = pl.read_csv(source, infer_schema=False).drop("INCIDENT_DATE")
    refused.write_csv(landing / "asb_incidents" / "zz_no_dates.csv")
    document = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    document["indicators"][0]["where"] = "no_such_column = 1"  # passes the registry's checks, fails in DuckDB
    document["indicators"][0]["kind"] = "count"
    document["indicators"][0].pop("terms", None)
    registry = tmp_path / "broken.yaml"
    registry.write_text(yaml.safe_dump(document, sort_keys=False))
    out = tmp_path / "out"
    shown = io.StringIO()
    result = run_pipeline(landing, MONTH, out, registry=registry, progress=shown)
    assert not result.success
    # the analyst is told which step failed, with what and where in the code, and finds the
    # error whole in the run's log (the event log's line alone says only that it failed)
    [log_path] = (out / "logs").glob("run_*.log")
    log = log_path.read_text()
    said = re.search(r"^\[\s*\d+/\d+\] indicators\s+FAILED.*\n\s+(\w+) at (features/\S+):\d+ \((\w+)\); the error in full: (\S+)$", shown.getvalue(), re.M)
    assert said, shown.getvalue()
    assert said[4] == str(log_path) and "Exception" in said[1] and said[1] in log and "no_such_column" in log
    assert re.search(rf'File ".*{re.escape(said[2].split(":")[0])}", line \d+, in {said[3]}', log), "the stack is in the log"
    surnames, dobs = _county_people(landing)
    assert set(refused["SURNAME"].drop_nulls()) & surnames, "the refused file holds names the search looks for"
    with dg.DagsterInstance.from_config(str(out / ".dagster")) as instance:
        records = list(instance.all_logs(result.run_id))
    failures = [r for r in records if r.dagster_event and r.dagster_event.is_step_failure]
    assert failures, "a step failed"
    events = " ".join(
        str(r.dagster_event.event_specific_data) + " " + (r.user_message or "") if r.dagster_event else (r.user_message or "") for r in records
    )
    assert "Traceback" in events or "stack" in events.lower()
    compute_logs = " ".join(p.read_text(errors="replace") for p in (out / ".dagster" / "storage").rglob("*") if p.is_file() and p.suffix in (".out", ".err"))
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    try:
        refused_files = con.execute("SELECT count(*) FROM landed_files WHERE status = 'refused'").fetchall()[0][0]
        logs = " ".join(
            str(row) for query in (
                "SELECT message, ignored_columns FROM landed_files", "SELECT reason, \"column\" FROM quarantine",
                "SELECT reason, \"column\" FROM set_aside_fields", "SELECT * FROM audit_log",
            ) for row in con.execute(query).fetchall()
        )
        assert con.execute("SELECT count(*) FROM set_aside_fields").fetchall()[0][0] > 0
    finally:
        con.close()
    assert refused_files == 1
    reports = " ".join(p.read_text() for p in (out / "partner_reports").rglob("*") if p.is_file())
    for where, text in {
        "dagster events": events, "compute logs": compute_logs, "log tables": logs, "partner reports": reports, "the run's log": log, "the terminal": shown.getvalue(),
    }.items():
        leaked = sorted(s for s in surnames if s in text)
        assert not leaked, f"{where} holds {len(leaked)} surnames"
        leaked = sorted(d for d in dobs if d in text)
        assert not leaked, f"{where} holds {len(leaked)} dates of birth"


KILLED_WRITER = """
import sys, time
from pathlib import Path
import polars as pl
from warehouse import open_warehouse, replace_tables

class Halting:
    # the connection, halting inside replace_tables' transaction once its first table is replaced
    def __init__(self, con, marker):
        self.con, self.marker, self.registered = con, marker, 0
    def register(self, name, frame):
        self.registered += 1
        if self.registered == 2:
            Path(self.marker).write_text("inside the transaction")
            time.sleep(120)
        return self.con.register(name, frame)
    def __getattr__(self, name):
        return getattr(self.con, name)

with open_warehouse(Path(sys.argv[1])) as con:
    empty = pl.DataFrame({"record_key": ["x"], "person_id": ["P0"], "match_probability": [1.0]})
    replace_tables(Halting(con, sys.argv[2]), {"person_links": empty, "family_scores": empty})
"""


def test_kill_9_inside_a_warehouse_write_leaves_the_previous_tables_and_the_next_run_equals_a_clean_one(village, listed, tmp_path):
    import signal

    out = run_from(listed, tmp_path / "out")
    previous = warehouse_snapshot(out / "warehouse.duckdb")
    marker = tmp_path / "marker"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out / "warehouse.duckdb"), str(marker)], cwd=REPO, start_new_session=True)
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), "the writer reached the middle of its transaction"
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    killed = warehouse_snapshot(out / "warehouse.duckdb")
    assert set(killed) == set(previous)
    for table, frame in previous.items():
        assert killed[table].equals(frame), f"{table} changed by a transaction that never committed"
    assert run_pipeline(village, MONTH, out).success
    again = warehouse_snapshot(out / "warehouse.duckdb")
    for table, frame in previous.items():
        assert again[table].equals(frame), table
