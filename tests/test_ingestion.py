"""Contract-driven ingestion, without Dagster: real files on disk, a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import shutil

import duckdb
import polars as pl
import pytest

from data_contracts import load_contract, load_contracts
from ingestion.load import read_source, write_source
from tests.conftest import MONTH, TODAY

AE_HEADER = "ATTENDANCE_ID,ARRIVAL_DATE,NHS_NUMBER,PERSON_GIVEN_NAME,PERSON_FAMILY_NAME,PERSON_BIRTH_DATE,PERSON_STATED_GENDER,POSTCODE,COMPLAINT_GROUP,SAFEGUARDING_CONCERN"
GOOD_AE = "ED1,20250705,253 999 2501,Rohan,Ahmed,20050112,1,CM22 8HR,OTHER,N"


def ingest(landing, source):
    return read_source(load_contract(source), landing, TODAY)


def write_ae(landing, name, lines, encoding="utf-8"):
    folder = landing / "ae_attendances"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding) if isinstance(lines, list) else lines)
    return path


def assert_accounted(result):
    for report in result.files:
        if report.status != "duplicate":
            assert report.received == report.loaded + report.quarantined, report


def test_spec_examples_load_without_quarantine(examples):
    for source, contract in load_contracts().items():
        result = read_source(contract, examples, TODAY)
        assert result.quarantine.height == 0, (source, result.quarantine["reason"].to_list())
        assert_accounted(result)
        if (examples / source).is_dir():
            assert result.raw.height > 0


def test_warehouse_holds_loaded_rows_with_provenance(examples, tmp_path):
    contract = load_contract("school_attendance")
    result = read_source(contract, examples, TODAY)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, result)
    rows = con.execute("SELECT _file, _sha256, _row, dob, permanent_exclusion FROM raw_school_attendance ORDER BY _row").fetchall()
    assert len(rows) == 12
    assert rows[0][0] == "school_attendance_2026-10.csv" and len(rows[0][1]) == 64 and rows[0][2] == 1
    assert str(rows[0][3]) == "2018-01-23" and rows[0][4] is False
    files = con.execute("SELECT status, received, loaded, quarantined FROM landed_files").fetchall()
    assert files == [("loaded", 12, 12, 0)]


def test_a_warehouse_of_an_earlier_version_gains_the_ledgers_missing_tables_and_columns(examples, tmp_path):
    contract = load_contract("school_attendance")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, read_source(contract, examples, TODAY))
    # as a warehouse written before these existed: a column and a table missing, and tables of the
    # same names in another database attached, which must not be taken for them
    con.execute("ALTER TABLE landed_files DROP COLUMN latest_retention_date; DROP TABLE retention_keys")
    con.execute("ATTACH ':memory:' AS other; CREATE TABLE other.landed_files (x INTEGER); CREATE TABLE other.retention_keys (x INTEGER)")
    write_source(con, contract, read_source(contract, examples, TODAY))
    con.execute("DETACH other")
    assert "latest_retention_date" in {c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE landed_files)").fetchall()}
    assert {c for (c,) in con.execute("SELECT column_name FROM (DESCRIBE retention_keys)").fetchall()} == {"source", "_file", "_row", "key_sha256"}
    assert con.execute("SELECT count(*), count(latest_retention_date) FROM landed_files").fetchall() == [(1, 1)]


def test_bad_rows_are_quarantined_with_file_row_column_and_reason(tmp_path):
    lines = [
        AE_HEADER,
        GOOD_AE,
        "ED2,2025-07-05,2539992501,Ann,Lee,20050112,2,CM22 8HR,OTHER,N",  # date in the wrong format
        "ED3,20250705,2539992502,Ann,Lee,20050112,2,CM22 8HR,OTHER,N",  # NHS check digit wrong
        "ED4,20250705,,Ann,Lee,20050231,2,CM22 8HR,OTHER,N",  # 31 February
        "ED5,20250705,,=HYPERLINK(\"http://x\"),Lee,20050112,2,CM22 8HR,OTHER,N",  # formula-like cell
        "ED6,20250705,,Ann,Lee,20050112,3,12345,HEADACHE,N",  # bad code, postcode, complaint
        "ED7,20990101,,Ann,Lee,20050112,2,CM22 8HR,OTHER,N",  # in the future
    ]
    write_ae(tmp_path, "ae.csv", lines)
    result = ingest(tmp_path, "ae_attendances")
    assert_accounted(result)
    # the NHS number only helps to find the patient: set aside, the attendance loads (spec v2)
    assert result.raw.height == 2 and result.files[0].quarantined == 5 and result.files[0].set_aside == 1
    assert result.set_aside.select("_row", "column").rows() == [(3, "NHS_NUMBER")]
    assert result.raw.filter(pl.col("_row") == 3)["nhs_number"].item() is None
    q = result.quarantine
    by_row = {r: set(g["column"]) for (r,), g in q.group_by("_row")}
    assert 3 not in by_row
    assert by_row[2] == {"ARRIVAL_DATE"}
    assert by_row[4] == {"PERSON_BIRTH_DATE"}
    assert by_row[5] == {"PERSON_GIVEN_NAME"}
    assert by_row[6] == {"PERSON_STATED_GENDER", "POSTCODE", "COMPLAINT_GROUP"}
    assert by_row[7] == {"ARRIVAL_DATE"}
    assert set(q["_file"]) == {"ae.csv"}
    reasons = " ".join(q["reason"]) + " " + " ".join(result.set_aside["reason"])
    assert "is not a valid date in the format yyyyMMdd" in reasons
    assert "is not a valid NHS number" in reasons and "spreadsheet formula" in reasons and "is in the future" in reasons
    # reasons never repeat the values they are about (values are personal data)
    for value in ("2025-07-05", "2539992502", "20050231", "HYPERLINK", "HEADACHE", "12345", "Lee"):
        assert value not in reasons
    # the quarantined row is kept whole, so nothing is lost
    kept = q.filter(pl.col("_row") == 6)["record"][0]
    assert "HEADACHE" in kept


def test_a_mistyped_postcode_is_set_aside_and_the_event_still_loads(tmp_path):
    """Spec v2: fields that only help to find a person or a home are set aside, not the row."""
    lines = [AE_HEADER, GOOD_AE]
    mistyped = ["WDl3 3TJ", "EN23 N5G", "WD116 8AZ", "CMx45ZY", "WD26 6R"]
    lines += [f"ED{i},20250705,,Ann,Lee,20050112,2,{postcode},OTHER,N" for i, postcode in enumerate(mistyped, start=2)]
    # a row with a broken postcode and a broken code is still quarantined, with both reasons
    lines.append("ED9,20250705,,Ann,Lee,20050112,7,WD26 6R,OTHER,N")
    # a blank postcode where the layout requires one still quarantines the row
    lines.append("ED10,20250705,,Ann,Lee,20050112,2,,OTHER,N")
    write_ae(tmp_path, "ae.csv", lines)
    result = ingest(tmp_path, "ae_attendances")
    assert_accounted(result)
    report = result.files[0]
    assert (report.received, report.loaded, report.quarantined, report.set_aside) == (8, 6, 2, 5)
    aside = result.set_aside.sort("_row")
    assert aside["_row"].to_list() == [2, 3, 4, 5, 6] and set(aside["column"]) == {"POSTCODE"} and set(aside["field"]) == {"postcode"}
    assert aside["value"].to_list() == mistyped, "the text as sent is kept for the partner's correction"
    assert all(v not in r for v, r in zip(mistyped, aside["reason"])) and set(aside["reason"]) == {"POSTCODE is not shaped like a UK postcode"}
    assert result.raw.filter(pl.col("_row").is_in([2, 3, 4, 5, 6]))["postcode"].null_count() == 5
    assert set(result.raw["attendance_id"]) == {"ED1", "ED2", "ED3", "ED4", "ED5", "ED6"}
    by_row = {r: set(g["column"]) for (r,), g in result.quarantine.group_by("_row")}
    assert by_row == {7: {"PERSON_STATED_GENDER", "POSTCODE"}, 8: {"POSTCODE"}}


def test_set_aside_fields_reach_the_warehouse_and_the_summary(tmp_path):
    write_ae(tmp_path, "ae.csv", [AE_HEADER, GOOD_AE, "ED2,20250705,,Ann,Lee,20050112,2,WDl3 3TJ,OTHER,N"])
    contract = load_contract("ae_attendances")
    result = read_source(contract, tmp_path, TODAY)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, result)
    assert con.execute("SELECT source, _file, _row, \"column\", value FROM set_aside_fields").fetchall() == [("ae_attendances", "ae.csv", 2, "POSTCODE", "WDl3 3TJ")]
    assert con.execute("SELECT received, loaded, quarantined, set_aside FROM landed_files").fetchall() == [(2, 2, 0, 1)]
    assert con.execute("SELECT count(*) FROM raw_ae_attendances WHERE postcode IS NULL").fetchall() == [(1,)]
    # a rerun replaces the source's set-aside fields, never adds to them
    write_source(con, contract, read_source(contract, tmp_path, TODAY))
    assert con.execute("SELECT count(*) FROM set_aside_fields").fetchall() == [(1,)]


def test_a_quarantined_record_past_retention_is_not_kept(tmp_path):
    """A&E is kept three years: a 2022 attendance whose NHS number and gender code are broken is
    counted as quarantined, but its record (name, date of birth, complaint) is not kept."""
    old = "ED0,20221101,,Ann,Lee,20050112,7,CM22 8HR,OTHER,N"
    recent = "ED2,20250705,,Ann,Lee,20050112,7,CM22 8HR,OTHER,N"
    write_ae(tmp_path, "ae.csv", [AE_HEADER, GOOD_AE, old, recent])
    result = ingest(tmp_path, "ae_attendances")
    assert_accounted(result)
    report = result.files[0]
    assert (report.quarantined, report.quarantine_expired) == (2, 1)
    assert set(result.quarantine["_row"]) == {3}, "only the record still within retention is kept"


def test_missing_required_column_refuses_the_file_naming_it(tmp_path):
    header = AE_HEADER.replace(",PERSON_BIRTH_DATE", "")
    write_ae(tmp_path, "no_dob.csv", [header, "ED1,20250705,,Rohan,Ahmed,1,CM22 8HR,OTHER,N"])
    result = ingest(tmp_path, "ae_attendances")
    report = result.files[0]
    assert report.status == "refused"
    assert "'PERSON_BIRTH_DATE'" in report.message and "missing" in report.message
    assert report.received == report.quarantined == 1 and result.raw.height == 0
    assert result.quarantine["reason"][0].startswith("file refused: required column 'PERSON_BIRTH_DATE'")
    assert "PERSON_BIRTH_DATE" not in (result.quarantine["record"][0] or "")


def test_wrong_header_is_refused_and_unknown_columns_never_loaded(tmp_path):
    # a misspelt required column, plus a column the contract does not know
    header = AE_HEADER.replace("POSTCODE", "POST_CODE") + ",ETHNICITY"
    write_ae(tmp_path, "wrong.csv", [header, GOOD_AE + ",White British"])
    report = ingest(tmp_path, "ae_attendances").files[0]
    assert report.status == "refused" and "'POSTCODE'" in report.message and "2 header names are not in the contract" in report.message
    assert report.ignored_columns == []  # not named: a file sent without its header has data there
    # header names match case-insensitively after trimming; extra columns are dropped by name
    write_ae(tmp_path, "wrong.csv", [" attendance_id ," + AE_HEADER.split(",", 1)[1] + ",ETHNICITY", GOOD_AE + ",White British"])
    result = ingest(tmp_path, "ae_attendances")
    assert result.files[0].status == "loaded" and result.raw.height == 1
    assert result.files[0].ignored_columns == ["ETHNICITY"]
    assert "ETHNICITY" not in result.raw.columns and "White British" not in str(result.raw.rows())


def test_empty_file_and_header_only_file(tmp_path):
    write_ae(tmp_path, "a_empty.csv", b"")
    write_ae(tmp_path, "b_header_only.csv", [AE_HEADER])
    result = ingest(tmp_path, "ae_attendances")
    empty, header_only = result.files
    assert empty.status == "refused" and "empty" in empty.message
    assert header_only.status == "loaded" and header_only.received == 0


def test_same_file_twice_loads_once(tmp_path):
    write_ae(tmp_path, "jan.csv", [AE_HEADER, GOOD_AE])
    shutil.copy(tmp_path / "ae_attendances" / "jan.csv", tmp_path / "ae_attendances" / "jan_resent.csv")
    result = ingest(tmp_path, "ae_attendances")
    assert [f.status for f in result.files] == ["loaded", "duplicate"]
    assert result.files[1].duplicate_of == "jan.csv"
    assert result.raw.height == 1


def test_overlapping_files_never_double_count_and_later_rows_win(tmp_path):
    write_ae(tmp_path, "2026-09.csv", [AE_HEADER, GOOD_AE, GOOD_AE.replace("ED1", "ED2")])
    write_ae(tmp_path, "2026-10.csv", [AE_HEADER, GOOD_AE.replace("OTHER", "INJURY"), GOOD_AE.replace("ED1", "ED3")])
    result = ingest(tmp_path, "ae_attendances")
    raw = result.raw.sort("attendance_id")
    assert raw["attendance_id"].to_list() == ["ED1", "ED2", "ED3"]
    assert raw.filter(pl.col("attendance_id") == "ED1")["complaint_group"][0] == "INJURY"
    assert raw.filter(pl.col("attendance_id") == "ED1")["_file"][0] == "2026-10.csv"
    assert result.superseded.rows() == [("2026-09.csv", 1, "2026-10.csv", 1)]
    assert result.files[0].superseded == 1


def test_non_utf8_bytes_quarantine_only_their_row(tmp_path):
    data = (AE_HEADER + "\n" + GOOD_AE + "\n").encode() + "ED2,20250705,,Zo\xeb,Lee,20050112,2,CM22 8HR,OTHER,N\n".encode("latin-1")
    write_ae(tmp_path, "latin.csv", data)
    result = ingest(tmp_path, "ae_attendances")
    assert result.raw.height == 1 and result.files[0].quarantined == 1
    row = result.quarantine.row(0, named=True)
    assert row["_row"] == 2 and row["column"] == "PERSON_GIVEN_NAME" and "UTF-8" in row["reason"]


def test_a_nul_byte_in_a_record_quarantines_only_its_row(tmp_path):
    # the rest of the file is UTF-8, which the fast reading takes as it is: the NUL must not pass
    data = (AE_HEADER + "\n" + GOOD_AE + "\n" + "ED2,20250705,,Zo\x00e,Lee,20050112,2,CM22 8HR,OTHER,N\n").encode()
    write_ae(tmp_path, "nul.csv", data)
    result = ingest(tmp_path, "ae_attendances")
    assert result.raw.height == 1 and result.files[0].quarantined == 1
    row = result.quarantine.row(0, named=True)
    assert row["_row"] == 2 and row["column"] == "PERSON_GIVEN_NAME" and "UTF-8" in row["reason"]


def test_ragged_records_and_multiline_fields(tmp_path):
    lines = [AE_HEADER, GOOD_AE, "ED2,20250705,,Ann", '"ED3",20250705,,"Ann\nMarie",Lee,20050112,2,CM22 8HR,OTHER,N', GOOD_AE.replace("ED1", "ED4")]
    write_ae(tmp_path, "ragged.csv", lines)
    result = ingest(tmp_path, "ae_attendances")
    assert_accounted(result)
    # record numbers count CSV records, not lines: the quoted line break does not shift ED4
    assert sorted(result.raw["_row"].to_list()) == [1, 3, 4]
    assert result.quarantine["_row"].to_list() == [2] and "fields" in result.quarantine["reason"][0]


def test_attendance_arithmetic_and_key_fallback(tmp_path, examples):
    source = examples / "school_attendance" / "school_attendance_2026-10.csv"
    text = source.read_text().splitlines()
    # absence above the sessions possible breaks the contract's row rule
    bad = text[1].replace(",72,0,0,0,N,", ",72,50,30,0,N,")
    blank_upn = text[2].replace("T919288923761", "", 1)
    (tmp_path / "school_attendance").mkdir()
    (tmp_path / "school_attendance" / "a.csv").write_text("\n".join([text[0], bad, blank_upn]) + "\n")
    result = ingest(tmp_path, "school_attendance")
    q = result.quarantine
    assert q["_row"].to_list() == [1]
    assert "absence_within_possible_sessions" in q["reason"][0]
    assert q["column"][0] == "Sessions Possible, Authorised Absence, Unauthorised Absence"
    assert result.raw["upn"].to_list() == [None]


def test_xlsx_and_parquet_load_like_csv(tmp_path, examples):
    csv_path = examples / "worklessness" / "worklessness_2026-10.csv"
    frame = pl.read_csv(csv_path, infer_schema=False)
    folder = tmp_path / "worklessness"
    folder.mkdir()
    frame.write_excel(folder / "a.xlsx")
    typed = frame.with_columns(pl.col("DOB").str.to_date("%d-%b-%Y"))  # a partner's typed dates
    typed.write_parquet(folder / "b.parquet")
    result = ingest(tmp_path, "worklessness")
    assert [f.status for f in result.files] == ["loaded", "loaded"]
    assert result.quarantine.height == 0
    assert result.raw.height == frame.height  # the parquet restates the xlsx rows: counted once
    assert result.files[0].superseded == frame.height


def test_reingesting_gives_identical_tables(village):
    contract = load_contract("domestic_abuse")
    first = read_source(contract, village, TODAY)
    second = read_source(contract, village, TODAY)
    assert first.raw.equals(second.raw)
    assert first.summary() == second.summary()


@pytest.mark.parametrize("source", load_contracts())
def test_generated_county_loses_only_the_rows_its_keying_errors_break(village, source):
    """The generator breaks a few values as keying does: a broken identifier or postcode is set
    aside and its row loads; only an impossible date quarantines a row, and no row is lost."""
    contract = load_contract(source)
    result = read_source(contract, village, TODAY)
    assert_accounted(result)
    dates = {c.partner_name for c in contract.columns if c.logical_type in ("date", "timestamp")}
    reasons = result.quarantine.filter(~pl.col("reason").str.contains("NHS number|UPN|National Insurance|postcode"))
    assert set(reasons["column"]) <= dates, result.quarantine.group_by("reason").len().rows()
    assert result.quarantine["_row"].n_unique() <= max(2, 0.005 * result.received)
    assert set(result.set_aside["field"]) <= {c.name for c in contract.columns if c.set_aside}


def test_the_generator_can_leave_every_value_intact(tmp_path):
    from synthetic import generate_county

    generate_county(people=600, seed=3, month=MONTH, out=tmp_path / "clean", keying_errors=False)
    for source in load_contracts():
        result = read_source(load_contract(source), tmp_path / "clean", TODAY)
        assert result.quarantine.height == 0 and result.set_aside.height == 0, source


def test_every_mistyped_postcode_breaks_the_postcode_rule():
    import numpy as np

    from ingestion.identifiers import postcode_is_valid
    from synthetic.recording import mistype_postcode

    rng = np.random.default_rng(1)
    postcodes = ["WD13 3TJ", "EN2 3NG", "CM4 5ZY", "WD26 6RB", "N1 9GU", "SW1A 1AA", "B33 8TH"]
    broken = [mistype_postcode(p, rng) for p in postcodes for _ in range(40)]
    assert not pl.select(postcode_is_valid(pl.Series(broken))).to_series().any()


@pytest.mark.parametrize("source", sorted(load_contracts()))
def test_a_columns_rules_worked_out_once_per_distinct_value_find_what_they_find_row_by_row(source, monkeypatch):
    from ingestion import validate

    contract = load_contracts()[source]
    # every kind of value a rule reads, in each column, repeated so that values recur
    values = [None, "", "   ", "x", " 12 ", "=1+1", "-3", "+44", "@A", "0", "42", "1.5", "2026-02-30", "2026-09-01", "01/09/2026", "20260901",
              "2031-01-01", "2026-09-01T10:15", "9434765919", "943 476 5919", "9434765918", "A123456789012", "AB123456C", "QQ123456A",
              "AL10 9AB", "al109ab", "ZZ1 1ZZ", "Y", "N", "true", "M", "F", "9", "\ufffd", "w" * 600]
    rows = [[values[(i * (j + 3) + j) % len(values)] for j in range(len(contract.columns))] for i in range(len(values) * 7)]
    frame = pl.DataFrame(rows, schema={c.name: pl.String for c in contract.columns}, orient="row").with_row_index("_row").with_columns(pl.col("_row").cast(pl.Int64))
    text = frame.select("_row", *[validate._blank_to_null(c.name) for c in contract.columns])
    found = {}
    for distinct in (True, False):
        monkeypatch.setattr(validate, "_checks_shape", lambda column: distinct)
        found[distinct] = validate._column_problems(text, list(contract.columns), TODAY)
    assert found[True].height > len(values)
    assert found[True].equals(found[False])


def test_rows_past_retention_are_removed_and_counted(tmp_path):
    """A&E rows are kept three years after the attendance (the contract's retention): older
    rows are removed on load, counted per file and in retention_log, and never kept."""
    write_ae(tmp_path, "ae_2023.csv", [AE_HEADER, GOOD_AE.replace("ED1,20250705", "ED0,20231101"), GOOD_AE])
    contract = load_contract("ae_attendances")
    result = read_source(contract, tmp_path, TODAY)
    assert result.raw["attendance_id"].to_list() == ["ED1"]
    assert [(r.received, r.loaded, r.quarantined, r.expired) for r in result.files] == [(2, 2, 0, 1)]
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    write_source(con, contract, result, TODAY)
    assert con.execute("SELECT count(*) FROM raw_ae_attendances").fetchall() == [(1,)]
    assert con.execute("SELECT expired FROM landed_files").fetchall() == [(1,)]
    assert con.execute("SELECT source, cutoff, rows_removed FROM retention_log").fetchall() == [("ae_attendances", dt.date(2023, 11, 23), 1)]
    # a rerun a year on removes the other row too, and logs that run's count
    later = read_source(contract, tmp_path, dt.date(2028, 7, 6))
    write_source(con, contract, later, dt.date(2028, 7, 6))
    assert con.execute("SELECT count(*) FROM raw_ae_attendances").fetchall() == [(0,)]
    assert con.execute("SELECT rows_removed FROM retention_log ORDER BY removed_at, rows_removed").fetchall()[-1] == (2,)


WELL_FORMED_CSVS = [
    b'a,b,c\r\n1,,""\r\n,x," "\r\n',  # CRLF; an empty field, quoted or not, is missing; a space is kept
    b'*,b,c\n"q,1",,\n2,"x""y",z\n',  # a header Polars would read as a pattern; quotes inside quotes
    b'NAME,NOTE\n"Ana","two\nlines"\nBo,=1+1\n',  # a line break inside quotes; formula-like text kept as text
    "SURNAME,TOWN\nO'Brien,Ll\u0177n\nZo\u00eb,\n".encode(),  # apostrophes and accents
]


@pytest.mark.parametrize("data", WELL_FORMED_CSVS)
def test_a_well_formed_csv_is_read_the_fast_way_and_reads_as_the_slow_way_would(data, monkeypatch):
    import csv
    import io

    from polars.testing import assert_frame_equal

    from ingestion import readers

    text = data.decode()
    header = next(csv.reader(io.StringIO(text, newline="")))
    slow = readers._read_csv_records(text, header)

    def no_slow_path(*args):
        raise AssertionError("a well-formed file went the slow way")

    monkeypatch.setattr(readers, "_read_csv_records", no_slow_path)
    fast = readers._read_csv(data)
    assert_frame_equal(fast.frame, slow.frame)
    assert fast.row_problems == slow.row_problems == []

#: Files whose records are counted by the plain-line check or by the csv module: each must be
#: counted as the csv module counts it (a record of the wrong width anywhere: None).
COUNTED_CSVS = [
    "a,b,c\n1,2,3\n4,,6\n",  # plain lines
    'a,b,c\r\n"x, y","say ""hi""",3\r\n',  # CRLF, commas and doubled quotes inside quotes
    "a,b,c\n1,2,3",  # no line break after the last record
    "a,b,c\n1,2\n4,5,6\n",  # a short record
    "a,b,c\n1,2,3,4\n",  # a long one
    "a,b,c\n1,2,3\n\n4,5,6\n",  # a blank line is no record
    "a,b,c\n1,2,3\n\n",  # nor a blank line at the end
    'a,b,c\n1,"two\nlines",3\n',  # a record over two lines
    "a,b,c\n1,2\r3,4\n",  # a bare carriage return ends a record (here, two short ones)
    'a,b,c\n1,x"y,3\n',  # a quote inside an unquoted field
    'a,b,c\n1,"x"y,3\n',  # text after a closing quote
    'a,b,c\n1, "x,y",3\n',  # a quote after a space opens no quoted field
    "a\n1\n\n2\n",  # one field: a blank line would match
]


