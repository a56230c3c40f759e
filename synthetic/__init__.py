"""The synthetic county: a deterministic, realistic landing folder for demos, tests and benchmarks.

    from synthetic import generate_county
    summary = generate_county(people=20_000, seed=7, month="2026-10", out=Path("data/landing"))

writes `<out>/<source>/*.csv` exactly as the spec lays out a landing folder, and
`<out>/truth.csv` (never read by the pipeline's production path).
"""

from synthetic.writer import generate_county

__all__ = ["generate_county"]
