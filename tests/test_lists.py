"""The locality lists and their packs, from real Dagster runs on a synthetic county."""

from __future__ import annotations

import re
import shutil
import subprocess

import duckdb
import polars as pl
import pytest

from pipelines.cli import run_pipeline
from reports.packs import neutralise, write_csv, write_xlsx
from tests.conftest import MONTH, assert_renders_as_document, chromium, run_from

LOCALITIES = {"North", "Central", "South West", "Coast"}


def test_one_list_per_locality_each_family_in_exactly_one(listed):
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    lists = con.sql("SELECT * FROM locality_lists").pl()
    assert set(lists["locality"]) <= LOCALITIES and lists.height > 0
    assert lists["family_ref"].is_unique().all()
    eligible = con.execute("SELECT count(*) FROM family_scores WHERE eligible").fetchall()[0][0]
    unplaced = eligible - lists.height
    assert unplaced >= 0
    folder = listed / "packs" / MONTH
    for locality in set(lists["locality"]):
        slug = locality.lower().replace(" ", "_")
        csv = pl.read_csv(folder / f"{slug}.csv", infer_schema=False)
        assert set(csv["locality"]) == {locality}, "a locality's pack holds only its own families"
        expected = set(lists.filter(pl.col("locality") == locality)["family_ref"])
        assert set(csv["family_ref"]) == expected
        assert (folder / f"{slug}.xlsx").exists() and (folder / f"{slug}.html").exists()
    assert (folder / "summary.html").exists()
    # the members shown are the family's members as linked
    shown = con.sql("SELECT family_ref, person_id FROM locality_list_members").pl()
    linked = con.sql("SELECT family_ref, person_id FROM family_members").pl().join(lists.select("family_ref"), on="family_ref")
    assert shown.sort(["family_ref", "person_id"]).equals(linked.sort(["family_ref", "person_id"]))


def test_lists_are_ranked_and_flagged(listed):
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    lists = con.sql("SELECT * FROM locality_lists ORDER BY locality, rank").pl()
    for _, part in lists.group_by("locality"):
        assert part["rank"].to_list() == list(range(1, part.height + 1))
        assert part["score"].to_list() == sorted(part["score"].to_list(), reverse=True)
    assert set(lists["status"]) <= {"new this month", "carried over"}
    assert (lists["status"] == "carried over").any(), "families listed last month are carried over"
    assert lists["circumstances"].str.starts_with("identified in data").all()
    assert lists["top_reasons"].list.len().min() >= 1


def test_every_list_is_audited(listed):
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    audit = con.sql("SELECT * FROM list_audit").pl()
    assert set(audit["month"]) == {"2026-08", MONTH}
    this_month = audit.filter(pl.col("month") == MONTH)
    listed_refs = set(con.sql("SELECT family_ref FROM locality_lists").pl()["family_ref"])
    assert set(this_month["family_ref"]) == listed_refs
    assert this_month["run_id"].n_unique() == 1 and this_month["configuration"][0].startswith("programme=supporting_families")
    assert this_month["run_by"].null_count() == 0


def test_formula_like_cells_are_neutralised(tmp_path):
    import openpyxl

    assert neutralise("=HYPERLINK(\"http://x\",\"y\")").startswith("'=") and neutralise("Smith") == "Smith"
    lists = pl.DataFrame(
        {"locality": ["North"], "rank": [1], "family_ref": ["F0000001"], "address": ["=cmd|' /C calc'!A0"],
         "needs": [["financial stability"]], "top_reasons": [["+reason"]]}
    )
    members = pl.DataFrame({"family_ref": ["F0000001"], "person_id": ["P1"], "name": ["@SUM(A1)"], "dob": ["2001-01-01"], "role": ["adult"], "age": [25]})
    write_csv(lists, members, tmp_path / "a.csv")
    text = (tmp_path / "a.csv").read_text()
    assert "'=cmd" in text and "'@SUM" in text and "'+reason" in text
    write_xlsx(lists, members, tmp_path / "a.xlsx")
    book = openpyxl.load_workbook(tmp_path / "a.xlsx")
    assert book.sheetnames[0] == "Decisions", "the meeting's decision sheet comes first"
    cells = [c.value for sheet in ("Decisions", "Families", "Members") for row in book[sheet].iter_rows() for c in row]
    assert "'=cmd|' /C calc'!A0" in cells and "'@SUM(A1)" in cells
    assert not any(isinstance(v, str) and v.startswith("=") for v in cells)


