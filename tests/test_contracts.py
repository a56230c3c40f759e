import json
from importlib import resources

import jsonschema
import pytest
import yaml

from data_contracts import (
    CLASSIFICATIONS,
    contract_paths,
    load_contracts,
    sources_of_kind,
)


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
SPEC_REFERENCE_SOURCES = ("open_cases", "postcode_localities", "meeting_outcomes")


def test_every_source_in_the_spec_has_a_contract():
    contracts = load_contracts()
    assert set(SPEC_PARTNER_SOURCES) | set(SPEC_REFERENCE_SOURCES) == set(contracts)
    assert set(sources_of_kind("partner")) == set(SPEC_PARTNER_SOURCES)
    assert set(sources_of_kind("reference")) == set(SPEC_REFERENCE_SOURCES)
    assert [s for s in contracts if contracts[s].may_be_empty] == ["meeting_outcomes"]


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
