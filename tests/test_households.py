"""Households as of a reference date, from hand-made records: who lives where after moves,
and where people known only by postcode (A&E carries no street address) belong."""

from __future__ import annotations

import datetime as dt

import polars as pl

from linkage.families import form_households

REFERENCE = dt.date(2026, 10, 31)
SCHEMA = {
    "record_key": pl.String, "person_id": pl.String, "source": pl.String, "event_date": pl.Date, "address_date": pl.Date,
    "forename": pl.String, "surname": pl.String, "dob": pl.Date, "sex": pl.String, "birth_year_stated": pl.Int32,
    "postcode": pl.String, "house_number": pl.String, "flat": pl.String, "role": pl.String, "event_ref": pl.String,
    "contact_forename": pl.String, "contact_surname": pl.String,
}


def record(person: str, source: str, day: dt.date, forename: str, surname: str, dob: dt.date, postcode: str, house: str | None = None, **extra) -> dict:
    return {
        "person_id": person, "source": source, "event_date": day, "address_date": day, "forename": forename, "surname": surname,
        "dob": dob, "sex": "F", "postcode": postcode, "house_number": house, **extra,
    }


def households(rows: list[dict], reference: dt.date = REFERENCE) -> dict[str, tuple[str, str]]:
    frame = pl.DataFrame(
        [{**{k: None for k in SCHEMA}, **r, "record_key": f"k{i}"} for i, r in enumerate(rows)], schema=SCHEMA
    )
    members, _ = form_households(frame, reference)
    return {p: (key, how) for p, key, how in members.select("person_id", "household_key", "placed_by").iter_rows()}


D = dt.date
OLD, NEW = "AL10 1AA", "AL10 2BB"


def test_an_infant_seen_only_at_ae_moves_with_the_household_seen_there_before():
    placed = households([
        # the family at OLD (school, benefits), then at a full address at NEW
        record("mum", "worklessness", D(2024, 1, 10), "AMY", "OKAFOR", D(1990, 1, 1), OLD, "4"),
        record("mum", "worklessness", D(2026, 3, 10), "AMY", "OKAFOR", D(1990, 1, 1), NEW, "9"),
        record("kid", "school_attendance", D(2026, 5, 15), "JON", "OKAFOR", D(2016, 1, 1), NEW, "9"),
        # the infant's only record: A&E at the old postcode, no street
        record("baby", "ae_attendances", D(2025, 2, 1), "ZOE", "OKAFOR", D(2024, 12, 1), OLD),
        # someone of another surname at A&E at OLD is not taken along
        record("other", "ae_attendances", D(2025, 2, 1), "IAN", "BELL", D(1970, 5, 5), OLD),
    ])
    assert placed["baby"][0] == placed["mum"][0] == placed["kid"][0] == f"{NEW}||9"
    assert placed["baby"][1] == "moved with their household"
    assert placed["other"][0] != placed["mum"][0]


def test_a_school_leaver_known_only_from_old_records_goes_with_kin_seen_elsewhere_since():
    placed = households([
        # the leaver's last record: school at OLD, three years ago
        record("leaver", "school_attendance", D(2023, 5, 15), "SAM", "WALKER", D(2007, 3, 3), OLD, "3"),
        # mother seen at OLD's postcode then, and at NEW (postcode only) since
        record("mum", "ae_attendances", D(2023, 1, 1), "JO", "WALKER", D(1980, 2, 2), OLD),
        record("mum", "ae_attendances", D(2026, 6, 1), "JO", "WALKER", D(1980, 2, 2), NEW),
        record("sib", "ae_attendances", D(2026, 6, 1), "AL", "WALKER", D(2015, 2, 2), NEW),
    ])
    assert placed["leaver"][0] == placed["mum"][0] == placed["sib"][0]
    assert placed["leaver"][1] == "moved with their household"