def test_the_workbooks_data_sheets_read_back_as_xlsxwriter_writing_each_cell_would(tmp_path):
    """The data sheets' rows are made as XML by Polars (`reports.packs._rows_xml`), not by
    xlsxwriter a cell at a time: text that XML must escape, that a cell must keep its spaces for,
    that XML 1.0 cannot carry, that reads as an escape already, or that is longer than a cell
    holds, reads back as xlsxwriter would have written it (streaming, so inline strings as ours)."""
    import datetime as dt
    import zipfile

    import openpyxl
    import xlsxwriter

    from models.family_view import FamilyView
    from reports.packs import _as_cells

    lists = pl.DataFrame({
        "locality": ["North", "North", "North"], "rank": [1, 2, 3], "family_ref": ["F1", "F2", "F3"],
        "address": [" 1 High St & <Co> ", "=cmd|' /C calc'!A0", None], "needs": [["a", "b"], [], ["c"]],
        "top_reasons": [["x\x01y", "tab\there"], ["_x0041_ as typed"], ["\ufffe"]], "score": [1.5, None, -2.0],
        "flagged": [True, False, None], "seen": [dt.date(2026, 1, 2), None, dt.date(2025, 12, 31)],
        "long": ["z" * 40_000, "\U0001F600" * 20_000, "end "],
    })
    members = pl.DataFrame({"family_ref": ["F1", "F2"], "person_id": ["P1", "P2"], "name": ["@SUM(A1)", "Zoë\n"], "age": [25, None]})
    view = FamilyView(
        pl.DataFrame({"family_ref": ["F1", "F9"], "event_date": [dt.date(2026, 3, 4), dt.date(2026, 3, 5)], "member": ["a\nb", "x"], "agency": ["A&E", "y"], "what": ["-1", "z"]}),
        pl.DataFrame({"family_ref": ["F2"], "kind": ["school"], "detail": [""]}),
    )
    write_xlsx(lists, members, tmp_path / "pack.xlsx", view)

    # the oracle: xlsxwriter writing every cell of the same sheets itself
    families = lists.with_columns(pl.col("needs").list.join("; "), pl.col("top_reasons").list.join("\n"))
    sheets = {
        "Families": families, "Members": members.drop("person_id"),
        "Chronology": view.chronology.filter(pl.col("family_ref") != "F9").with_columns(pl.col("event_date").cast(pl.String)),
        "Who else knows": view.known_to,
    }
    oracle = xlsxwriter.Workbook(str(tmp_path / "oracle.xlsx"), {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    for title, frame in sheets.items():
        sheet = oracle.add_worksheet(title)
        for col, name in enumerate(frame.columns):
            sheet.write_string(0, col, name)
        cells, numeric = _as_cells(frame)
        for r, row in enumerate(cells.iter_rows(), start=1):
            for c, value in enumerate(row):
                if value is not None:
                    (sheet.write_number if numeric[c] else sheet.write_string)(r, c, value)
    oracle.close()

    ours, theirs = openpyxl.load_workbook(tmp_path / "pack.xlsx"), openpyxl.load_workbook(tmp_path / "oracle.xlsx")
    assert ours.sheetnames == ["Decisions", *sheets]
    for title in sheets:
        values = [[c.value for c in row] for row in ours[title].iter_rows()]
        assert values == [[c.value for c in row] for row in theirs[title].iter_rows()], title
        assert ours[title].dimensions == theirs[title].dimensions
    family = [[c.value for c in row] for row in ours["Families"].iter_rows()]
    header = family[0]
    assert family[1][header.index("address")] == " 1 High St & <Co> " and family[2][header.index("address")] == "'=cmd|' /C calc'!A0"
    assert family[1][header.index("score")] == 1.5 and family[2][header.index("score")] is None and family[3][header.index("address")] is None
    assert [row[header.index("flagged")] for row in family[1:]] == ["True", "False", None], "a flag as str() writes it"
    assert len(family[1][header.index("long")]) == 32_767 and len(family[2][header.index("long")]) == 16_383, "cut to what a cell holds, not mid-character"
    assert [c.value for c in ours["Who else knows"][2]][:2] == ["F2", "school"]
    # openpyxl keeps a cell's outer spaces whatever the XML says; Excel keeps them only when told
    families_xml = zipfile.ZipFile(tmp_path / "pack.xlsx").read("xl/worksheets/sheet2.xml").decode()
    assert '<t xml:space="preserve"> 1 High St &amp; &lt;Co&gt; </t>' in families_xml


def test_a_familys_chronology_in_the_pack_is_escaped_as_the_template_escapes_text():
    """The chronology's rows are made as HTML in Polars (`reports.packs._rows_html`), not by the
    template: what a partner wrote reaches the page as text, escaped as Jinja escapes it."""
    import datetime as dt

    from markupsafe import escape

    from models.family_view import FamilyView
    from reports.packs import pack_html
    from rules import programme

    lists = pl.DataFrame({
        "family_ref": ["F1"], "rank": [1], "band": ["high"], "score": [7], "address": ["1 High St"], "postcode": ["AL1 1AA"],
        "needs_met": [2], "needs": [["education"]], "top_reasons": [["attendance"]], "status": ["new"], "circumstances": [None],
        "already_known": [None], "last_discussed": [None], "last_decision": [None], "latest_event": [dt.date(2026, 9, 1)],
    })
    said = "<script>alert('x')</script> & \"quoted\""
    view = FamilyView(
        pl.DataFrame({"family_ref": ["F1", "F1", "F2"], "event_date": [dt.date(2026, 9, 1), dt.date(2026, 8, 1), dt.date(2026, 7, 1)],
                      "member": ["Ann", "Bob", "Cy"], "agency": ["Police", "School", "NHS"], "what": [said, "absent", "seen"]}),
        pl.DataFrame(schema={"family_ref": pl.String, "kind": pl.String, "detail": pl.String}),
    )
    page = pack_html("North", "2026-10", lists, pl.DataFrame(schema={"family_ref": pl.String}), programme("supporting_families"), view)
    assert f"<tr><td>2026-09-01</td><td>Ann</td><td>Police</td><td>{escape(said)}</td></tr>" in page
    assert "<tr><td>2026-08-01</td><td>Bob</td><td>School</td><td>absent</td></tr>" in page
    assert "<script>" not in page and "Cy" not in page, "text escaped; another family's events not in this one's block"


#: The family block as the pack's template wrote it, field by field, before the blocks were made
#: in Polars (`reports.packs._families_html`): the oracle the new page is held to, byte for byte.
_FAMILY_BLOCK_AS_TEMPLATED = """{% for family in families %}
<section class="family" data-family="{{ family["family_ref"] }}">
<h2>{{ family["rank"] }}. {{ family["family_ref"] }} <span class="band {{ family["band"] }}">{{ family["band"] }}, score {{ family["score"] }}</span></h2>
<p class="address">{{ family["address"] or "" }} {{ family["postcode"] or "" }}</p>
<table class="members"><tr><th>Name</th><th>Date of birth</th><th>Role</th><th>Placed in this family by</th></tr>
{% for member in members.get(family["family_ref"], []) %}
<tr class="placement-{{ member["placement_confidence"] }}"><td>{{ member["name"] }}</td><td>{{ member["dob"] }}</td><td>{{ member["role"] }}</td>
<td>{{ member["placed_by"] }}{% if member["placement_confidence"] == "low" %} <strong>(a guess: check before the meeting)</strong>{% elif member["placement_confidence"] == "medium" %} (likely){% endif %}</td></tr>
{% endfor %}
</table>
<p><strong>Headline needs met: {{ family["needs_met"] }} of {{ programme.needs|length }}</strong></p>
{{ needs_chart(family["needs"]) }}
<ul class="reasons">
{% for reason in family["top_reasons"] or [] %}
<li>{{ reason }}</li>
{% endfor %}
</ul>
<p class="flags">{{ flags(family)|join(" · ") }} · most recent event {{ family["latest_event"] }}</p>
{% if known_to.get(family["family_ref"]) %}
<h3>Who else knows this family</h3>
<ul class="known-to">
{% for known in known_to[family["family_ref"]] %}
<li>{{ known["detail"] }}</li>
{% endfor %}
</ul>
{% endif %}
{% if chronology.get(family["family_ref"]) %}
<h3>Chronology</h3>
<table class="chronology"><tr><th>Date</th><th>Member</th><th>Agency</th><th>What</th></tr>
{{ chronology[family["family_ref"]] }}
</table>
{% endif %}
</section>
{% endfor %}"""


def test_the_pages_family_blocks_are_what_the_template_wrote_field_by_field():
    """Each family's block of a pack's page is made a column at a time in Polars; every field
    reaches the page as the template wrote it: escaped (in text and in attributes), "None" where
    the template printed a missing value, nothing where it wrote `or ""`, a guess and a likely
    placement said, flags only where set, a family with no members, reasons, chronology or
    others who know it, and the families in the list's order."""
    import datetime as dt

    from jinja2 import Environment
    from markupsafe import Markup, escape

    from models.family_view import FamilyView
    from reports.packs import _families_html
    from rules import programme

    chosen = programme("supporting_families")
    odd = "O'Neil & <Sons> \"quoted\""
    lists = pl.DataFrame({
        "family_ref": ["F9", "F1", "F5", "F'7"], "rank": [1, 2, 3, None], "band": ["high", "medium", None, "low"], "score": [31, 12, None, 4],
        "address": [odd, None, "", "2 Low Rd"], "postcode": ["AL1 1AA", None, "SG1 2BB", ""],
        "needs_met": [3, 0, None, 1], "needs": [list(chosen.needs[:3]), [], None, [chosen.needs[-1], "not a need"]],
        "top_reasons": [["school attendance 72%", odd], None, [], [None, "a & b"]],
        "status": ["new", "", None, "carried over"], "circumstances": [None, odd, None, "x"], "already_known": ["open case", None, "", None],
        "last_discussed": [dt.date(2026, 9, 10), None, dt.date(2026, 8, 1), None], "last_decision": ["DEFERRED", None, None, "ALLOCATED"],
        "latest_event": [dt.date(2026, 9, 1), None, dt.date(2026, 7, 4), dt.date(2025, 1, 31)],
    }, schema_overrides={"needs_met": pl.UInt32})
    members = pl.DataFrame({
        "family_ref": ["F9", "F9", "F9", "F1", "F'7"], "name": [odd, "Bo Smith", None, "Cy", "Di"],
        "dob": [dt.date(1988, 2, 21), None, dt.date(2019, 7, 31), dt.date(2001, 1, 1), dt.date(2020, 5, 5)],
        "role": ["adult", "child", None, "adult", "child"], "placed_by": ["address", "postcode and surname", "school contact", None, "address"],
        "placement_confidence": ["high", "low", "medium", None, "high"],
    })
    view = FamilyView(
        pl.DataFrame({"family_ref": ["F9", "F9", "F5"], "event_date": [dt.date(2026, 9, 1), None, dt.date(2026, 7, 4)],
                      "member": [odd, "Bo", None], "agency": ["Police", "School", "NHS"], "what": ["<b>seen</b>", None, "A&E"]}),
        pl.DataFrame({"family_ref": ["F9", "F1", "F9"], "kind": ["case", "school", "case"], "detail": ["Early help, open", odd, None]}),
    )

    def by_family(frame: pl.DataFrame) -> dict[str, list[dict]]:
        grouped: dict[str, list[dict]] = {}
        for row in frame.iter_rows(named=True):
            grouped.setdefault(row["family_ref"], []).append(row)
        return grouped

    def needs_chart(needs):
        met = set(needs or [])
        items = "".join(f'<li class="{"met" if n in met else "unmet"}">{"&#9632;" if n in met else "&#9633;"} {escape(n)}</li>' for n in chosen.needs)
        return Markup(f'<ul class="needs" aria-label="{escape(chosen.need_word)}: filled squares are met">{items}</ul>')

    def flags(family):
        said = [family["status"], family["circumstances"], family["already_known"]]
        if family["last_discussed"]:
            said.append(f"discussed {family['last_discussed']}: {family['last_decision']}")
        return [f for f in said if f]

    chronology = {
        family: Markup("\n".join(
            "<tr>" + "".join(f"<td>{escape('' if row[c] is None else str(row[c]))}</td>" for c in ("event_date", "member", "agency", "what")) + "</tr>" for row in rows
        )) for family, rows in by_family(view.chronology).items()
    }
    templated = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True).from_string(_FAMILY_BLOCK_AS_TEMPLATED + "\n").render(
        families=list(lists.iter_rows(named=True)), members=by_family(members), programme=chosen, needs_chart=needs_chart, flags=flags,
        chronology=chronology, known_to=by_family(view.known_to),
    )
    assert _families_html(lists, members, chosen, view) == templated
    assert "F'7" not in templated and "&#39;" in templated and "placement-None" in templated, "the oracle saw what the test means it to"
    no_one = pl.DataFrame(schema={"family_ref": pl.String})
    without = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True).from_string(_FAMILY_BLOCK_AS_TEMPLATED + "\n").render(
        families=list(lists.iter_rows(named=True)), members={}, programme=chosen, needs_chart=needs_chart, flags=flags, chronology={}, known_to={},
    )
    assert _families_html(lists, no_one, chosen, None) == without


