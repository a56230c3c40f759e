"""Hostile input: property-based tests throw malformed files at ingestion. Each file must end
loaded, quarantined row by row, or refused with a reason; never a crash, never a lost row."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_contracts import load_contract
from ingestion.load import read_source
from tests.conftest import TODAY

CONTRACT = load_contract("ae_attendances")
HEADER = [c.partner_name for c in CONTRACT.columns]
GOOD = ["ED1", "20250705", "253 999 2501", "Rohan", "Ahmed", "20050112", "1", "CM22 8HR", "OTHER", "N"]
HOSTILE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

cells = st.one_of(
    st.text(max_size=30),
    st.text(alphabet='",\n\r\t;=+-@\\\'', max_size=12),
    st.sampled_from(["", " ", '"', '""', '"a,b"', "=HYPERLINK(\"x\")", "\x00", "\ufeff", "é", "20250230", "99999999"]),
    st.builds(lambda n: "x" * n, st.integers(min_value=10_000, max_value=400_000)),  # huge fields
)


def _ingest(name: str, payload: bytes):
    with tempfile.TemporaryDirectory() as folder:
        landing = Path(folder)
        (landing / CONTRACT.source).mkdir()
        (landing / CONTRACT.source / name).write_bytes(payload)
        return read_source(CONTRACT, landing, TODAY)


def _assert_accounted(result, payload_rows: int | None = None):
    for report in result.files:
        assert report.status in ("loaded", "refused", "duplicate")
        if report.status == "refused":
            assert report.message, "a refused file says why"
        else:
            assert report.received == report.loaded + report.quarantined, report
        if payload_rows is not None and report.status == "loaded":
            assert report.received == payload_rows
    loaded = sum(r.loaded for r in result.files if r.status == "loaded")
    assert result.raw.height + result.superseded.height + sum(r.expired for r in result.files) == loaded
    quarantined_rows = result.quarantine.select("_file", "_row").unique().height
    assert quarantined_rows == sum(r.quarantined for r in result.files)


@HOSTILE
@given(st.binary(max_size=4_000))
def test_random_bytes_never_crash(payload):
    _assert_accounted(_ingest("ae_random.csv", payload))


@HOSTILE
@given(st.lists(st.lists(cells, min_size=0, max_size=14), min_size=1, max_size=8), st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]))
def test_malformed_records_are_quarantined_not_lost(rows, encoding):
    def quote(cell: str) -> str:
        return '"' + cell.replace('"', '""') + '"' if any(ch in cell for ch in ',"\n\r') else cell

    lines = [",".join(HEADER), ",".join(GOOD)] + [",".join(quote(c) for c in row) for row in rows]
    payload = "\n".join(lines).encode(encoding, errors="replace") + b"\n"
    result = _ingest("ae_hostile.csv", payload)
    _assert_accounted(result)
    if encoding in ("utf-8", "latin-1", "cp1252"):
        # the header survives these encodings, so the file is read and the good row loads
        report = result.files[0]
        assert report.status == "loaded" and report.loaded >= 1
        assert "ED1" in result.raw["attendance_id"].to_list()


@HOSTILE
@given(st.text(alphabet=string.ascii_letters + string.digits + " .-_=+@'()[]{}&%$#!~;,", min_size=1, max_size=60))
def test_odd_file_names_are_read_as_plain_names(stem):
    name = stem.strip(" .") or "x"
    result = _ingest(name + ".csv", ("\n".join([",".join(HEADER), ",".join(GOOD)]) + "\n").encode())
    _assert_accounted(result, payload_rows=1)
    report = result.files[0]
    if report.status == "loaded":
        assert result.raw["_file"].to_list() == [name + ".csv"]


def test_a_link_in_the_landing_folder_is_refused_not_followed(tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text(",".join(HEADER) + "\n" + ",".join(GOOD) + "\n")
    landing = tmp_path / "landing"
    (landing / CONTRACT.source).mkdir(parents=True)
    (landing / CONTRACT.source / "ae_link.csv").symlink_to(outside)
    result = read_source(CONTRACT, landing, TODAY)
    assert [(r.file, r.status) for r in result.files] == [("ae_link.csv", "refused")]
    assert "link" in result.files[0].message and result.raw.height == 0


def test_a_header_row_of_data_leaks_no_value_into_reports(tmp_path):
    """A file sent without its header: the first record is read as the header. The file is
    refused, and the report carries no value from that record."""
    landing = tmp_path / "landing"
    (landing / CONTRACT.source).mkdir(parents=True)
    (landing / CONTRACT.source / "ae_noheader.csv").write_text(",".join(GOOD) + "\n" + ",".join(GOOD) + "\n")
    result = read_source(CONTRACT, landing, TODAY)
    report = result.files[0]
    assert report.status == "refused"
    text = " ".join([report.message or "", *report.ignored_columns, *report.missing_optional_columns])
    assert "Rohan" not in text and "Ahmed" not in text and "20050112" not in text
    assert pl.DataFrame(result.quarantine).height == 0 or "Rohan" not in " ".join(result.quarantine["reason"].to_list())


def test_headers_that_look_like_polars_patterns_are_plain_names(tmp_path):
    """A header of `*` or `^.*$` (found by the random-bytes test) is a column name, not a wildcard."""
    for header in ("*", "^.*$", "ATTENDANCE_ID,*"):
        result = _ingest("ae_star.csv", (header + "\n1\n").encode())
        _assert_accounted(result)
        assert result.files[0].status == "refused" and "required column" in result.files[0].message