def test_a_leaver_stays_while_someone_of_their_surname_still_lives_at_the_address():
    placed = households([
        record("leaver", "school_attendance", D(2023, 5, 15), "SAM", "WALKER", D(2007, 3, 3), OLD, "3"),
        record("dad", "worklessness", D(2023, 5, 1), "TOM", "WALKER", D(1975, 2, 2), OLD, "3"),
        record("mum", "ae_attendances", D(2023, 1, 1), "JO", "WALKER", D(1980, 2, 2), OLD),
        record("mum", "ae_attendances", D(2026, 6, 1), "JO", "WALKER", D(1980, 2, 2), NEW),
    ])
    assert placed["leaver"][0] == placed["dad"][0] == f"{OLD}||3"
    assert placed["leaver"][1] == "address"


def test_an_occupant_still_seen_at_the_postcode_has_not_moved_away_when_others_arrive():
    placed = households([
        # lodger: full address in 2024, A&E at the same postcode until recently
        record("lodger", "domestic_abuse", D(2024, 1, 1), "LEE", "HALL", D(1990, 4, 4), OLD, "17"),
        record("lodger", "ae_attendances", D(2026, 8, 1), "LEE", "HALL", D(1990, 4, 4), OLD),
        # a tenant of another surname first recorded there in 2026
        record("tenant", "worklessness", D(2026, 3, 8), "ROY", "DOHERTY", D(1989, 1, 1), OLD, "17"),
        # a former occupant last seen there in 2023, nowhere since
        record("former", "domestic_abuse", D(2023, 1, 1), "KAY", "MILLER", D(1992, 1, 1), OLD, "17"),
    ])
    assert placed["lodger"][0] == placed["tenant"][0] == f"{OLD}||17"
    assert placed["former"][0] != placed["tenant"][0]
    assert placed["former"][1] == "moved away together"


def test_two_families_in_two_flats_of_one_building_stay_two_households_and_each_placement_says_how_sure_it_is():
    rows = [
        record("mum_a", "worklessness", D(2026, 3, 1), "ANA", "POPA", D(1988, 1, 1), OLD, "14", flat="1"),
        record("kid_a", "school_attendance", D(2026, 5, 1), "ION", "POPA", D(2016, 1, 1), OLD, "14", flat="1"),
        record("mum_b", "worklessness", D(2026, 3, 1), "ANA", "POPA", D(1979, 6, 6), OLD, "14", flat="2"),
        record("kid_b", "school_attendance", D(2026, 5, 1), "EVA", "POPA", D(2014, 2, 2), OLD, "14", flat="2"),
        # seen only at A&E, by postcode: placed with the household of their surname there, as a guess
        record("gran", "ae_attendances", D(2026, 7, 1), "OANA", "POPA", D(1950, 5, 5), OLD),
    ]
    frame = pl.DataFrame([{**{k: None for k in SCHEMA}, **r, "record_key": f"k{i}"} for i, r in enumerate(rows)], schema=SCHEMA)
    members, _ = form_households(frame, REFERENCE)
    key = dict(zip(members["person_id"], members["household_key"]))
    confidence = dict(zip(members["person_id"], members["placement_confidence"]))
    assert key["mum_a"] == key["kid_a"] == f"{OLD}|1|14" and key["mum_b"] == key["kid_b"] == f"{OLD}|2|14"
    assert confidence["kid_a"] == "high" and confidence["gran"] == "low"


