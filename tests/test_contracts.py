import datetime as dt
import json
from importlib import resources

import jsonschema
import pytest
import yaml

from data_contracts import (
    CLASSIFICATIONS,
    ContractError,
    contract_paths,
    load_contracts,
    parse_contract,
    read_yaml,
    sources_of_kind,
)


def test_the_yaml_reader_reads_what_safe_load_reads_and_builds_no_objects():
    """Contracts, the registry and an authorities file are read by libyaml's parser where PyYAML
    has it: the same documents as yaml.safe_load, and just as unwilling to run a tag's code."""
    from features.registry import DEFAULT_REGISTRY

    for path in [*contract_paths(), DEFAULT_REGISTRY]:
        assert read_yaml(path.read_text(encoding="utf-8")) == yaml.safe_load(path.read_text(encoding="utf-8")), path.name
    assert read_yaml("when: 2026-10-01\ncode: 010\nflag: yes\n") == {"when": dt.date(2026, 10, 1), "code": 8, "flag": True}
    # an unsafe loader would call os.path.join and return "a/b"
    with pytest.raises(yaml.constructor.ConstructorError):
        read_yaml("!!python/object/apply:os.path.join ['a', 'b']")


@pytest.fixture(scope="module")
def odcs_schema():
    with resources.files("open_data_contract_standard").joinpath("schema.json").open() as fh:
        return json.load(fh)


@pytest.mark.parametrize("path", contract_paths(), ids=lambda p: p.name)
def test_contract_is_valid_odcs(path, odcs_schema):
    document = yaml.safe_load(path.read_text())
    jsonschema.validate(document, odcs_schema, cls=jsonschema.Draft202012Validator)
    assert document["apiVersion"].startswith("v3.")


# The spec's word, written here independently of the contracts it checks.
SPEC_PARTNER_SOURCES = ("school_attendance", "asb_incidents", "domestic_abuse", "ae_attendances", "worklessness")
SPEC_REFERENCE_SOURCES = ("open_cases", "postcode_localities", "meeting_outcomes", "front_door_contacts", "address_gazetteer")
#: Version 2: every extract that names people may carry NHS_NUMBER (sections 1 to 5, open_cases, front door).
SPEC_PERSON_SOURCES = SPEC_PARTNER_SOURCES + ("open_cases", "front_door_contacts")
#: Sources a council may not send at all (no meeting yet; the v2 optional sources).
SPEC_OPTIONAL_SOURCES = ("address_gazetteer", "front_door_contacts", "meeting_outcomes")


def test_every_source_in_the_spec_has_a_contract():
    contracts = load_contracts()
    assert set(SPEC_PARTNER_SOURCES) | set(SPEC_REFERENCE_SOURCES) == set(contracts)
    assert set(sources_of_kind("partner")) == set(SPEC_PARTNER_SOURCES)
    assert set(sources_of_kind("reference")) == set(SPEC_REFERENCE_SOURCES)
    assert sorted(s for s in contracts if contracts[s].may_be_empty) == sorted(SPEC_OPTIONAL_SOURCES)


@pytest.mark.parametrize("source", SPEC_PERSON_SOURCES)
def test_every_extract_naming_people_may_carry_the_nhs_number(source):
    contract = load_contracts()[source]
    column = contract.column("nhs_number")
    assert column.partner_name == "NHS_NUMBER" and not column.required
    # an identifier only helps to find the person: a broken one is set aside, the row still loads
    assert column.set_aside and column.check == "nhs_number"
    assert contract.holds_people


def test_family_help_is_a_service_and_a_lead_practitioner_case():
    from rules import LEAD_PRACTITIONER_SERVICES, STATUTORY_SERVICES

    services = load_contracts()["open_cases"].column("service").allowed_values
    assert {"EARLY_HELP", "FAMILY_HELP", "CIN", "CP", "CLA", "YOS"} == set(services)
    assert set(LEAD_PRACTITIONER_SERVICES) == {"EARLY_HELP", "FAMILY_HELP"} and not set(LEAD_PRACTITIONER_SERVICES) & set(STATUTORY_SERVICES)


@pytest.mark.parametrize("source", SPEC_PARTNER_SOURCES + SPEC_REFERENCE_SOURCES)
def test_contract_carries_governance(source):
    contract = load_contracts()[source]
    doc = contract.document
    assert doc["description"]["purpose"]
    assert doc["team"]["members"], "an owner and contact"
    assert contract.custom.get("lawfulBasis")
    assert contract.retention_years is not None
    assert contract.natural_key, "each contract names its natural key"
    assert all(c.classification in CLASSIFICATIONS for c in contract.columns)
    if source in SPEC_PARTNER_SOURCES:
        assert any(d["type"] == "informationSharingAgreement" for d in doc["authoritativeDefinitions"])


def test_lawful_bases_follow_the_data():
    contracts = load_contracts()
    assert "9(2)(g)" in contracts["ae_attendances"].custom["specialCategoryCondition"]
    for police in ("asb_incidents", "domestic_abuse"):
        assert "Article 10" in contracts[police].custom["criminalOffenceCondition"]


def test_natural_keys_match_the_spec():
    contracts = load_contracts()
    assert contracts["ae_attendances"].natural_key == ("attendance_id",)
    assert contracts["worklessness"].natural_key == ("claim_ref", "role")
    assert contracts["domestic_abuse"].natural_key[:2] == ("notification_id", "person_role")
    attendance = contracts["school_attendance"]
    assert attendance.natural_key == ("upn", "school_urn", "academic_year", "term")
    assert attendance.column("upn").key_fallback == ("forename", "surname", "dob")


def test_natural_keys_are_the_specs_and_only_always_sent_keys_are_primary_keys():
    # the spec's natural keys, written here independently of the contracts
    assert {s: c.natural_key for s, c in load_contracts().items()} == {
        "address_gazetteer": ("uprn",),
        "ae_attendances": ("attendance_id",),
        "asb_incidents": ("incident_ref", "role", "forename", "surname", "dob"),
        "domestic_abuse": ("notification_id", "person_role", "forename", "surname", "dob"),
        "front_door_contacts": ("contact_id", "forename", "surname", "dob"),
        "meeting_outcomes": ("family_ref", "meeting_date"),
        "open_cases": ("case_id",),
        "postcode_localities": ("postcode",),
        "school_attendance": ("upn", "school_urn", "academic_year", "term"),
        "worklessness": ("claim_ref", "role"),
    }
    for contract in load_contracts().values():
        for prop in contract.document["schema"][0]["properties"]:
            assert not prop.get("primaryKey") or prop.get("required"), f"{contract.source}.{prop['name']}: a primary key a partner may leave blank"
    path = next(p for p in contract_paths() if p.stem == "asb_incidents")
    document = yaml.safe_load(path.read_text())
    dob = next(p for p in document["schema"][0]["properties"] if p["name"] == "dob")
    dob.update(primaryKey=True, primaryKeyPosition=5)
    with pytest.raises(ContractError, match="asb_incidents.dob: a primary key column must be required"):
        parse_contract(document, path)


def test_every_contract_says_where_its_files_are_read_from():
    for contract in load_contracts().values():
        (server,) = contract.document["servers"]
        assert server["type"] == "local" and server["format"] == "csv"
        assert server["path"] == f"./data/landing/{contract.source}/*.csv"
