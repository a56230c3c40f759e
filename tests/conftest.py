"""Shared fixtures: a small synthetic county on disk, and the spec's example landing folder."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
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


@pytest.fixture(scope="session")
def august(village, tmp_path_factory) -> Path:
    """The village run for August, the month before MONTH: the output folder (shared, read only;
    `run_from` gives a test its own copy to run the next month on)."""
    from pipelines.cli import run_pipeline

    out = tmp_path_factory.mktemp("august") / "out"
    assert run_pipeline(village, "2026-08", out).success
    return out


@pytest.fixture(scope="session")
def september(village, tmp_path_factory):
    """The village run for MONTH from nothing: (the Dagster result, the output folder), shared and
    read only; a module that runs on it again takes its own copy (`run_from`)."""
    from pipelines.cli import run_pipeline

    out = tmp_path_factory.mktemp("september") / "out"
    result = run_pipeline(village, MONTH, out)
    assert result.success
    return result, out


def run_from(ran: Path, out: Path) -> Path:
    """A copy of an output folder as its run left it (warehouse, Dagster instance, packs), for a
    test's next run: what the month before costs one run a session, not one a test."""
    shutil.copytree(ran, out, symlinks=True)
    return out


@pytest.fixture(scope="session")
def listed(august, village, tmp_path_factory) -> Path:
    """The village run for two months, August then September: the output folder (shared, read only)."""
    from pipelines.cli import run_pipeline

    out = run_from(august, tmp_path_factory.mktemp("lists") / "out")
    assert run_pipeline(village, MONTH, out).success
    return out


@pytest.fixture
def examples(tmp_path) -> Path:
    """A private copy of the spec's examples, for tests that add files to it."""
    if not SPEC_EXAMPLES.is_dir():
        pytest.skip(f"the spec's examples are not at {SPEC_EXAMPLES}")
    target = tmp_path / "landing"
    shutil.copytree(SPEC_EXAMPLES, target, ignore=shutil.ignore_patterns("*.md"))
    return target


def chromium(tmp_path: Path) -> tuple[str, list[str]]:
    """Debian's headless chromium and the flags that keep it offline and private."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("Debian's chromium is not installed here (.ci/run installs it): the pages are not rendered")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    return browser, flags


def assert_renders_as_document(path: Path, tmp_path: Path) -> str:
    """A page as a browser shows it: one title, headings and (for a Markdown document) tables
    and lists rendered, one paragraph per paragraph, and no Markdown left on the page."""
    assert path.exists(), path
    browser, flags = chromium(tmp_path)
    dom = subprocess.run([browser, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<h1>") == 1, path.name
    text = re.sub(r"<[^>]+>", " ", dom)
    for leftover in ("**", "`", "&lt;http", "| ---", "()"):
        assert leftover not in text, f"{path.name}: {leftover!r} shown as text"
    source = path.with_suffix(".md")
    if source.exists():
        markdown = source.read_text()
        assert "<h2>" in dom and ("<table>" in dom) == ("\n|" in markdown) and ("<li>" in dom) == ("\n- " in markdown), path.name
        assert dom.count("<p>") <= markdown.count("\n\n") + 1, f"{path.name}: a paragraph per source line"
    return dom


#: A PostgreSQL server the tests may create databases on (`.ci/run` starts Debian's and sets it),
#: e.g. postgresql://earlyhelp:earlyhelp@127.0.0.1:5432/postgres
POSTGRES_URL = os.environ.get("EARLYHELP_TEST_POSTGRES", "")


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database for one test (dropped after it)."""
    if not POSTGRES_URL:
        if os.environ.get("EARLYHELP_REQUIRE_POSTGRES"):
            pytest.fail("EARLYHELP_REQUIRE_POSTGRES is set but EARLYHELP_TEST_POSTGRES names no server")
        pytest.skip("no PostgreSQL server here (EARLYHELP_TEST_POSTGRES); .ci/run starts one")
    import uuid

    import psycopg2

    name = f"earlyhelp_test_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(POSTGRES_URL)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        # psycopg2 (dagster-postgres's driver) named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
        yield POSTGRES_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1) + "/" + name
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def dagster_instance(request, tmp_path):
    """A Dagster instance as a council keeps one: SQLite files under the instance folder (the
    embedded default) or a PostgreSQL server (dagster-postgres, a council server's choice)."""
    import dagster as dg

    # the project's instance class (dagster.yaml), whose default storage is the SQLite one earlyhelp keeps
    overrides = {"instance_class": {"module": "pipelines.instance", "class": "EarlyhelpInstance"}}
    if request.param == "postgres":
        overrides["storage"] = {"postgres": {"postgres_url": request.getfixturevalue("postgres_url")}}
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home), overrides=overrides) as instance:
        yield instance