def test_two_families_sharing_one_house_are_two_families_and_a_blended_family_stays_one():
    placed = households([
        # the Nowaks' house; the Adeyemis moved in with them (a concealed family)
        record("nowak_mum", "worklessness", D(2026, 3, 1), "EWA", "NOWAKOWA", D(1985, 1, 1), OLD, "7"),
        record("nowak_kid", "school_attendance", D(2026, 5, 1), "JAN", "NOWAK", D(2015, 1, 1), OLD, "7", contact_forename="EWA", contact_surname="NOWAKOWA"),
        record("nowak_kid2", "school_attendance", D(2026, 5, 1), "OLA", "NOWACK", D(2017, 2, 2), OLD, "7"),
        record("adeyemi_mum", "worklessness", D(2026, 4, 1), "BISI", "ADEYEMI", D(1990, 3, 3), OLD, "7"),
        record("adeyemi_kid", "school_attendance", D(2026, 5, 1), "TOBI", "ADEYEMI", D(2018, 4, 4), OLD, "7", contact_forename="BISI", contact_surname="ADEYEMI"),
        # a partner of a third surname joins the family they are named with, or else the larger
        record("partner", "asb_incidents", D(2026, 6, 1), "LEE", "HART", D(1984, 5, 5), OLD, "7"),
        # a blended family: the mother's children by her first partner and her new partner's child
        record("mum", "worklessness", D(2026, 3, 1), "KAY", "REID", D(1986, 1, 1), NEW, "3"),
        record("step_kid", "school_attendance", D(2026, 5, 1), "AVA", "SHAW", D(2014, 6, 6), NEW, "3", contact_forename="KAY", contact_surname="REID"),
        record("baby", "ae_attendances", D(2026, 7, 1), "MIA", "REID", D(2025, 1, 1), NEW, "3"),
    ])
    assert placed["nowak_mum"][0] == placed["nowak_kid"][0] == placed["nowak_kid2"][0] == placed["partner"][0] == f"{OLD}||7"
    assert placed["adeyemi_mum"][0] == placed["adeyemi_kid"][0] != placed["nowak_kid"][0]
    assert placed["adeyemi_kid"][0].startswith(f"{OLD}||7|")
    assert placed["adeyemi_kid"][1] == placed["nowak_kid"][1] == "address, told apart from another family there"
    assert placed["mum"][0] == placed["step_kid"][0] == placed["baby"][0] == f"{NEW}||3"


def test_a_child_known_only_by_postcode_joins_the_sibling_named_with_them_at_the_front_door():
    placed = households([
        record("mum", "worklessness", D(2026, 3, 1), "RUTH", "KELLY", D(1988, 1, 1), OLD, "5"),
        record("kid", "school_attendance", D(2026, 5, 1), "FINN", "KELLY", D(2016, 1, 1), OLD, "5"),
        # a half-sister of her father's surname, seen at A&E and named with him in one contact
        record("half_sister", "ae_attendances", D(2026, 6, 1), "ELLA", "BRODIE", D(2021, 2, 2), OLD),
        record("kid", "front_door_contacts", D(2026, 7, 1), "FINN", "KELLY", D(2016, 1, 1), OLD, event_ref="FD1"),
        record("half_sister", "front_door_contacts", D(2026, 7, 1), "ELLA", "BRODIE", D(2021, 2, 2), OLD, event_ref="FD1"),
        # a child of the same postcode named in a contact of their own stays where the records put them
        record("neighbour", "front_door_contacts", D(2026, 7, 1), "AMY", "STONE", D(2019, 3, 3), OLD, event_ref="FD2"),
        # two families at one address: siblings named together stay one family whatever their surnames
        record("mum_b", "worklessness", D(2026, 3, 1), "ANA", "DIAZ", D(1985, 1, 1), NEW, "8"),
        record("kid_b", "school_attendance", D(2026, 5, 1), "LEO", "DIAZ", D(2015, 1, 1), NEW, "8"),
        record("kid_b2", "school_attendance", D(2026, 5, 1), "MAX", "FROST", D(2017, 1, 1), NEW, "8"),
        record("kid_b", "front_door_contacts", D(2026, 7, 1), "LEO", "DIAZ", D(2015, 1, 1), NEW, event_ref="FD3"),
        record("kid_b2", "front_door_contacts", D(2026, 7, 1), "MAX", "FROST", D(2017, 1, 1), NEW, event_ref="FD3"),
    ])
    assert placed["half_sister"] == (f"{OLD}||5", "named with a sibling at the front door")
    assert placed["neighbour"][0] != placed["kid"][0]
    assert placed["kid_b"][0] == placed["kid_b2"][0] == placed["mum_b"][0] == f"{NEW}||8"


