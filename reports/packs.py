"""Render each locality's meeting pack (HTML for print, XLSX, CSV) and the chair's summary page.

Cells that a spreadsheet could run as a formula (starting =, +, -, @, tab or carriage
return) are neutralised with a leading apostrophe in CSV and XLSX, and XLSX cells are
written as text, never as formulas.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections import deque
from pathlib import Path

import polars as pl
from markupsafe import Markup, escape
from xlsxwriter.utility import xl_col_to_name

from models.chair_summary import ChairSummary
from models.family_view import FamilyView
from reports import page, render
from rules import Programme, looks_like_formula, looks_like_formula_expr
from warehouse import started_process, usable_cores, without_cycle_collection, write_atomically, write_text_atomically


def neutralise(value: object) -> object:
    if isinstance(value, str) and looks_like_formula(value):
        return "'" + value
    return value


def _neutralised(text: pl.Expr) -> pl.Expr:
    """`neutralise`, a column at a time."""
    return pl.when(looks_like_formula_expr(text)).then(pl.lit("'") + text).otherwise(text)


def _flat(lists: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """One row per family member, family fields repeated: the CSV for systems."""
    families = lists.with_columns(
        pl.col("needs").list.join("; "), pl.col("top_reasons").list.join(" | ")
    )
    flat = families.join(members.rename({"name": "member_name", "dob": "member_dob", "role": "member_role", "age": "member_age"}), on="family_ref", how="left")
    return flat.drop("person_id").with_columns(_neutralised(pl.col(c)).alias(c) for c, t in flat.drop("person_id").schema.items() if t == pl.String)


def write_csv(lists: pl.DataFrame, members: pl.DataFrame, path: Path) -> None:
    frame = _flat(lists, members)
    write_atomically(path, frame.write_csv)


#: The decision sheet's columns the meeting fills in: the `meeting_outcomes` layout (spec v2), so the
#: returned workbook loads as that source; the context after them is reported, never loaded.
DECISION_COLUMNS = ("FAMILY_REF", "MEETING_DATE", "DECISION", "LEAD_AGENCY", "NOTES")
CONTEXT_COLUMNS = {"RANK": "rank", "ADDRESS": "address", "POSTCODE": "postcode", "SCORE": "score", "NEEDS": "needs"}


def _decision_sheet(book, lists: pl.DataFrame) -> None:
    """The first sheet: one row per listed family, the decision columns open to the chair (a
    drop-down of the five decisions, a date), the context locked."""
    from data_contracts import load_contract

    decisions = list(load_contract("meeting_outcomes").column("decision").allowed_values)
    sheet = book.add_worksheet("Decisions")
    bold = book.add_format({"bold": True, "locked": True})
    context = book.add_format({"locked": True, "font_color": "#555555", "text_wrap": True})
    fill = book.add_format({"locked": False, "bg_color": "#fff8dc"})
    date = book.add_format({"locked": False, "bg_color": "#fff8dc", "num_format": "yyyy-mm-dd"})
    headers = [*DECISION_COLUMNS, *CONTEXT_COLUMNS]
    for col, name in enumerate(headers):
        sheet.write_string(0, col, name, bold)
    rows = lists.with_columns(pl.col("needs").list.join("; ")).sort("rank")
    for r, family in enumerate(rows.iter_rows(named=True), start=1):
        sheet.write_string(r, 0, family["family_ref"], context)
        for c in range(1, len(DECISION_COLUMNS)):
            sheet.write_blank(r, c, None, date if DECISION_COLUMNS[c] == "MEETING_DATE" else fill)
        for c, field in enumerate(CONTEXT_COLUMNS.values(), start=len(DECISION_COLUMNS)):
            value = family.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                sheet.write_number(r, c, value, context)
            elif value is not None:
                sheet.write_string(r, c, str(neutralise(str(value))), context)
    last = max(rows.height, 1)
    sheet.data_validation(1, 2, last, 2, {"validate": "list", "source": decisions, "input_title": "Decision", "input_message": "Leave blank if not discussed"})
    sheet.data_validation(1, 1, last, 1, {"validate": "date", "criteria": ">=", "value": dt.datetime(2000, 1, 1), "error_message": "A date, e.g. 2026-11-12"})
    sheet.set_column(0, 0, 12)
    sheet.set_column(1, 3, 18)
    sheet.set_column(4, 4, 40)
    sheet.set_column(len(DECISION_COLUMNS), len(headers) - 1, 24)
    sheet.freeze_panes(1, 1)
    # locked against slips, not secrets: no password, so a council's own tools can still edit it
    sheet.protect("", {"select_locked_cells": True, "select_unlocked_cells": True})


def _as_cells(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[bool]]:
    """A sheet's columns as its cells hold them: numbers as numbers, everything else as text as
    Python writes it, neutralised where a spreadsheet would read a formula. Returns the frame and
    which columns are numbers."""
    numeric = [dtype.is_numeric() for dtype in frame.dtypes]
    columns = []
    for (name, dtype), is_number in zip(frame.schema.items(), numeric):
        if is_number:
            columns.append(pl.col(name))
            continue
        # text as str() gives it: Polars writes dates and text so, and a flag as str() does; anything
        # else goes through str()
        if dtype in (pl.String, pl.Date):
            text = pl.col(name).cast(pl.String)
        elif dtype == pl.Boolean:
            text = pl.col(name).replace_strict({True: "True", False: "False"}, return_dtype=pl.String)
        else:
            text = pl.col(name).map_elements(str, return_dtype=pl.String)
        columns.append(_neutralised(text).alias(name))
    return frame.select(columns), numeric


def _escaped(text: pl.Expr, quotes: bool = True) -> pl.Expr:
    """Text escaped for HTML as Jinja's autoescape (markupsafe) escapes it; without `quotes`, for
    XML element text, as xlsxwriter escapes it."""
    entities = [("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")] + ([('"', "&#34;"), ("'", "&#39;")] if quotes else [])
    for character, entity in entities:
        text = text.str.replace_all(character, entity, literal=True)
    return text


#: A cell's text as xlsxwriter would store it, where plain escaping is not enough: longer than a
#: cell holds (32,767 UTF-16 units), a control character (which XML 1.0 cannot carry), or text that
#: reads as such an escape already ("_x0041_"). Rare, so found by one pattern and mended in Python.
NEEDS_MENDING = r"_x[0-9a-fA-F]{4}_|[\x00-\x08\x0B-\x1F\x{FFFE}\x{FFFF}]"
CELL_MAX_UTF16 = 32_767


def _mended(text: str) -> str:
    """As xlsxwriter writes a string (worksheet `_write_string`, `_escape_control_characters`)."""
    if len(text) > CELL_MAX_UTF16 // 2 and len(text.encode("utf-16-le")) // 2 > CELL_MAX_UTF16:
        text = text.encode("utf-16-le")[: 2 * CELL_MAX_UTF16].decode("utf-16-le", errors="ignore")
    text = re.sub(r"(_x[0-9a-fA-F]{4}_)", r"_x005F\1", text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f]", lambda m: f"_x{ord(m.group()):04X}_", text)
    return text.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")


def _rows_xml(title: str, cells: pl.DataFrame, numeric: list[bool]) -> str:
    """The <row> elements of a data sheet below its header, as xlsxwriter writes them when it
    streams (constant_memory): text as inline strings, numbers as values, an empty cell left out.
    Made a column at a time in Polars, where xlsxwriter takes about 6 us of Python a cell: at 1.2M
    residents a locality's workbook holds 530,000 cells."""
    if cells.is_empty():
        return ""
    row = pl.int_range(2, pl.len() + 2, dtype=pl.Int64).cast(pl.String)
    columns = []
    for index, (name, is_number) in enumerate(zip(cells.columns, numeric)):
        ref = pl.lit(f'<c r="{xl_col_to_name(index)}')
        if is_number:
            if cells[name].dtype.is_float() and not cells[name].is_finite().fill_null(True).all():
                raise ValueError(f"the pack's {title} sheet: column {name} holds a value that is not a finite number")
            columns.append(pl.concat_str(ref, row, pl.lit('"><v>'), pl.col(name).cast(pl.String), pl.lit("</v></c>")))
            continue
        text = cells[name]
        mend = (text.str.contains(NEEDS_MENDING) | (text.str.len_chars() > CELL_MAX_UTF16 // 2)).fill_null(False)
        if mend.any():
            at = mend.arg_true()
            cells = cells.with_columns(text.scatter(at, [_mended(value) for value in text.gather(at).to_list()]))
        escaped = _escaped(pl.col(name), quotes=False)  # (in an element's text, as xlsxwriter leaves them)
        preserve = pl.when(pl.col(name).str.contains(r"^\s|\s$")).then(pl.lit(' xml:space="preserve"')).otherwise(pl.lit(""))
        columns.append(pl.concat_str(ref, row, pl.lit('" t="inlineStr"><is><t'), preserve, pl.lit(">"), escaped, pl.lit("</t></is></c>")))
    rows = cells.select(pl.concat_str(pl.lit('<row r="'), row, pl.lit('">'), *columns, pl.lit("</row>"), ignore_nulls=True).alias("xml"))
    return rows["xml"].str.join("").item()


def _fill_sheets(book, out: str, rows: dict[str, tuple[str, int, int]]) -> None:
    """Copy the workbook xlsxwriter wrote (a file or a buffer) to `out`, each data sheet's rows
    (by its part's name: their XML, and the rows and columns the sheet then spans) placed after
    its header. Deflated at level 1: a locality's workbook at 1.2M residents is 3.9 MB rather than
    3.2 at zlib's default level, compressed in 0.1 rather than 0.3 s (2.9 MB when xlsxwriter wrote
    every cell, its text in a shared-strings table, in 2.8 s)."""
    import zipfile

    with zipfile.ZipFile(book) as written, zipfile.ZipFile(out, "w") as filled:
        missing = set(rows) - set(written.namelist())
        if missing:
            raise ValueError(f"the workbook has no part {sorted(missing)} to fill")
        for item in written.infolist():
            data = written.read(item)
            if item.filename in rows:
                xml, height, width = rows[item.filename]
                sheet = data.decode("utf-8")
                sheet = re.sub(r'<dimension ref="[^"]*"/>', f'<dimension ref="A1:{xl_col_to_name(width - 1)}{height + 1}"/>', sheet, count=1)
                data = sheet.replace("</sheetData>", xml + "</sheetData>", 1).encode("utf-8")
            filled.writestr(item, data, zipfile.ZIP_DEFLATED, 1)


def write_xlsx(lists: pl.DataFrame, members: pl.DataFrame, path: Path, view: FamilyView | None = None) -> None:
    import xlsxwriter

    families = lists.with_columns(pl.col("needs").list.join("; "), pl.col("top_reasons").list.join("\n"))
    sheets = [("Families", families), ("Members", members.drop("person_id"))]
    if view is not None:
        # a family's chronology and who else knows it, for the families on this list only
        listed = lists.select("family_ref")
        sheets += [
            ("Chronology", view.chronology.join(listed, on="family_ref", how="semi").select("family_ref", pl.col("event_date").cast(pl.String), "member", "agency", "what")),
            ("Who else knows", view.known_to.join(listed, on="family_ref", how="semi").select("family_ref", "kind", "detail")),
        ]

    def write(tmp: str) -> None:
        # xlsxwriter writes the decision sheet (its drop-downs, locks and formats) and each data
        # sheet's header, in memory; the data sheets' rows are then placed in its XML (`_rows_xml`):
        # at 1.2M residents a locality's workbook (530,000 cells) in 0.7 rather than 2.8 s
        buffer = io.BytesIO()
        book = xlsxwriter.Workbook(buffer, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
        rows = {}
        try:
            _decision_sheet(book, lists)
            for title, frame in sheets:
                sheet = book.add_worksheet(title)
                bold = book.add_format({"bold": True})
                for col, name in enumerate(frame.columns):
                    sheet.write_string(0, col, name, bold)
                cells, numeric = _as_cells(frame)
                rows[f"xl/worksheets/sheet{sheet.index + 1}.xml"] = (_rows_xml(title, cells, numeric), frame.height, frame.width)
        finally:
            book.close()
        _fill_sheets(buffer, tmp, rows)

    write_atomically(path, write)


def _text(column: str) -> pl.Expr:
    """A field as the template wrote `{{ field }}`: str() of the value ("None" where missing), escaped."""
    return _escaped(pl.col(column).cast(pl.String).fill_null("None"))


def _or_nothing(column: str) -> pl.Expr:
    """`{{ field or "" }}`: a missing or empty field writes nothing."""
    return _escaped(pl.col(column).cast(pl.String).fill_null(""))


def _members_html(members: pl.DataFrame) -> pl.DataFrame:
    """family_ref, members_html: each family's rows of its members' table, in the members' order."""
    confidence = pl.col("placement_confidence")
    said = (
        pl.when(confidence == "low").then(pl.lit(" <strong>(a guess: check before the meeting)</strong>"))
        .when(confidence == "medium").then(pl.lit(" (likely)")).otherwise(pl.lit(""))
    )
    rows = members.select("family_ref", pl.concat_str(
        pl.lit('<tr class="placement-'), _text("placement_confidence"), pl.lit('"><td>'), _text("name"), pl.lit("</td><td>"), _text("dob"),
        pl.lit("</td><td>"), _text("role"), pl.lit("</td>\n<td>"), _text("placed_by"), said, pl.lit("</td></tr>\n"),
    ).alias("row"))
    return rows.group_by("family_ref", maintain_order=True).agg(pl.col("row").str.join("").alias("members_html"))


def _needs_html(programme: Programme) -> pl.Expr:
    """Every need of the programme, each labelled and marked met or not in text, so a printed
    pack (where colour and hover are lost) still says which."""
    needs = pl.col("needs").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    items = [
        pl.when(needs.list.contains(pl.lit(need))).then(pl.lit(f'<li class="met">&#9632; {escape(need)}</li>'))
        .otherwise(pl.lit(f'<li class="unmet">&#9633; {escape(need)}</li>'))
        for need in programme.needs
    ]
    return pl.concat_str(pl.lit(f'<ul class="needs" aria-label="{escape(programme.need_word)}: filled squares are met">'), *items, pl.lit("</ul>"))


def _list_items_html(column: str) -> pl.Expr:
    """`<li>` an item of a list column, escaped (a missing item "None"), each on its line."""
    items = pl.col(column).fill_null(pl.lit([], dtype=pl.List(pl.String)))
    each = items.list.eval(pl.lit("<li>") + _escaped(pl.element().fill_null("None")) + pl.lit("</li>\n"))
    return each.list.join("")


def _flags_html() -> pl.Expr:
    """The family's status, circumstances, whether already known and its last discussion, those
    it has, escaped and joined with " · "."""
    flags = [
        pl.when(pl.col(c).cast(pl.String).fill_null("") != "").then(_escaped(pl.col(c).cast(pl.String))) for c in ("status", "circumstances", "already_known")
    ] + [
        pl.when(pl.col("last_discussed").is_not_null()).then(
            _escaped(pl.lit("discussed ") + pl.col("last_discussed").cast(pl.String) + pl.lit(": ") + pl.col("last_decision").cast(pl.String).fill_null("None"))
        )
    ]
    return pl.concat_list(flags).list.drop_nulls().list.join(" · ")


def _rows_html(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """family_ref, html: each family's rows of a table as HTML, a <tr> a row and a <td> a column
    (a missing value empty), the text escaped, a row a line."""
    cells = [pl.lit("<td>") + _escaped(pl.col(c).cast(pl.String).fill_null("")) + pl.lit("</td>") for c in columns]
    rows = frame.select("family_ref", pl.concat_str(pl.lit("<tr>"), *cells, pl.lit("</tr>")).alias("row"))
    return rows.group_by("family_ref", maintain_order=True).agg(pl.col("row").str.join("\n").alias("html"))


def _families_html(lists: pl.DataFrame, members: pl.DataFrame, programme: Programme, view: FamilyView | None) -> str:
    """Each listed family's block of the page, in the list's order, made a column at a time in
    Polars rather than a field at a time by a template: a 1.2M county's four pages (15,000
    families) took 2.1 s in Jinja."""
    families = lists.with_row_index("_order")
    if members.height:
        families = families.join(_members_html(members), on="family_ref", how="left")
    else:
        families = families.with_columns(pl.lit(None, pl.String).alias("members_html"))
    if view is not None:
        known = view.known_to.group_by("family_ref", maintain_order=True).agg((pl.lit("<li>") + _text("detail") + pl.lit("</li>\n")).str.join("").alias("known_html"))
        chronology = _rows_html(view.chronology, ["event_date", "member", "agency", "what"]).rename({"html": "chronology_html"})
        families = families.join(known, on="family_ref", how="left").join(chronology, on="family_ref", how="left")
    else:
        families = families.with_columns(pl.lit(None, pl.String).alias("known_html"), pl.lit(None, pl.String).alias("chronology_html"))
    families = families.sort("_order")
    known_block = pl.when(pl.col("known_html").is_not_null()).then(
        pl.lit('<h3>Who else knows this family</h3>\n<ul class="known-to">\n') + pl.col("known_html") + pl.lit("</ul>\n")
    ).otherwise(pl.lit(""))
    chronology_block = pl.when(pl.col("chronology_html").fill_null("") != "").then(
        pl.lit('<h3>Chronology</h3>\n<table class="chronology"><tr><th>Date</th><th>Member</th><th>Agency</th><th>What</th></tr>\n')
        + pl.col("chronology_html") + pl.lit("\n</table>\n")
    ).otherwise(pl.lit(""))
    sections = families.select(pl.concat_str(
        pl.lit('<section class="family" data-family="'), _text("family_ref"), pl.lit('">\n<h2>'), _text("rank"), pl.lit(". "), _text("family_ref"),
        pl.lit(' <span class="band '), _text("band"), pl.lit('">'), _text("band"), pl.lit(", score "), _text("score"), pl.lit("</span></h2>\n"),
        pl.lit('<p class="address">'), _or_nothing("address"), pl.lit(" "), _or_nothing("postcode"), pl.lit("</p>\n"),
        pl.lit('<table class="members"><tr><th>Name</th><th>Date of birth</th><th>Role</th><th>Placed in this family by</th></tr>\n'),
        pl.col("members_html").fill_null(""), pl.lit("</table>\n"),
        pl.lit("<p><strong>Headline needs met: "), _text("needs_met"), pl.lit(f" of {len(programme.needs)}</strong></p>\n"),
        _needs_html(programme), pl.lit('\n<ul class="reasons">\n'), _list_items_html("top_reasons"), pl.lit("</ul>\n"),
        pl.lit('<p class="flags">'), _flags_html(), pl.lit(" · most recent event "), _text("latest_event"), pl.lit("</p>\n"),
        known_block, chronology_block, pl.lit("</section>\n"),
    ).alias("html"))
    return sections["html"].str.join("").item() if sections.height else ""


def pack_html(locality: str, month: str, lists: pl.DataFrame, members: pl.DataFrame, programme: Programme, view: FamilyView | None = None) -> str:
    body = render("pack.html.j2", locality=locality, month=month, families=lists.height, programme=programme,
                  sections=Markup(_families_html(lists, members, programme, view)))
    return page(f"{locality} allocation meeting, {month}", body, layout="pack")


def summary_html(summary: ChairSummary) -> str:
    """The chair's one page: per locality listed, new, carried over, high band and allocations
    waiting, with links to the packs; needs met; last month's decisions; the unplaced."""
    return page(f"Locality lists, {summary.month}", render("summary.html.j2", s=summary, slug=pack_slug))


def pack_slug(locality: str) -> str:
    """The file name (without suffix) of a locality's pack: 'South West' -> 'south_west'."""
    return re.sub(r"[^a-z0-9]+", "_", locality.lower()).strip("_")


#: Families listed, across every locality, from which the packs are shared with a second process
#: (`_written_with_a_second_process`): a pack is still some Python (the decision sheet, cell by
#: cell); at 1.2M residents the four packs took 3.9-4.6 s in two worker processes, a locality each
#: in turn, while the step's process waited, and 3.7-4.0 s shared, on the same lists (alternating,
#: three each); below this, starting a process (importing Polars and the templates, 0.6-0.7 s)
#: costs more than it saves.
PARALLEL_FROM_FAMILIES = 5_000


def _write_locality_pack(locality: str, month: str, part: pl.DataFrame, people: pl.DataFrame, programme: Programme, own: FamilyView | None, folder: Path) -> list[Path]:
    """One locality's pack: HTML for print, XLSX for the meeting to fill in, CSV for systems."""
    slug = pack_slug(locality)
    # the page's rows are many dicts, none in a cycle: the collector walking them again and again
    # took a tenth of the step when the workbook's cells were held as objects too (locality_lists
    # alone at 1.2M residents 12.4 -> 11.2 s)
    with without_cycle_collection():
        write_text_atomically(pack_html(locality, month, part, people, programme, own), folder / f"{slug}.html")
        write_xlsx(part, people, folder / f"{slug}.xlsx", own)
        write_csv(part, people, folder / f"{slug}.csv")
    return [folder / f"{slug}.{ext}" for ext in ("html", "xlsx", "csv")]


def _written_with_a_second_process(packs: list[tuple]) -> list[Path]:
    """The packs written by this process and a second one (`warehouse.started_process`), the
    largest first, each taking the next as it comes free: this one starts at once, the second
    once its imports are done (0.6-0.7 s), and neither waits while a pack is left. Two worker
    processes, a pack each in turn, each paid for its own start while this one waited on them."""
    pending = deque(sorted(range(len(packs)), key=lambda i: -packs[i][2].height))
    written: dict[int, list[Path]] = {}
    second = started_process(__name__)
    try:
        mine = pending.popleft()
        theirs = (pending[0], second.submit(_write_locality_pack, *packs[pending.popleft()]))
        written[mine] = _write_locality_pack(*packs[mine])
        while pending or theirs is not None:
            if theirs is not None and (theirs[1].done() or not pending):
                written[theirs[0]] = theirs[1].result()
                theirs = None
            if theirs is None and pending:
                theirs = (pending[0], second.submit(_write_locality_pack, *packs[pending.popleft()]))
            if pending:
                mine = pending.popleft()
                written[mine] = _write_locality_pack(*packs[mine])
    finally:
        second.shutdown(cancel_futures=True)
    return [path for i in range(len(packs)) for path in written[i]]


def write_packs(
    lists: pl.DataFrame, members: pl.DataFrame, month: str, folder: Path, summary: ChairSummary, programme: Programme, view: FamilyView | None = None,
    parallel_from: int | None = None,
) -> list[Path]:
    """Every locality's pack and the chair's summary. `parallel_from`: the families listed from
    which packs are shared with a second process (PARALLEL_FROM_FAMILIES by default), which is
    spawned, so a script calling this must guard its main (`if __name__ == "__main__":`), as
    with any multiprocessing: Dagster's and earlyhelp's own entry points do."""
    folder.mkdir(parents=True, exist_ok=True)
    packs = []
    for (locality,), part in lists.group_by("locality", maintain_order=True):
        listed = part.select("family_ref")
        people = members.join(listed, on="family_ref", how="semi")
        # each pack reads only its own families' chronology: at 1.2M residents, walking the whole
        # county's for every locality was a third of the step
        own = FamilyView(view.chronology.join(listed, on="family_ref", how="semi"), view.known_to.join(listed, on="family_ref", how="semi")) if view else None
        packs.append((locality, month, part, people, programme, own, folder))
    if len(packs) > 1 and usable_cores() > 1 and lists.height >= (PARALLEL_FROM_FAMILIES if parallel_from is None else parallel_from):
        written = _written_with_a_second_process(packs)
    else:
        written = [path for pack in packs for path in _write_locality_pack(*pack)]
    write_text_atomically(summary_html(summary), folder / "summary.html")
    return written + [folder / "summary.html"]