@pytest.mark.parametrize("text", COUNTED_CSVS)
def test_records_are_counted_as_the_csv_module_counts_them(text):
    import csv
    import io

    from ingestion.readers import _CsvText, _records_if_well_formed

    header = next(csv.reader(io.StringIO(text, newline="")))
    lengths = [len(record) for record in csv.reader(io.StringIO(text, newline=""))]
    expected = len(lengths) if all(n == len(header) for n in lengths[1:]) else None
    # held as Polars holds a file's bytes (most files), or decoded first (a file not all UTF-8)
    assert _records_if_well_formed(_CsvText.of_bytes(text.encode()), len(header)) == expected
    assert _records_if_well_formed(_CsvText.of_text(text), len(header)) == expected



def _header_texts():
    from ingestion.readers import HEADER_PREFIX

    cut = "A,B\n" + "x" * (HEADER_PREFIX - 5) + "\u00e9,y\n"  # a two-byte character split by the prefix's end
    long_name = '"' + "N" * HEADER_PREFIX + '\nNAME",B\n1,2\n'  # a header running past the prefix
    return [cut, long_name, "A,B\n1,2\n"]


@pytest.mark.parametrize("text", _header_texts(), ids=["character-cut-at-the-prefix", "header-past-the-prefix", "short-file"])
def test_the_header_is_read_from_a_files_start_as_from_its_whole_text(text):
    import csv
    import io

    from ingestion.readers import _CsvText, _first_record

    expected = next(csv.reader(io.StringIO(text, newline="")))
    assert _first_record(_CsvText.of_bytes(text.encode())) == expected
    assert _first_record(_CsvText.of_text(text)) == expected