def test_a_tie_recorded_after_the_reference_date_places_no_one_in_the_household_as_it_stood_then():
    """The scorecard's evaluation forms families as they stood in earlier months: a front-door
    contact naming two children together, made later, was not known then."""
    rows = [
        record("mum", "worklessness", D(2026, 3, 1), "RUTH", "KELLY", D(1988, 1, 1), OLD, "5"),
        record("kid", "school_attendance", D(2026, 5, 1), "FINN", "KELLY", D(2016, 1, 1), OLD, "5"),
        record("half_sister", "ae_attendances", D(2026, 6, 1), "ELLA", "BRODIE", D(2021, 2, 2), OLD),
        record("kid", "front_door_contacts", D(2026, 7, 1), "FINN", "KELLY", D(2016, 1, 1), OLD, event_ref="FD1"),
        record("half_sister", "front_door_contacts", D(2026, 7, 1), "ELLA", "BRODIE", D(2021, 2, 2), OLD, event_ref="FD1"),
    ]
    assert households(rows)["half_sister"] == (f"{OLD}||5", "named with a sibling at the front door")
    in_june = households(rows, reference=D(2026, 6, 30))
    assert in_june["half_sister"][0] != in_june["kid"][0] == f"{OLD}||5"
    assert in_june["half_sister"][1] == "postcode and surname, no address"


def test_a_child_whose_school_has_not_caught_up_with_the_move_goes_with_the_sibling_named_with_them():
    rows = [
        # two brothers at OLD; the elder's school records the move to NEW, the younger's does not yet
        record("elder", "school_attendance", D(2025, 12, 20), "ADAM", "PRICE", D(2012, 1, 1), OLD, "6"),
        record("elder", "school_attendance", D(2026, 7, 20), "ADAM", "PRICE", D(2012, 1, 1), NEW, "2"),
        record("younger", "school_attendance", D(2025, 12, 20), "BEN", "PRICE", D(2015, 1, 1), OLD, "6"),
        record("younger", "school_attendance", D(2026, 7, 20), "BEN", "PRICE", D(2015, 1, 1), OLD, "6"),
        record("elder", "front_door_contacts", D(2025, 1, 5), "ADAM", "PRICE", D(2012, 1, 1), OLD, event_ref="FD1"),
        record("younger", "front_door_contacts", D(2025, 1, 5), "BEN", "PRICE", D(2015, 1, 1), OLD, event_ref="FD1"),
        # siblings no record names together are placed by their own records
        record("sister", "school_attendance", D(2025, 12, 20), "CAT", "HUNT", D(2013, 1, 1), NEW, "9"),
        record("sister", "school_attendance", D(2026, 7, 20), "CAT", "HUNT", D(2013, 1, 1), OLD, "4"),
        record("brother", "school_attendance", D(2026, 7, 20), "DAN", "HUNT", D(2014, 1, 1), NEW, "9"),
        # one recorded at the new home once and at the old since has not been left behind by a late record
        record("twin_a", "school_attendance", D(2025, 12, 20), "EVE", "COLE", D(2013, 1, 1), OLD, "1"),
        record("twin_a", "school_attendance", D(2026, 7, 20), "EVE", "COLE", D(2013, 1, 1), NEW, "5"),
        record("twin_b", "school_attendance", D(2025, 12, 20), "FAY", "COLE", D(2013, 1, 1), NEW, "5"),
        record("twin_b", "school_attendance", D(2026, 7, 20), "FAY", "COLE", D(2013, 1, 1), OLD, "1"),
        record("twin_a", "front_door_contacts", D(2025, 1, 5), "EVE", "COLE", D(2013, 1, 1), OLD, event_ref="FD2"),
        record("twin_b", "front_door_contacts", D(2025, 1, 5), "FAY", "COLE", D(2013, 1, 1), OLD, event_ref="FD2"),
    ]
    placed = households(rows)
    assert placed["younger"] == (f"{NEW}||2", "moved with their household")
    assert placed["elder"] == (f"{NEW}||2", "address")
    assert placed["sister"] == (f"{OLD}||4", "address") and placed["brother"][0] == f"{NEW}||9"
    assert placed["twin_b"] == (f"{OLD}||1", "address")


