"""Many councils on one deployment: two small councils run at once by one command, each its own
controller with its own contracts, landing folder, warehouse, packs and IG pack, and nothing of
one in the other's outputs."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

from data_contracts import CONTRACTS_DIR
from governance.authorities import AuthoritiesError, load_authorities
from synthetic import generate_county
from tests.conftest import MONTH

REPO = Path(__file__).resolve().parents[1]
#: Southvale's own sharing agreement for school records: in its IG pack, never in Northshire's.
SOUTHVALE_AGREEMENT = "Southvale Schools Information Sharing Agreement 2026"


def _sha256s(landing: Path) -> set[str]:
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in landing.rglob("*.csv") if p.name not in ("truth.csv", "truth_people.csv", "truth_addresses.csv")}


def _nhs_numbers(landing: Path) -> set[str]:
    found: set[str] = set()
    for path in landing.rglob("*.csv"):
        if not path.name.startswith("truth"):
            # as partners write them: 10 digits, or 3-3-4 with spaces or hyphens
            written = re.findall(r"\b[0-9]{3}[ -]?[0-9]{3}[ -]?[0-9]{4}\b", path.read_text(encoding="utf-8", errors="replace"))
            found |= {re.sub(r"[ -]", "", n) for n in written}
    return found


def _warehouse_nhs_numbers(warehouse: Path) -> set[str]:
    with duckdb.connect(str(warehouse), read_only=True) as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.columns WHERE column_name = 'nhs_number'").fetchall()]
        return {v for t in tables for (v,) in con.execute(f'SELECT DISTINCT nhs_number FROM "{t}" WHERE nhs_number IS NOT NULL').fetchall()}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Path:
    """Two councils' landing folders and an authorities file; Southvale has contracts of its own."""
    root = tmp_path_factory.mktemp("deployment")
    generate_county(people=1_200, seed=3, month=MONTH, out=root / "northshire" / "landing")
    generate_county(people=1_200, seed=5, month=MONTH, out=root / "southvale" / "landing")
    contracts = root / "southvale" / "contracts"
    shutil.copytree(CONTRACTS_DIR, contracts, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    school = contracts / "school_attendance.yaml"
    document = yaml.safe_load(school.read_text())
    document["authoritativeDefinitions"] = [
        {**d, "description": SOUTHVALE_AGREEMENT, "url": "https://southvale.example.gov.uk/isa/SV-ISA-01"} if d["type"] == "informationSharingAgreement" else d
        for d in document["authoritativeDefinitions"]
    ]
    school.write_text(yaml.safe_dump(document, sort_keys=False))
    (root / "authorities.yaml").write_text(yaml.safe_dump({"authorities": [
        {"code": "northshire", "name": "Northshire County Council", "landing": "northshire/landing", "output": "northshire/out"},
        {"code": "southvale", "name": "Southvale Borough Council", "landing": "southvale/landing", "output": "southvale/out",
         "contracts": "southvale/contracts", "programme": "families_first"},
    ]}))
    return root


def test_the_authorities_file_keeps_councils_apart_before_anything_runs(tmp_path):
    def check(entries) -> str:
        (tmp_path / "a.yaml").write_text(yaml.safe_dump({"authorities": entries}))
        with pytest.raises(AuthoritiesError) as raised:
            load_authorities(tmp_path / "a.yaml")
        return str(raised.value)

    one = {"code": "a", "landing": "a/landing", "output": "a/out"}
    assert "appears twice" in check([one, {**one, "landing": "b/landing", "output": "b/out"}])
    assert "overlap" in check([one, {"code": "b", "landing": "b/landing", "output": "a/out/b"}])
    assert "overlap" in check([one, {"code": "b", "landing": "a/landing", "output": "b/out"}])
    assert "must be 1-40 letters" in check([{**one, "code": "a b"}])
    (tmp_path / "c").mkdir()
    shutil.copy(CONTRACTS_DIR / "school_attendance.yaml", tmp_path / "c")
    assert "missing: address_gazetteer" in check([{**one, "contracts": "c"}])


def test_two_councils_run_at_once_and_nothing_of_one_reaches_the_other(deployment: Path):
    import dagster as dg

    env = {**os.environ, "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "run", "--authorities", str(deployment / "authorities.yaml"), "--month", MONTH, "--parallel", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "northshire" in done.stdout and "southvale" in done.stdout
    assert "[northshire]" in done.stderr and "[southvale]" in done.stderr  # each run's progress, said whose it is

    councils = {
        "northshire": ("Northshire County Council", deployment / "northshire"),
        "southvale": ("Southvale Borough Council", deployment / "southvale"),
    }
    for code, (name, home) in councils.items():
        other_code = next(c for c in councils if c != code)
        other_name, other_home = councils[other_code]
        out, landing, other_landing = home / "out", home / "landing", other_home / "landing"
        warehouse = out / "warehouse.duckdb"
        with duckdb.connect(str(warehouse), read_only=True) as con:
            loaded = {s for (s,) in con.execute("SELECT sha256 FROM landed_files").fetchall()}
            audit = con.execute("SELECT detail FROM audit_log WHERE action LIKE 'run %'").fetchall()
            programme = con.execute("SELECT DISTINCT programme FROM family_scores").fetchall()
        # every file it loaded is one of its own partners', none of the other council's
        assert loaded == _sha256s(landing) and not loaded & _sha256s(other_landing)
        # no person of the other council: every NHS number held came from its own extracts
        held = _warehouse_nhs_numbers(warehouse)
        assert held and held <= _nhs_numbers(landing) and not held & _nhs_numbers(other_landing)
        assert audit and all(f"authority {code};" in d and str(landing) in d for (d,) in audit)
        assert programme == [("families_first" if code == "southvale" else "supporting_families",)]
        # no file it wrote names the other council, its folders, or its people
        other_numbers = _nhs_numbers(other_landing) - _nhs_numbers(landing)
        written = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".md", ".csv", ".json", ".log", ".txt")]
        assert any(p.suffix == ".csv" for p in written) and any(p.name == "ig_pack.md" for p in written)
        for path in written:
            text = path.read_text(encoding="utf-8", errors="replace")
            assert str(other_home) not in text and other_name not in text, path
            assert not other_numbers & set(re.findall(r"\b[0-9]{10}\b", text)), path
        ig_pack = (out / "governance" / "ig_pack.md").read_text()
        assert f"The council ({name}) is the controller" in ig_pack and "several councils" in ig_pack
        assert (SOUTHVALE_AGREEMENT in ig_pack) == (code == "southvale")

    # one instance for the deployment: a run per authority for the month, and they ran at once
    with dg.DagsterInstance.from_config(str(deployment / ".dagster")) as instance:
        records = instance.get_run_records()
        runs = {r.dagster_run.tags["dagster/partition/authority"]: r for r in records}
        assert set(runs) == set(councils) and len(records) == 2
        assert all(r.dagster_run.tags["dagster/partition/month"] == MONTH and r.dagster_run.job_name == "monthly_run" for r in records)
        a, b = runs.values()
        assert a.start_time < b.end_time and b.start_time < a.end_time

    # a subject access request on a deployment reads only the named council's warehouse
    with duckdb.connect(str(deployment / "southvale" / "out" / "warehouse.duckdb"), read_only=True) as con:
        forename, surname, dob = con.execute(
            "SELECT forename, surname, dob FROM family_members WHERE dob IS NOT NULL AND forename IS NOT NULL ORDER BY person_id LIMIT 1"
        ).fetchone()
    said = {
        code: subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "subject-access", "--authorities", str(deployment / "authorities.yaml"), "--authority", code,
             "--forename", forename, "--surname", surname, "--dob", dob.isoformat(), "--reference", f"SAR-{code}"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        ).stdout
        for code in councils
    }
    assert "candidates, most likely first" in said["southvale"] and "no person matches" in said["northshire"]


