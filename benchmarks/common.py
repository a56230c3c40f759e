"""What the benchmarks share: the cache of generated counties, and their command line."""

from __future__ import annotations

import argparse
from pathlib import Path

CACHE = Path(__file__).resolve().parent / "cache"


def county_arguments(
    description: str, sizes: list[int], splink_blocking: bool = False, repeat: bool = False, files: bool = False, monthly: bool = False
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if repeat:
        parser.add_argument("--repeat", type=int, default=1, help="runs of each size, interleaved; medians are reported")
    if splink_blocking:
        parser.add_argument("--splink-blocking", choices=["benchmark", "scalable"], default="benchmark", help="Splink's blocking rules (see above)")
    if files:
        parser.add_argument("--files", choices=("yearly", "monthly"), default="yearly", help="how the county's files are cut (earlyhelp generate --files)")
    if monthly:
        parser.add_argument("--monthly", action="store_true", help="run last month first and measure the month on top of it")
    parser.add_argument("--people", type=int, nargs="+", default=sizes, help="county sizes, in residents")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--month", default="2026-10", help="reference month, YYYY-MM")
    return parser.parse_args()
