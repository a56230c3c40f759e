"""Render each locality's meeting pack (HTML for print, XLSX, CSV) and the chair's summary page.

Cells that a spreadsheet could run as a formula (starting =, +, -, @, tab or carriage
return) are neutralised with a leading apostrophe in CSV and XLSX, and XLSX cells are
written as text, never as formulas.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import polars as pl

from warehouse import write_atomically, write_text_atomically
from rules import Programme, looks_like_formula


def neutralise(value: object) -> object:
    if isinstance(value, str) and looks_like_formula(value):
        return "'" + value
    return value


def _flat(lists: pl.DataFrame, members: pl.DataFrame) -> pl.DataFrame:
    """One row per family member, family fields repeated: the CSV for systems."""
    families = lists.with_columns(
        pl.col("needs").list.join("; "), pl.col("top_reasons").list.join(" | ")
    )
    flat = families.join(members.rename({"name": "member_name", "dob": "member_dob", "role": "member_role", "age": "member_age"}), on="family_ref", how="left")
    return flat.drop("person_id").with_columns([pl.col(c).map_elements(neutralise, return_dtype=pl.String) for c, t in flat.drop("person_id").schema.items() if t == pl.String])


def write_csv(lists: pl.DataFrame, members: pl.DataFrame, path: Path) -> None:
    frame = _flat(lists, members)
    write_atomically(path, frame.write_csv)


def write_xlsx(lists: pl.DataFrame, members: pl.DataFrame, path: Path) -> None:
    import xlsxwriter

    families = lists.with_columns(pl.col("needs").list.join("; "), pl.col("top_reasons").list.join("\n"))

    def write(tmp: str) -> None:
        book = xlsxwriter.Workbook(tmp, {"strings_to_formulas": False, "strings_to_urls": False})
        try:
            for title, frame in (("Families", families), ("Members", members.drop("person_id"))):
                sheet = book.add_worksheet(title)
                bold = book.add_format({"bold": True})
                for col, name in enumerate(frame.columns):
                    sheet.write_string(0, col, name, bold)
                for r, row in enumerate(frame.iter_rows(), start=1):
                    for c, value in enumerate(row):
                        if value is None:
                            continue
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            sheet.write_number(r, c, value)
                        else:
                            sheet.write_string(r, c, str(neutralise(str(value))))
        finally:
            book.close()

    write_atomically(path, write)


def _needs_chart(needs: list[str], programme: Programme) -> str:
    met = set(needs or [])
    cells = []
    for i, need in enumerate(programme.needs):
        colour = "#3b6ea5" if need in met else "#e3e7ec"
        cells.append(f'<rect x="{i * 22}" y="0" width="20" height="14" fill="{colour}"><title>{html.escape(need)}</title></rect>')
    return f'<svg class="needs" width="{len(programme.needs) * 22}" height="14" role="img" aria-label="{programme.need_word} met">{"".join(cells)}</svg>'


def _block(row: dict, members: list[dict], programme: Programme) -> str:
    esc = lambda v: html.escape("" if v is None else str(v))
    people = "".join(f"<tr><td>{esc(m['name'])}</td><td>{esc(m['dob'])}</td><td>{esc(m['role'])}</td></tr>" for m in members)
    reasons = "".join(f"<li>{esc(r)}</li>" for r in row["top_reasons"] or [])
    flags = [row["status"], row["circumstances"], row["already_known"]]
    if row["last_discussed"]:
        flags.append(f"discussed {row['last_discussed']}: {row['last_decision']}")
    return f"""<section class="family" data-family="{esc(row['family_ref'])}">
<h2>{row['rank']}. {esc(row['family_ref'])} <span class="band {esc(row['band'])}">{esc(row['band'])}, score {row['score']}</span></h2>
<p class="address">{esc(row['address'])} {esc(row['postcode'])}</p>
<table class="members"><tr><th>Name</th><th>Date of birth</th><th>Role</th></tr>{people}</table>
<p><strong>Headline needs met: {row['needs_met']}</strong> {_needs_chart(row['needs'], programme)}</p>
<p>{esc('; '.join(row['needs'] or []))}</p>
<ul class="reasons">{reasons}</ul>
<p class="flags">{esc(' · '.join(f for f in flags if f))} · most recent event {esc(row['latest_event'])}</p>
</section>"""


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.4em}
.family{border:1px solid #bbb;border-radius:4px;padding:.6em 1em;margin:1em 0;page-break-inside:avoid;break-inside:avoid}
.family h2{font-size:1.05em;margin:.2em 0}.band{font-weight:normal;font-size:.85em;padding:1px 6px;border-radius:3px;background:#eee}
.band.high{background:#f6d5d1}.band.medium{background:#fbe9c6}table.members{border-collapse:collapse;font-size:.9em}
table.members td,table.members th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:left}.flags{color:#555;font-size:.85em}
@media print{body{margin:0}}"""


def pack_html(locality: str, month: str, lists: pl.DataFrame, members: pl.DataFrame, programme: Programme) -> str:
    by_family: dict[str, list[dict]] = {}
    for m in members.iter_rows(named=True):
        by_family.setdefault(m["family_ref"], []).append(m)
    blocks = "".join(_block(row, by_family.get(row["family_ref"], []), programme) for row in lists.iter_rows(named=True))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(locality)} allocation meeting, {month}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(locality)} locality allocation meeting: families to discuss, {month}</h1>
<p>{lists.height} families eligible under the programme rule, highest score first. The list supports the meeting's decision; it makes none.
Official-sensitive: for the meeting's members only.</p>{blocks}</body></html>"""


def summary_html(month: str, lists: pl.DataFrame, unplaced: int) -> str:
    counts = lists.group_by("locality").agg(
        pl.len().alias("families"), (pl.col("status") == "new this month").sum().alias("new"), (pl.col("band") == "high").sum().alias("high")
    ).sort("locality")
    top = max(counts["families"].max() or 1, 1)
    bars = "".join(
        f'<text x="0" y="{22 * i + 15}" font-size="12">{html.escape(loc)}</text><rect x="120" y="{22 * i + 3}" width="{300 * n / top:.0f}" height="16" fill="#3b6ea5"/>'
        f'<text x="{126 + 300 * n / top:.0f}" y="{22 * i + 15}" font-size="11">{n} ({new} new, {high} high)</text>'
        for i, (loc, n, new, high) in enumerate(counts.iter_rows())
    )
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Locality lists, {month}</title><style>{STYLE}</style></head>
<body><h1>Locality allocation meetings, {month}: summary for the chair</h1>
<svg width="560" height="{22 * counts.height + 10}" role="img">{bars}</svg>
<p>{lists.height} families listed across {counts.height} localities; {unplaced} eligible families have a postcode no locality covers and are not listed.</p>
</body></html>"""


def write_packs(lists: pl.DataFrame, members: pl.DataFrame, month: str, folder: Path, unplaced: int, programme: Programme) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (locality,), part in lists.group_by("locality", maintain_order=True):
        slug = re.sub(r"[^a-z0-9]+", "_", locality.lower()).strip("_")
        people = members.join(part.select("family_ref"), on="family_ref", how="semi")
        write_text_atomically(pack_html(locality, month, part, people, programme), folder / f"{slug}.html")
        write_xlsx(part, people, folder / f"{slug}.xlsx")
        write_csv(part, people, folder / f"{slug}.csv")
        written += [folder / f"{slug}.{ext}" for ext in ("html", "xlsx", "csv")]
    write_text_atomically(summary_html(month, lists, unplaced), folder / "summary.html")
    return written + [folder / "summary.html"]
