"""Render the small Markdown documents earlyhelp writes as self-contained HTML."""

from __future__ import annotations

import html as h
import re


def markdown_to_html(markdown: str, title: str) -> str:
    """Just enough Markdown for the documents the pipeline writes (model card, programme report,
    IG pack): headings, paragraphs, bold, bullet lists and tables."""

    def inline(text: str) -> str:
        return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", h.escape(text))

    out, table, items = [], [], []
    for line in markdown.splitlines() + [""]:
        if line.startswith("- "):
            items.append(f"<li>{inline(line[2:])}</li>")
            continue
        if items:
            out.append("<ul>" + "".join(items) + "</ul>")
            items = []
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>" + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.startswith("### "):
            out.append(f"<h3>{inline(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{inline(line[2:])}</h1>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    style = "body{font-family:system-ui,sans-serif;max-width:860px;margin:2em auto}table{border-collapse:collapse;font-size:.85em}td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}"
    return f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{h.escape(title)}</title><style>{style}</style></head><body>{"".join(out)}</body></html>'