def test_a_late_record_of_the_home_left_is_not_a_move_back():
    placed = households([
        # at OLD for years, then two records at NEW, then the police still write OLD
        record("dad", "worklessness", D(2023, 1, 10), "OMAR", "SHAH", D(1987, 1, 1), OLD, "8"),
        record("dad", "worklessness", D(2025, 9, 6), "OMAR", "SHAH", D(1987, 1, 1), NEW, "6"),
        record("dad", "asb_incidents", D(2025, 11, 21), "OMAR", "SHAH", D(1987, 1, 1), NEW, "6"),
        record("dad", "domestic_abuse", D(2026, 8, 19), "OMAR", "SHAH", D(1987, 1, 1), OLD, "8"),
        # one record somewhere else, and the old home since on more records: they stayed
        record("mum", "worklessness", D(2023, 1, 10), "ANA", "LEE", D(1987, 1, 1), OLD, "3"),
        record("mum", "asb_incidents", D(2025, 9, 6), "ANA", "LEE", D(1987, 1, 1), NEW, "2"),
        record("mum", "asb_incidents", D(2025, 9, 7), "ANA", "LEE", D(1987, 1, 1), NEW, "2"),
        record("mum", "worklessness", D(2026, 2, 1), "ANA", "LEE", D(1987, 1, 1), OLD, "3"),
        record("mum", "domestic_abuse", D(2026, 3, 1), "ANA", "LEE", D(1987, 1, 1), OLD, "3"),
        record("mum", "worklessness", D(2026, 8, 1), "ANA", "LEE", D(1987, 1, 1), OLD, "3"),
        # back at the old home long after the new one was last seen: a move back
        record("gran", "worklessness", D(2022, 1, 10), "UNA", "ROSS", D(1950, 1, 1), OLD, "5"),
        record("gran", "worklessness", D(2023, 3, 1), "UNA", "ROSS", D(1950, 1, 1), NEW, "7"),
        record("gran", "worklessness", D(2023, 6, 1), "UNA", "ROSS", D(1950, 1, 1), NEW, "7"),
        record("gran", "worklessness", D(2026, 6, 1), "UNA", "ROSS", D(1950, 1, 1), OLD, "5"),
    ])
    assert placed["dad"][0] == f"{NEW}||6"
    assert placed["mum"][0] == f"{OLD}||3"
    assert placed["gran"][0] == f"{OLD}||5"


def test_a_name_recorded_surname_first_finds_the_household_of_its_surname():
    placed = households([
        record("dad", "worklessness", D(2026, 3, 1), "IMRAN", "AKHTAR", D(1985, 1, 1), OLD, "29"),
        record("kid", "school_attendance", D(2026, 5, 1), "SARA", "AKHTAR", D(2016, 1, 1), OLD, "29"),
        # Kamran Akhtar at A&E, keyed surname first; Kamran is a forename elsewhere in the county
        record("uncle", "ae_attendances", D(2026, 6, 1), "AKHTAR", "KAMRAN", D(1990, 1, 1), OLD),
        record("other_kamran", "worklessness", D(2026, 3, 1), "KAMRAN", "IQBAL", D(1980, 1, 1), NEW, "3"),
        record("third_kamran", "worklessness", D(2026, 3, 1), "KAMRAN", "ALI", D(1982, 1, 1), NEW, "5"),
        # Lewis Price is in the usual order (Price is a surname here): not taken to the Lewises
        record("mum_lewis", "worklessness", D(2026, 3, 1), "ANN", "LEWIS", D(1985, 1, 1), OLD, "12"),
        record("kid_lewis", "school_attendance", D(2026, 5, 1), "TOM", "LEWIS", D(2016, 1, 1), OLD, "12"),
        record("lewis_price", "ae_attendances", D(2026, 6, 1), "LEWIS", "PRICE", D(1990, 1, 1), OLD),
        record("a_price", "worklessness", D(2026, 3, 1), "JOHN", "PRICE", D(1970, 1, 1), NEW, "8"),
    ])
    assert placed["uncle"] == (f"{OLD}||29", "postcode and surname")
    assert placed["lewis_price"][0] != placed["kid_lewis"][0]


