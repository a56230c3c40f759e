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
    assert "not been evaluated" in record and "earlyhelp model" in record


def test_the_ig_pack_opens_with_what_a_dpia_reviewer_reads_first():
    from governance.dpia import RunConfiguration, dpia_sections

    contracts = load_contracts()
    run = RunConfiguration.from_audit(
        "programme=supporting_families; registry_sha256=x; include_already_known=True; list_front_door_nfa=False; ordered_by=score",
        programme="supporting_families", decisions_recorded=5, recorders=2, consent_declined=1,
    )
    pack = ig_pack(contracts, load_registry(), None, None, dpia_sections(contracts, run))
    order = [pack.index(h) for h in (
        "## Safeguards", "## Data flow", "## Controllers and processors", "## Privacy notice", "## Appropriate policy documents", "## Retention",
        "## Sources at a glance",
    )]
    assert order == sorted(order), "the reviewer's sections come first, in order"
    for source in (c for c in contracts.values() if c.holds_people):
        assert f"landing/{source.source}/" in pack.split("## Data flow")[1].split("##")[0], "every person source is on the diagram"
    policies = pack.split("## Appropriate policy documents")[1].split("\n## ")[0]
    part_2 = [c for c in contracts.values() if "Part 2" in str(c.custom.get("specialCategoryCondition", "")) + str(c.custom.get("criminalOffenceCondition", ""))]
    assert {"ae_attendances", "open_cases", "asb_incidents"} <= {c.source for c in part_2}
    for contract in part_2:
        row = next(line for line in policies.splitlines() if line.startswith(f"| {contract.title} |"))
        assert "none stated" not in row and "appropriate-policy-document" in row
    retention = pack.split("## Retention")[1].split("\n## ")[0]
    for contract in contracts.values():
        assert f"`raw_{contract.source}`" in retention
    assert "`packs/<month>/`" in retention and "90 days" in retention
    assert "ordered within each locality by the transparent score" in pack and "5 decisions had been returned, recorded by 2 named people" in pack
    model = RunConfiguration.from_audit("programme=families_first; ordered_by=model; list_front_door_nfa=True", programme="families_first")
    said = dpia_sections(contracts, model)
    assert "by the scorecard model" in said and "front door contacts keep ending in no further action is also listed" in said
    assert "no meeting had yet returned a decision" in said


def test_a_schedule_1_part_2_condition_without_its_appropriate_policy_document_does_not_load(tmp_path):
    import pytest

    from data_contracts import ContractError

    folder = tmp_path / "contracts"
    shutil.copytree(CONTRACTS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = folder / "ae_attendances.yaml"
    document = yaml.safe_load(path.read_text())
    document["authoritativeDefinitions"] = [d for d in document["authoritativeDefinitions"] if d["type"] != "appropriatePolicyDocument"]
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(ContractError, match="ae_attendances.yaml: a Schedule 1 Part 2 condition needs .*appropriatePolicyDocument"):
        load_contracts(folder)


def test_the_atrs_record_states_the_safeguards_of_the_run():
    from governance.dpia import RunConfiguration, safeguards

    run = RunConfiguration(programme="supporting_families", decisions_recorded=3, recorders=1)
    record = atrs_record(load_contracts(), load_registry(), "supporting_families", {"month": "2026-09"}, None, None, safeguards(run))
    section = record.split("### Safeguards")[1].split("\n## ")[0]
    for safeguard in ("Being told", "Making representations", "Human intervention", "Contesting it"):
        assert safeguard in section
    assert "3 decisions had been returned, recorded by 1 named person" in section
