"""Shared fixtures: a small synthetic county on disk, and the spec's example landing folder."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest

from synthetic import generate_county

REPO = Path(__file__).resolve().parents[1]
SPEC_EXAMPLES = REPO.parent / "shared" / "spec" / "examples"
MONTH = "2026-09"
TODAY = dt.date(2026, 11, 23)
# Every run in the tests counts this day as today, so retention and the future-date rules
# give the same answers on the fixed synthetic county whenever the suite runs.
os.environ["EARLYHELP_TODAY"] = TODAY.isoformat()


@pytest.fixture(scope="session")
def village(tmp_path_factory) -> Path:
    """A 2,000-resident county, generated once per test session."""
    landing = tmp_path_factory.mktemp("village") / "landing"
    generate_county(people=2_000, seed=11, month=MONTH, out=landing)
    return landing


@pytest.fixture
def examples(tmp_path) -> Path:
    """A private copy of the spec's examples, for tests that add files to it."""
    if not SPEC_EXAMPLES.is_dir():
        pytest.skip(f"the spec's examples are not at {SPEC_EXAMPLES}")
    target = tmp_path / "landing"
    shutil.copytree(SPEC_EXAMPLES, target, ignore=shutil.ignore_patterns("*.md"))
    return target