def test_people_seen_at_the_address_since_replace_only_strangers():
    placed = households([
        # a mother named at a notification with her son, who carries his father's surname and is seen there since
        record("mum", "domestic_abuse", D(2024, 3, 1), "MARIE", "MACDONALD", D(1987, 1, 1), OLD, "3", role="VICTIM", event_ref="DA1"),
        record("son", "domestic_abuse", D(2024, 3, 1), "DAVID", "ROBINSON", D(2015, 1, 1), OLD, "3", role="CHILD_RESIDENT", event_ref="DA1"),
        record("son", "school_attendance", D(2026, 7, 20), "DAVID", "ROBINSON", D(2015, 1, 1), OLD, "3"),
        # a brother last seen at school in 2024; his sister, recorded as Bibi, since
        record("brother", "school_attendance", D(2024, 7, 20), "KAMRAN", "KHAN", D(2006, 1, 1), NEW, "5"),
        record("sister", "school_attendance", D(2026, 7, 20), "HIRA", "BIBI", D(2010, 1, 1), NEW, "5"),
        # a tenant last seen in 2023, and a stranger since: the tenant has moved away
        record("tenant", "worklessness", D(2023, 1, 10), "JOHN", "FOX", D(1970, 1, 1), NEW, "9"),
        record("newcomer", "worklessness", D(2026, 6, 1), "AMY", "WOLF", D(1990, 1, 1), NEW, "9"),
    ])
    assert placed["mum"][0] == placed["son"][0] == f"{OLD}||3"
    assert placed["brother"][0] == placed["sister"][0] == f"{NEW}||5"
    assert placed["tenant"][0] == f"moved from:{NEW}||9" and placed["newcomer"][0] == f"{NEW}||9"


def test_a_surname_two_households_at_the_postcode_share_places_no_one():
    placed = households([
        record("a_mum", "worklessness", D(2026, 3, 1), "ANA", "SMITH", D(1988, 1, 1), OLD, "1"),
        record("a_kid", "school_attendance", D(2026, 5, 1), "ION", "SMITH", D(2016, 1, 1), OLD, "1"),
        record("b_mum", "worklessness", D(2026, 3, 1), "EVA", "SMITH", D(1979, 6, 6), OLD, "7"),
        record("c_dad", "worklessness", D(2026, 3, 1), "LEE", "HART", D(1979, 6, 6), OLD, "9"),
        # seen only at A&E, by postcode: which Smiths? Not said; the Harts are the only Harts
        record("smith", "ae_attendances", D(2026, 7, 1), "OANA", "SMITH", D(1950, 5, 5), OLD),
        record("hart", "ae_attendances", D(2026, 7, 1), "AMY", "HART", D(2015, 5, 5), OLD),
    ])
    assert placed["smith"] == (f"postcode:{OLD}|SMITH", "postcode and surname, no address")
    assert placed["hart"] == (f"{OLD}||9", "postcode and surname")


def test_someone_who_moved_away_follows_kin_not_whoever_else_lived_there():
    placed = households([
        # the Greens lived at OLD 1 until 2024, then strangers; the Greens' son is seen at NEW since
        record("green", "worklessness", D(2023, 6, 1), "ROSE", "GREEN", D(1970, 1, 1), OLD, "1"),
        record("green_son", "worklessness", D(2023, 6, 1), "IVAN", "GREEN", D(2000, 1, 1), OLD, "1"),
        record("green_son", "worklessness", D(2026, 5, 1), "IVAN", "GREEN", D(2000, 1, 1), NEW, "4"),
        record("lodger", "asb_incidents", D(2022, 1, 1), "TIM", "BLACK", D(1960, 1, 1), OLD, "1"),
        record("lodger", "worklessness", D(2026, 5, 1), "TIM", "BLACK", D(1960, 1, 1), NEW, "6"),
        record("stranger", "worklessness", D(2026, 6, 1), "AMY", "WOLF", D(1990, 1, 1), OLD, "1"),
        # a tenant of another surname there in 2023, with no kin seen since: moved away, to where no record says
        record("tenant", "worklessness", D(2023, 6, 1), "OLGA", "BLUE", D(1980, 1, 1), OLD, "1"),
    ])
    assert placed["green"] == (f"{NEW}||4", "moved with their household")
    assert placed["tenant"] == (f"moved from:{OLD}||1", "moved away together")
    assert placed["lodger"][0] == f"{NEW}||6" and placed["stranger"][0] == f"{OLD}||1"


