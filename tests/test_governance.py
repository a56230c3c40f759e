"""The IG pack's field uses, read off the code and the registry (no Dagster)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from data_contracts import CONTRACTS_DIR, load_contracts
from features import load_registry
from features.registry import DEFAULT_REGISTRY
from governance.atrs import atrs_record
from governance.ig_pack import COUNCIL, ig_pack
from governance.usage import CODE_USES, field_uses

REPO = Path(__file__).resolve().parents[1]


def _uses(contracts=None, registry=None):
    return {(u.source, u.field): u for u in field_uses(contracts or load_contracts(), registry or load_registry())}


def test_declared_code_uses_are_really_in_the_code():
    for (source, field), (module, _) in CODE_USES.items():
        assert field in (REPO / module).read_text(), f"{module} does not mention {source}.{field}"


def test_every_field_is_listed_with_its_uses():
    uses = _uses()
    contracts = load_contracts()
    assert set(uses) == {(c.source, col.name) for c in contracts.values() for col in c.columns}
    assert "linkage" in " ".join(uses[("ae_attendances", "dob")].uses)
    assert any("persistent_absence" in u for u in uses[("school_attendance", "sessions_possible")].uses)
    assert any("natural key" in u for u in uses[("ae_attendances", "attendance_id")].uses)
    assert uses[("meeting_outcomes", "notes")].unused  # loaded, read by nothing: flagged


def test_a_field_nothing_uses_is_flagged_and_a_registry_use_clears_it(tmp_path):
    folder = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = folder / "asb_incidents.yaml"
    document = yaml.safe_load(path.read_text())
    document["schema"][0]["properties"].append(
        {"name": "favourite_colour", "physicalName": "FAVOURITE_COLOUR", "logicalType": "string", "required": False, "classification": "personal"}
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    contracts = load_contracts(folder)
    assert _uses(contracts)[("asb_incidents", "favourite_colour")].unused
    registry_path = tmp_path / "indicators.yaml"
    registry = yaml.safe_load(Path(DEFAULT_REGISTRY).read_text())
    asb = next(i for i in registry["indicators"] if i.get("source") == "asb_incidents")
    asb["where"] = f"({asb.get('where', 'true')}) AND asb_category IS NOT NULL"
    registry_path.write_text(yaml.safe_dump(registry, sort_keys=False))
    uses = _uses(contracts, load_registry(registry_path))
    assert any(asb["id"] in u for u in uses[("asb_incidents", "asb_category")].uses)
    pack = ig_pack(contracts, load_registry(registry_path))
    assert "`FAVOURITE_COLOUR` (favourite_colour, personal)" in pack and "`ASB_CATEGORY`" not in pack.split("## Fields flagged")[1].split("##")[0]


def test_atrs_record_marks_what_the_council_must_complete():
    record = atrs_record(load_contracts(), load_registry(), "supporting_families", {"month": "2026-09"}, None)
    for heading in ("## Tier 1", "## 1. Owner", "## 2. Description", "## 3. Decision-making", "## 4. Tool", "## 5. Model", "## 6. Data", "## 7. Risks"):
        assert heading in record
    assert record.count(COUNCIL) >= 8
    assert "at least 3" in record and "persistent_absence" in record
    assert "not been evaluated yet" in record