def test_pack_renders_in_headless_chromium(listed, tmp_path):
    browser, flags = chromium(tmp_path)
    pack = next((listed / "packs" / MONTH).glob("*.html"))
    dom = subprocess.run([browser, *flags, "--dump-dom", pack.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "pack.png"
    subprocess.run([browser, *flags, "--window-size=900,1400", f"--screenshot={shot}", pack.as_uri()], capture_output=True, timeout=120)
    refs = pl.read_csv(pack.with_suffix(".csv"), infer_schema=False)["family_ref"].unique()
    families = refs.len()
    assert dom.count('class="family"') == families > 0, "every family renders as its own block"
    from rules import programme

    needs = programme("supporting_families").needs
    assert dom.count('<ul class="needs"') == families
    assert dom.count('<li class="met">') + dom.count('<li class="unmet">') == families * len(needs), "every need labelled, met or not, in print"
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # each family block shows its chronology and who else knows it, as the warehouse holds them
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    chronology = con.sql("SELECT family_ref, count(*) AS n FROM family_chronology GROUP BY 1").pl().filter(pl.col("family_ref").is_in(refs.implode()))
    known = con.sql("SELECT DISTINCT family_ref FROM family_known_to").pl().filter(pl.col("family_ref").is_in(refs.implode()))
    assert chronology.height > 0 and dom.count('class="chronology"') == chronology.height
    assert dom.count('class="known-to"') == known.height > 0
    assert dom.count("<tr><td>") >= chronology["n"].sum(), "one row per event"
    # and how each member was placed, a guess marked as one
    assert dom.count("Placed in this family by") == families
    guesses = con.sql(
        f"SELECT count(*) FROM locality_list_members WHERE placement_confidence = 'low' AND family_ref IN ({', '.join(repr(r) for r in refs.to_list())})"
    ).fetchall()[0][0]
    assert dom.count("a guess: check before the meeting") == guesses


@pytest.mark.parametrize("document", ["governance/ig_pack", "governance/atrs_record", "linkage_report", f"packs/{MONTH}/summary"])
def test_documents_render_as_documents_in_headless_chromium(listed, tmp_path, document):
    assert_renders_as_document(listed / f"{document}.html", tmp_path)


def test_second_month_honours_every_meeting_decision(village, august, tmp_path):
    """Month one's list goes to the meetings; their decisions come back as a meeting_outcomes
    file; month two's lists honour each one."""
    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    out = run_from(august, tmp_path / "out")
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    first = con.sql("SELECT family_ref, locality, latest_event FROM locality_lists ORDER BY locality, rank").pl()
    con.close()
    assert first.height >= 5
    refs = first["family_ref"].to_list()
    decisions = pl.DataFrame(
        {
            "FAMILY_REF": [refs[0], refs[1], refs[2], refs[3], refs[4], "F9999999", "F9999998"],
            "MEETING_DATE": ["2026-09-10"] * 7,
            "DECISION": ["ALLOCATED", "NO_FURTHER_ACTION", "CONSENT_DECLINED", "DEFERRED", "ALREADY_KNOWN", "ALLOCATED", "ALREADY_KNOWN"],
            "LEAD_AGENCY": ["School", None, None, None, None, "Health visiting", None],
            "NOTES": [None, "no concerns the family wants help with", None, "more information first", None, None, None],
        }
    )
    (landing / "meeting_outcomes").mkdir()
    decisions.write_csv(landing / "meeting_outcomes" / "meeting_outcomes_2026-09.csv")
    assert run_pipeline(landing, MONTH, out).success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    second = con.sql("SELECT * FROM locality_lists").pl()
    listed = _assert_decisions_honoured(con, refs[:4], "School")
    row = second.filter(pl.col("family_ref") == refs[3]).row(0, named=True)
    assert row["last_decision"] == "DEFERRED" and str(row["last_discussed"]) == "2026-09-10"
    issues = dict(con.sql("SELECT family_ref, issue FROM decision_discrepancies").pl().iter_rows())
    assert "F9999999" in issues and "knows no family" in issues["F9999999"]
    # a reference no family holds (a family since split, or a typo) is that, not also a family
    # with no open case; and each decision returned is one row of meeting_decisions, its issue with it
    unknown = con.execute("SELECT issue FROM decision_discrepancies WHERE family_ref = 'F9999998'").fetchall()
    assert unknown == [("the pipeline knows no family with this reference",)], unknown
    recorded = con.sql("SELECT family_ref, issue FROM meeting_decisions").pl()
    assert recorded.height == decisions.height and recorded["family_ref"].n_unique() == decisions.height
    open_cases = con.execute(
        f"""SELECT count(*) FROM raw_open_cases c
            JOIN person_records pr ON pr.source = 'open_cases' AND pr.file = c._file AND pr.row = c._row
            JOIN person_links pl ON pl.record_key = pr.record_key
            JOIN family_members m ON m.person_id = pl.person_id
            WHERE m.family_ref = '{refs[4]}' AND c.open_date <= DATE '2026-09-30'
              AND (c.close_date IS NULL OR c.close_date > DATE '2026-09-30')"""
    ).fetchall()[0][0]
    assert (refs[4] in issues) == (open_cases == 0), "ALREADY_KNOWN is checked against open cases"


def _assert_decisions_honoured(con, refs, lead_agency) -> set[str]:
    """refs: the families a meeting ALLOCATED, found NO_FURTHER_ACTION, CONSENT_DECLINED and
    DEFERRED on 2026-09-10; returns this month's listed families."""
    listed = set(con.sql("SELECT family_ref FROM locality_lists").pl()["family_ref"])
    assert refs[0] not in listed, "ALLOCATED families are worked with, not relisted"
    assert con.sql("SELECT family_ref, lead_agency FROM allocated_families").pl().rows() == [(refs[0], lead_agency)]
    nfa_event = con.sql(f"SELECT latest_event FROM family_scores WHERE family_ref = '{refs[1]}'").fetchall()
    if nfa_event and nfa_event[0][0] is not None and str(nfa_event[0][0]) > "2026-09-10":
        assert refs[1] in listed, "a new event since NO_FURTHER_ACTION relists the family"
    else:
        assert refs[1] not in listed, "NO_FURTHER_ACTION is not relisted within its period"
    assert refs[2] not in listed, "CONSENT_DECLINED is never relisted while it stands"
    assert refs[3] in listed, "DEFERRED families return next month"
    return listed


def test_decisions_typed_into_the_returned_workbook_are_honoured_and_say_who_recorded_them(village, august, tmp_path):
    """The chair fills the pack's decision sheet (one decision of each kind, two rows left blank, a
    note that starts like a formula) and returns the workbook to the landing folder as it is."""
    import datetime as dt

    import openpyxl

    landing = tmp_path / "landing"
    shutil.copytree(village, landing)
    out = run_from(august, tmp_path / "out")
    packs = sorted((out / "packs" / "2026-08").glob("*.xlsx"))
    books = [(path, openpyxl.load_workbook(path)) for path in packs]
    rows = [(book, sheet_row) for _, book in books for sheet_row in range(2, book["Decisions"].max_row + 1)]
    assert len(rows) >= 7 and all(book.sheetnames[0] == "Decisions" for _, book in books)
    header = [c.value for c in books[0][1]["Decisions"][1]]
    assert header[:5] == ["FAMILY_REF", "MEETING_DATE", "DECISION", "LEAD_AGENCY", "NOTES"]
    validation = books[0][1]["Decisions"].data_validations.dataValidation
    assert any("ALLOCATED" in (v.formula1 or "") for v in validation), "DECISION is a drop-down of the five decisions"
    filled = {}
    for (book, r), decision, agency, notes in zip(
        rows,
        ["ALLOCATED", "NO_FURTHER_ACTION", "CONSENT_DECLINED", "DEFERRED", "ALREADY_KNOWN", None, None],
        ["Family Help team", None, None, None, None, None, None],
        [None, "=the family says no concerns", None, "more information first", None, None, None],
    ):
        sheet = book["Decisions"]
        filled[sheet.cell(r, 1).value] = decision
        if decision:
            sheet.cell(r, 2).value = dt.datetime(2026, 9, 10)
            sheet.cell(r, 3).value = decision
            sheet.cell(r, 4).value = agency
            sheet.cell(r, 5).value = notes
    (landing / "meeting_outcomes").mkdir()
    saving = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)
    for path, book in books:
        book.properties.lastModifiedBy = f"chair.{path.stem}@county.example.gov.uk"
        book.save(landing / "meeting_outcomes" / path.name)  # the workbook records when it was saved
    refs = list(filled)
    result = run_pipeline(landing, MONTH, out)
    assert result.success
    con = duckdb.connect(str(out / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT count(*) FROM quarantine WHERE source = 'meeting_outcomes'").fetchall() == [(0,)]
    blank = con.execute("SELECT count(*) FROM raw_meeting_outcomes WHERE decision IS NULL").fetchall()[0][0]
    assert blank == len(rows) - 5, "rows left blank are loaded as no decision: counted, not quarantined"
    metadata = next(e.materialization.metadata for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key.to_user_string() == "locality_lists")
    assert metadata["returned_rows_without_decision"].value == blank
    notes = con.execute("SELECT notes FROM raw_meeting_outcomes WHERE family_ref = ?", [refs[1]]).fetchall()
    assert notes == [("=the family says no concerns",)], "a note that starts like a formula is kept as text"
    _assert_decisions_honoured(con, refs[:4], "Family Help team")
    recorded = con.sql("SELECT family_ref, decision, recorded_by, recorded_at FROM meeting_decisions").pl()
    assert sorted(recorded["decision"]) == sorted(d for d in filled.values() if d)
    assert recorded["recorded_by"].str.ends_with("@county.example.gov.uk").all()
    assert recorded["recorded_at"].null_count() == 0
    assert saving <= recorded["recorded_at"].min() <= recorded["recorded_at"].max() <= dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    audit = con.execute("SELECT detail FROM audit_log WHERE action = 'meeting decisions honoured'").fetchall()
    assert audit and "5 decisions recorded by chair." in audit[0][0]
    _assert_chair_summary(con, out / "packs" / MONTH, refs[0])


def _assert_chair_summary(con, folder, allocated_ref):
    """The chair's page counts what the warehouse holds: the month's decisions by kind, the
    allocation still waiting for its lead practitioner, every locality's list with its packs."""
    from rules import programme

    page = (folder / "summary.html").read_text()
    decisions = re.search(r"Decisions at the meetings held in 2026-09 \(the 2026-08 lists\)</h2>\s*<table.*?</table>", page, re.S)
    assert decisions, "the meetings' decisions are counted"
    for kind in ("ALLOCATED", "NO_FURTHER_ACTION", "CONSENT_DECLINED", "DEFERRED", "ALREADY_KNOWN"):
        assert re.search(rf"<tr><td>{kind}</td>(<td>\d+</td>)*<td>1</td></tr>", decisions.group(0)), f"one {kind}, in the 'all' column"
    opened = con.execute(
        f"""SELECT count(*) FROM raw_open_cases c
            JOIN person_records pr ON pr.source = 'open_cases' AND pr.file = c._file AND pr.row = c._row
            JOIN person_links pl ON pl.record_key = pr.record_key
            JOIN family_members m ON m.person_id = pl.person_id
            WHERE m.family_ref = '{allocated_ref}' AND c.service IN ('EARLY_HELP', 'FAMILY_HELP') AND c.open_date >= DATE '2026-09-10'"""
    ).fetchall()[0][0]
    waiting = page.split("<h2>Allocations waiting</h2>")[1].split("<h2>")[0]
    assert (f"<td>{allocated_ref}</td>" in waiting) == (opened == 0), "an allocation waits until its lead practitioner's case opens"
    lists = con.sql("SELECT locality, count(*) AS n FROM locality_lists GROUP BY 1").pl()
    for locality, n in lists.iter_rows():
        slug = locality.lower().replace(" ", "_")
        assert re.search(rf"<tr><td>{locality}</td><td>{n}</td>", page) and f'href="{slug}.xlsx"' in page and (folder / f"{slug}.xlsx").exists()
    for need in programme("supporting_families").needs:
        assert f">{need}</text>" in page, "every need is labelled in print, not on hover"


def _four_families(settings, model_scores=None, front_door_nfa=None):
    """Lists of four hand-made families in one locality: F1-F3 eligible, F4 not (score 20)."""
    import datetime as dt

    from models.lists import build_lists

    refs = ["F1", "F2", "F3", "F4"]
    scores = pl.DataFrame({
        "family_ref": refs, "eligible": [True, True, True, False], "score": [9, 7, 5, 20], "band": ["high"] * 4,
        "members": [3] * 4, "dependent_children": [1] * 4, "needs": [["a", "b", "c"]] * 4, "needs_met": [3] * 4,
        "top_reasons": [["r"]] * 4, "latest_event": [dt.date(2026, 9, 1)] * 4,
    })
    members = pl.DataFrame({"family_ref": refs, "person_id": ["P1", "P2", "P3", "P4"], "forename": ["A"] * 4, "surname": ["B"] * 4, "dob": [dt.date(2015, 1, 1)] * 4, "age": [11] * 4, "placed_by": ["address"] * 4, "placement_confidence": ["high"] * 4})
    addresses = pl.DataFrame({"family_ref": refs, "postcode": ["AB1 1AA"] * 4, "address": ["1 Road"] * 4})
    localities = pl.DataFrame({"postcode": ["AB1 1AA"], "ward": ["W"], "locality": ["North"]})
    flags = pl.DataFrame(schema={"family_ref": pl.String, "open_statutory": pl.Boolean, "open_early_help": pl.Boolean, "step_down": pl.Boolean})
    return build_lists(scores, members, addresses, localities, flags, None, None, None, dt.date(2026, 9, 30), settings, model_scores, front_door_nfa).lists.sort("rank")


def test_model_ordering_is_a_switch_that_only_reorders_eligible_families():
    from models.lists import ListSettings

    model = pl.DataFrame({"family_ref": ["F1", "F2", "F3", "F4"], "model_probability": [0.1, 0.2, 0.3, 0.9]})

    def ranked(settings, model_scores=None):
        return _four_families(settings, model_scores)["family_ref"].to_list()

    assert ranked(ListSettings()) == ["F1", "F2", "F3"]
    assert ranked(ListSettings(), model) == ["F1", "F2", "F3"], "off unless switched on"
    assert ranked(ListSettings(order_by="model"), model) == ["F3", "F2", "F1"], "reordered; F4 is still not eligible"
    assert ranked(ListSettings(order_by="model"), None) == ["F1", "F2", "F3"], "no model this month: by score"


def test_front_door_contacts_ending_in_no_further_action_list_a_family_by_the_councils_rule():
    from models.lists import ListSettings

    nfa = pl.DataFrame({"family_ref": ["F2", "F4"]})
    shown = _four_families(ListSettings(), front_door_nfa=nfa)
    assert shown["family_ref"].to_list() == ["F1", "F2", "F3"], "off by default: the programme rule alone"
    circumstance = dict(zip(shown["family_ref"], shown["circumstances"]))
    assert "front door contacts keep ending in no further action" in circumstance["F2"] and "front door" not in circumstance["F1"]
    by_rule = _four_families(ListSettings(list_front_door_nfa=True), front_door_nfa=nfa)
    assert by_rule["family_ref"].to_list() == ["F4", "F1", "F2", "F3"], "F4 listed by the council's rule, ranked by its score"
    assert _four_families(ListSettings(list_front_door_nfa=True))["family_ref"].to_list() == ["F1", "F2", "F3"], "a county without front door data"


def test_packs_written_by_worker_processes_are_those_written_in_turn(listed, tmp_path, monkeypatch):
    # a large county's packs are shared between the step's process and a second one; the files must be the same
    import datetime as dt
    import zipfile

    from data_contracts import load_contracts
    from features.registry import load_registry
    from models.lists import ListSettings, monthly_lists
    from reports import packs
    from rules import DEFAULT_PROGRAMME, programme

    shutil.copy(listed / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        made = monthly_lists(con, MONTH, dt.date(2026, 9, 30), ListSettings(), "test", "run", "tester", load_registry(), programme(DEFAULT_PROGRAMME), load_contracts())
    assert made.result.lists["locality"].n_unique() > 1, "workers need more than one pack to share"
    monkeypatch.setattr(packs, "usable_cores", lambda: 2)  # a second process even on a one-core machine
    arguments = (made.result.lists, made.result.members, MONTH)
    in_turn = packs.write_packs(*arguments, tmp_path / "in_turn", made.summary, programme(DEFAULT_PROGRAMME), made.view, parallel_from=10**9)
    by_workers = packs.write_packs(*arguments, tmp_path / "by_workers", made.summary, programme(DEFAULT_PROGRAMME), made.view, parallel_from=0)
    assert [p.name for p in in_turn] == [p.name for p in by_workers] and len(in_turn) == 3 * made.result.lists["locality"].n_unique() + 1
    for a, b in zip(in_turn, by_workers):
        if a.suffix == ".xlsx":  # the same sheets; only the workbook's creation time differs
            za, zb = zipfile.ZipFile(a), zipfile.ZipFile(b)
            assert za.namelist() == zb.namelist()
            assert all(za.read(n) == zb.read(n) for n in za.namelist() if n != "docProps/core.xml")
        else:
            assert a.read_bytes() == b.read_bytes(), a.name


def test_a_familys_address_is_the_line_its_members_were_last_recorded_at_home(tmp_path):
    import datetime as dt

    from models.lists import family_addresses, family_postcodes

    day = dt.date
    records = pl.DataFrame({
        "record_key": ["s|a|1", "s|a|2", "s|a|3", "s|b|1", "s|b|2", "s|c|1"],
        "address": ["1 old road", "1 new road", "5 elsewhere lane", "2 mill lane", "2 mill ln", "9 quay street"],
        "address_date": [day(2025, 1, 1), day(2026, 1, 1), day(2026, 6, 1), day(2026, 3, 1), day(2026, 3, 1), day(2026, 2, 1)],
        "postcode": ["AL1 1AA", "AL1 1AA", "AL9 9ZZ", "AL2 2BB", "AL2 2BB", "AL3 3CC"],
        "house_number": ["1", "1", "5", "2", "2", "9"],
    })
    links = pl.DataFrame({"record_key": records["record_key"], "person_id": ["P1", "P1", "P1", "P2", "P2", "P4"]})
    members = pl.DataFrame({
        "person_id": ["P1", "P2", "P3", "P4", "P5"], "family_ref": ["F1", "F2", "F3", "F3", "F1"],
        "household_postcode": ["AL1 1AA", "AL2 2BB", None, "AL3 3CC", "AL5 5EE"], "household_house_number": ["1", "2", None, "9", "5"],
    })
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        for name, frame in {"person_records": records, "person_links": links, "family_members": members}.items():
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM frame")
        addresses = {ref: (postcode, address) for ref, postcode, address in family_addresses(con).iter_rows()}
        postcodes = dict(family_postcodes(con).iter_rows())
    # the latest line at the household's own postcode and number, not a later one elsewhere;
    # two lines of one day: the first record's; a member with no line: the next member's
    assert addresses == {"F1": ("AL1 1AA", "1 New Road"), "F2": ("AL2 2BB", "2 Mill Lane"), "F3": ("AL3 3CC", "9 Quay Street")}
    # the needs analysis' postcodes, read without the lines, are the same (the first member's that has one)
    assert postcodes == {ref: postcode for ref, (postcode, _) in addresses.items()}