def test_a_child_named_at_a_notification_joins_the_victim_where_the_victim_lives_now():
    placed = households([
        record("gran", "domestic_abuse", D(2023, 6, 1), "ROSE", "GREEN", D(1970, 1, 1), OLD, "1", role="VICTIM", event_ref="DA9"),
        record("grandchild", "domestic_abuse", D(2023, 6, 1), "LILY", "SHAW", D(2018, 1, 1), OLD, role="CHILD_RESIDENT", event_ref="DA9"),
        record("grandchild", "ae_attendances", D(2026, 6, 1), "LILY", "SHAW", D(2018, 1, 1), NEW),
        # her son is seen at NEW since; strangers live at OLD 1 now
        record("son", "worklessness", D(2023, 6, 1), "IVAN", "GREEN", D(1995, 1, 1), OLD, "1"),
        record("son", "worklessness", D(2026, 5, 1), "IVAN", "GREEN", D(1995, 1, 1), NEW, "4"),
        record("stranger", "worklessness", D(2026, 6, 1), "AMY", "WOLF", D(1990, 1, 1), OLD, "1"),
    ])
    assert placed["gran"][0] == placed["son"][0] == f"{NEW}||4"
    assert placed["grandchild"] == (f"{NEW}||4", "domestic abuse notification")


def test_a_partner_the_police_found_at_home_is_not_replaced_by_the_other_partner():
    placed = households([
        # a couple at home at a notification; only he is recorded there since
        record("her", "domestic_abuse", D(2024, 5, 31), "ANNA", "DUNN", D(1987, 1, 1), OLD, "3", role="VICTIM", event_ref="DA7"),
        record("him", "domestic_abuse", D(2024, 5, 31), "MARC", "PAGE", D(1985, 1, 1), OLD, "3", role="PERPETRATOR", event_ref="DA7"),
        record("him", "worklessness", D(2026, 5, 1), "MARC", "PAGE", D(1985, 1, 1), OLD, "3"),
        # a perpetrator recorded at another address at that notification is no one's household here
        record("victim2", "domestic_abuse", D(2024, 5, 31), "JO", "RYAN", D(1990, 1, 1), NEW, "1", role="VICTIM", event_ref="DA8"),
        record("ex", "domestic_abuse", D(2024, 5, 31), "AL", "COX", D(1988, 1, 1), OLD, "9", role="PERPETRATOR", event_ref="DA8"),
        record("newcomer", "worklessness", D(2026, 6, 1), "AMY", "WOLF", D(1990, 1, 1), NEW, "1"),
    ])
    assert placed["her"][0] == placed["him"][0] == f"{OLD}||3"
    assert placed["victim2"][0] == f"moved from:{NEW}||1"


def test_a_child_seen_last_at_another_postcode_stays_with_the_household_of_their_surname_seen_before():
    placed = households([
        record("mum", "worklessness", D(2026, 3, 1), "JO", "BRENNAN", D(1988, 1, 1), OLD, "6"),
        record("kid", "ae_attendances", D(2025, 4, 1), "MIA", "BRENNAN", D(2019, 1, 1), OLD),
        record("kid", "ae_attendances", D(2026, 8, 1), "MIA", "BRENNAN", D(2019, 1, 1), NEW),  # at a friend's, or keyed wrong
        # an adult in the same case may have left home: not placed
        record("adult", "ae_attendances", D(2025, 4, 1), "SEAN", "BRENNAN", D(2001, 1, 1), OLD),
        record("adult", "ae_attendances", D(2026, 8, 1), "SEAN", "BRENNAN", D(2001, 1, 1), NEW),
    ])
    assert placed["kid"] == (f"{OLD}||6", "postcode and surname")
    assert placed["adult"][0] == f"postcode:{NEW}|BRENNAN"
