"""The partnership's needs analysis as a page (charts that print) and CSV files."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from markupsafe import Markup

from models.needs_analysis import ALL, SUPPRESSED, NeedsAnalysis
from reports import page, render
from warehouse import write_atomically, write_text_atomically


def _number(value: str) -> int | None:
    return None if value == SUPPRESSED else int(value.replace(",", ""))


def _sparkline(values: list[str]) -> Markup:
    """A line through the months' counts; a hidden count is a gap, never a guess."""
    numbers = [_number(v) for v in values]
    top = max((n for n in numbers if n is not None), default=0) or 1
    points, segments = [], []
    for i, n in enumerate(numbers):
        if n is None:
            if points:
                segments.append(points)
            points = []
            continue
        points.append(f"{i * 8 + 2},{22 - 20 * n / top:.1f}")
    if points:
        segments.append(points)
    lines = "".join(f'<polyline points="{" ".join(p)}" fill="none" stroke="#3b6ea5" stroke-width="1.5"/>' if len(p) > 1 else f'<circle cx="{p[0].split(",")[0]}" cy="{p[0].split(",")[1]}" r="1.5" fill="#3b6ea5"/>' for p in segments)
    return Markup(f'<svg width="{len(values) * 8 + 4}" height="24" role="img" aria-label="trend">{lines}</svg>')


def needs_analysis_html(a: NeedsAnalysis) -> str:
    def areas(types: list[str], measure: str):
        frame = a.by_area.filter(pl.col("area_type").is_in(types))
        for (area,), part in frame.group_by("area", maintain_order=True):
            yield ("County" if area == ALL else area), part[measure].to_list()

    wards = [
        (key, part["families"].to_list())
        for key, part in a.by_area.filter(pl.col("area_type") == "ward").group_by("locality", "area", maintain_order=True)
    ]
    together = [(need, a.together.filter(pl.col("need") == need)["families"].to_list()) for need in a.needs]
    months = a.by_month["month"].unique(maintain_order=True).to_list()
    trend = []
    for need in a.needs:
        cells = a.by_month.filter(pl.col("need") == need)["families"].to_list()
        trend.append((need, cells, _sparkline(cells)))
    kinds = a.decisions["decision"].unique(maintain_order=True).to_list()
    decisions = [(loc, part["decisions"].to_list()) for (loc,), part in a.decisions.group_by("locality", maintain_order=True)]
    county_max = max((n for n in (_number(v) for v in a.by_area.filter(pl.col("area_type") == "county")["families"]) if n is not None), default=1)
    body = render(
        "needs_analysis.html.j2", a=a, areas=areas, wards=wards, together=together, months=months, trend=trend, kinds=kinds,
        decisions=decisions, decided=a.any_decisions,
        county_max=county_max,
    )
    return page(f"Needs analysis, {a.month}", body)


def write_needs_analysis(a: NeedsAnalysis, folder: Path) -> list[Path]:
    """needs_analysis.html and one CSV per table under `folder`; returns the files written."""
    written = [folder / "needs_analysis.html"]
    write_text_atomically(needs_analysis_html(a), written[0])
    for name, frame in a.tables().items():
        path = folder / f"{name}.csv"
        write_atomically(path, frame.write_csv)
        written.append(path)
    return written
