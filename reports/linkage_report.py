"""The linkage report: one self-contained HTML page of charts (inline SVG, no scripts,
nothing fetched), holding counts and weights only, never a name or a date of birth."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
from markupsafe import Markup

from reports import page, render

if TYPE_CHECKING:
    from linkage.evaluate import LinkedPersons

WIDTH, BAR_HEIGHT = 640, 22


def _histogram(values: np.ndarray, bins: np.ndarray, title: str, x_label: str, marker: float | None = None) -> str:
    counts, edges = np.histogram(values, bins=bins)
    height = 220
    top = max(int(counts.max()) if len(counts) else 1, 1)
    scale_y = (height - 40) / math.log10(top + 1)
    bar_w = (WIDTH - 60) / max(len(counts), 1)
    bars = []
    for i, c in enumerate(counts):
        h = math.log10(c + 1) * scale_y
        x = 50 + i * bar_w
        bars.append(f'<rect x="{x:.1f}" y="{height - 20 - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" fill="#3b6ea5"><title>{edges[i]:.1f} to {edges[i + 1]:.1f}: {c:,}</title></rect>')
    axis = [f'<text x="{50 + i * bar_w:.1f}" y="{height - 5}" font-size="10">{edges[i]:.0f}</text>' for i in range(0, len(counts), max(1, len(counts) // 10))]
    mark = ""
    if marker is not None and edges[0] <= marker <= edges[-1]:
        x = 50 + (marker - edges[0]) / (edges[-1] - edges[0]) * (WIDTH - 60)
        mark = f'<line x1="{x:.1f}" x2="{x:.1f}" y1="10" y2="{height - 20}" stroke="#c0392b" stroke-dasharray="4"/><text x="{x + 4:.1f}" y="20" font-size="11" fill="#c0392b">link threshold</text>'
    return _figure(title, f'<svg width="{WIDTH}" height="{height}" role="img">{"".join(bars)}{"".join(axis)}{mark}</svg>', f"{x_label}; bar heights on a log scale")


def _bars(labels: list[str], values: list[float], title: str, note: str, percent: bool = False) -> str:
    height = BAR_HEIGHT * len(labels) + 10
    top = max(values, default=1) or 1
    rows = []
    for i, (label, value) in enumerate(zip(labels, values)):
        w = (WIDTH - 340) * value / top
        text = f"{value:.0%}" if percent else f"{value:,.0f}"
        y = 5 + i * BAR_HEIGHT
        rows.append(
            f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label)}</text>'
            f'<rect x="280" y="{y}" width="{w:.1f}" height="{BAR_HEIGHT - 4}" fill="#3b6ea5"/>'
            f'<text x="{285 + w:.1f}" y="{y + 15}" font-size="11">{text}</text>'
        )
    return _figure(title, f'<svg width="{WIDTH}" height="{height}" role="img">{"".join(rows)}</svg>', note)


def _figure(title: str, svg: str, note: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{svg}<p class=note>{html.escape(note)}</p></section>"


def linkage_report(linked: LinkedPersons, pairs: pl.DataFrame, stats: dict, model_summary: dict, threshold: float, groups: pl.DataFrame | None = None) -> str:
    """linked: the persons linked and how often sources share them; pairs: scored candidate pairs;
    groups: linkage by observable group (linkage.evaluate.group_link_rates), counts and shares only."""
    weights = pairs["match_weight"].to_numpy()
    threshold_weight = math.log2(threshold / (1 - threshold))
    lo, hi = (math.floor(weights.min()), math.ceil(weights.max())) if len(weights) else (-10, 10)
    sections = [
        _histogram(weights, np.linspace(lo, hi, 41), "Match weight of candidate pairs", "match weight (bits)", threshold_weight),
    ]
    rates = linked.source_rates
    sections.append(
        _bars(
            [f"{a} → {b}" for a, b in rates.select("source", "source_other").iter_rows()],
            rates["rate"].to_list(),
            "Link rates between sources",
            "Of the persons a source mentions, the share another source also mentions.",
            percent=True,
        )
    )
    sizes = linked.persons["mentions"].to_numpy()
    sections.append(_histogram(sizes, np.arange(0.5, min(int(sizes.max()) if len(sizes) else 1, 60) + 1.5), "Mentions per person", "mentions linked to one person"))
    bands = pairs.filter(pl.col("match_probability") < threshold).with_columns(
        (pl.col("match_probability") * 10).floor().clip(0, 9).alias("band")
    ).group_by("band").len().sort("band")
    sections.append(
        _bars(
            [f"{b / 10:.1f}–{(b + 1) / 10:.1f}" for b in bands["band"].to_list()],
            bands["len"].to_list(),
            f"Pairs below the link threshold, by match probability ({stats.get('review_queue', 0):,} in the review queue)",
            "Pairs in the review band are shown to a reviewer with only the fields needed to decide.",
        )
    )
    facts = [(k.replace("_", " "), v) for k, v in stats.items() if isinstance(v, int)]
    body = render(
        "linkage_report.html.j2", facts=facts, threshold=threshold, charts=[Markup(c) for c in sections], weights=model_summary["weights"],
        groups=list(groups.iter_rows(named=True)) if groups is not None else [],
    )
    return page("earlyhelp linkage report", body)