def test_a_table_is_changed_in_place_only_where_its_rows_remain_in_order_before_the_new():
    from ingestion.load import _rows_changed

    before = pl.DataFrame({"_file": ["a.csv", "a.csv", "a.csv", "b.csv"], "_row": [1, 2, 3, 1]})
    raw = pl.DataFrame({"_file": ["a.csv", "a.csv", "b.csv", "c.csv", "c.csv"], "_row": [1, 3, 1, 1, 2], "value": ["x", "y", "z", "new", "newer"]})
    removed, added = _rows_changed(before, raw)
    assert removed.rows() == [("a.csv", 2)] and added["value"].to_list() == ["new", "newer"]
    # a new row before one the table held, or held rows in another order: written whole
    assert _rows_changed(before, raw.select(pl.all().reverse())) is None
    assert _rows_changed(before, pl.concat([raw.slice(3, 1), raw.slice(0, 3)])) is None
    assert _rows_changed(before, raw.filter(pl.col("_file") != "a.csv")) is not None, "rows removed, the rest in order"
    # a row number past what a file and row numbered as one can hold: written whole
    assert _rows_changed(before, raw.with_columns(pl.col("_row") + (1 << 32))) is None


def test_files_checked_together_come_out_as_each_checked_alone(tmp_path, monkeypatch):
    """Small files are checked as one frame (`CHECKED_TOGETHER_BYTES`): every row, problem and
    set-aside field must still be its own file's, at its own row number."""
    import ingestion.load as load

    bad = [
        "ED2,2025-07-05,2539992501,Ann,Lee,20050112,2,CM22 8HR,OTHER,N",
        "ED3,20250705,2539992502,Ann,Lee,20050112,2,WDl3 3TJ,OTHER,N",
        "ED4,20250705,,Ann,Lee,20050112,3,12345,HEADACHE,N",
    ]
    write_ae(tmp_path, "2026-07.csv", [AE_HEADER, GOOD_AE, *bad])
    # the same rows in another order: equal row numbers, other problems
    write_ae(tmp_path, "2026-08.csv", [AE_HEADER, bad[2].replace("ED4", "ED8"), bad[1].replace("ED3", "ED7"), GOOD_AE.replace("ED1", "ED5"), "ED6,20250705,,Ann"])
    write_ae(tmp_path, "2026-09.csv", [AE_HEADER.replace("ARRIVAL_DATE", "ARRIVED"), GOOD_AE.replace("ED1", "ED9")])  # refused whole
    write_ae(tmp_path, "2026-10.csv", (AE_HEADER + "\n").encode() + "ED10,20250705,,Zo\xeb,Lee,20050112,2,WDl3 3TJ,OTHER,N\n".encode("latin-1"))
    checks = []
    validate_rows = load.validate_rows
    monkeypatch.setattr(load, "validate_rows", lambda frame, *a: checks.append(frame.height) or validate_rows(frame, *a))
    together = ingest(tmp_path, "ae_attendances")
    assert checks == [9], "the three readable files are checked as one"
    monkeypatch.setattr(load, "CHECKED_TOGETHER_BYTES", 0)
    alone = ingest(tmp_path, "ae_attendances")
    assert checks[1:] == [4, 4, 1]
    assert together.raw.equals(alone.raw) and together.quarantine.equals(alone.quarantine) and together.set_aside.equals(alone.set_aside)
    assert together.files == alone.files
    assert_accounted(together)
    # and those are what the files say, file by file
    assert together.set_aside.select("_file", "_row", "column").rows() == [
        ("2026-07.csv", 3, "NHS_NUMBER"), ("2026-07.csv", 3, "POSTCODE"), ("2026-08.csv", 2, "NHS_NUMBER"), ("2026-08.csv", 2, "POSTCODE"),
    ]
    assert sorted(set(together.quarantine.select("_file", "_row").rows())) == [
        ("2026-07.csv", 2), ("2026-07.csv", 4), ("2026-08.csv", 1), ("2026-08.csv", 4), ("2026-09.csv", 1), ("2026-10.csv", 1),
    ]
    assert together.raw.select("_file", "_row", "attendance_id").rows() == [
        ("2026-07.csv", 1, "ED1"), ("2026-07.csv", 3, "ED3"), ("2026-08.csv", 2, "ED7"), ("2026-08.csv", 3, "ED5"),
    ]