AUTOMATION_PROBE = """
import datetime as dt, json
import dagster as dg
from pipelines.definitions import defs, monthly_run
from pipelines.partitions import PARTITIONS
assert isinstance(PARTITIONS, dg.MultiPartitionsDefinition)
with dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 10, 3, 6)) as context:
    schedule = defs.get_schedule_def("monthly_before_meetings").evaluate_tick(context)
sensor = defs.get_sensor_def("new_partner_files")
with dg.DagsterInstance.ephemeral() as instance:
    first = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    again = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=first.cursor, definitions=defs))
print(json.dumps({
    "schedule": sorted(str(r.partition_key) for r in schedule.run_requests),
    "sensor": sorted(str(r.partition_key) for r in first.run_requests),
    "sensor_again": len(again.run_requests),
}))
"""


def test_a_deployment_schedules_and_senses_each_authority(deployment: Path):
    import json

    env = {**os.environ, "EARLYHELP_AUTHORITIES": str(deployment / "authorities.yaml")}
    probe = subprocess.run([sys.executable, "-c", AUTOMATION_PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    seen = json.loads(probe.stdout.strip().splitlines()[-1])
    # the monthly schedule: one run per authority for the month just ended
    assert seen["schedule"] == ["northshire|2026-09", "southvale|2026-09"]
    # the landing sensor: each authority's landing folder watched on its own
    assert len(seen["sensor"]) == 2 and all(k.startswith(("northshire|", "southvale|")) for k in seen["sensor"])
    assert seen["sensor_again"] == 0


def test_the_deployment_instance_runs_authorities_side_by_side_never_two_of_one(tmp_path):
    import dagster as dg

    shutil.copy(REPO / "docs" / "deployment" / "dagster.yaml", tmp_path / "dagster.yaml")
    from pipelines.instance import EarlyhelpInstance

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance, EarlyhelpInstance), "the instance whose SQLite event log keeps its connections"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs > 1
        [limit] = queue.tag_concurrency_limits
        assert limit["key"] == "dagster/partition/authority" and limit["limit"] == 1 and limit["value"] == {"applyLimitPerUniqueValue": True}

