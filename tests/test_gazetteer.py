"""Partners' addresses matched to the council's gazetteer: the property an address can only be,
never a guess; households formed on the property."""

from __future__ import annotations

import duckdb
import polars as pl

from data_contracts import load_contract
from ingestion.load import read_source, write_source
from linkage.families import FamilyRecords, form_households
from linkage.gazetteer import (
    HOUSEHOLD_ADDRESS,
    HOUSEHOLD_ADDRESSES,
    MATCH_COLUMNS,
    addresses_read,
    canonical_addresses,
    held_household_records,
    household_records,
    match_addresses,
    addresses_as_read,
    match_person_addresses,
    one_reading_per_property,
    store_address_matches,
)
from linkage.person_records import linked_person_records
from linkage.standardise import address_key, flat_number, house_number, postcode_parts
from warehouse import scratch

GAZETTEER = """UPRN,PARENT_UPRN,SAO,PAO,STREET,TOWN,POSTCODE
100,,,2,Mill Lane,Hatfield,AL10 0AA
200,,,14,Mill Lane,Hatfield,AL10 0AA
201,200,Flat 1,14,Mill Lane,Hatfield,AL10 0AA
202,200,Flat 2,14,Mill Lane,Hatfield,AL10 0AA
300,,,20,Mill Lane,Hatfield,AL10 0AA
400,,,9,Station Road,Hatfield,AL10 0AB
500,,,7,Rose Walk,Hatfield,AL10 0AD
600,,,7,Rose Walk,Hatfield,AL10 0AD
700,,,4,Ronald Rise,Hatfield,AL10 0AE
800,,,8,Ronald Rise,Hatfield,AL10 0AE
"""


def _warehouse(tmp_path) -> duckdb.DuckDBPyConnection:
    landing = tmp_path / "landing"
    (landing / "address_gazetteer").mkdir(parents=True)
    (landing / "address_gazetteer" / "llpg.csv").write_text(GAZETTEER)
    contract = load_contract("address_gazetteer")
    result = read_source(contract, landing, None)
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    write_source(con, contract, result)
    return con


def _records(rows: list[tuple[str, str]]) -> pl.DataFrame:
    frame = pl.DataFrame({"record_key": [f"r{i}" for i in range(len(rows))], "raw": [a for a, _ in rows], "postcode_raw": [p for _, p in rows]})
    postcode, sector, _ = postcode_parts(pl.col("postcode_raw"))
    frame = frame.with_columns(address_key(pl.col("raw")).alias("address"), postcode.alias("postcode"), sector.alias("postcode_sector"))
    return frame.with_columns(house_number(pl.col("address")).alias("house_number"), flat_number(pl.col("address")).alias("flat"))


def test_an_address_written_many_ways_is_read_as_the_property_it_can_only_be(tmp_path):
    con = _warehouse(tmp_path)
    assert con.execute("SELECT count(*) FROM raw_address_gazetteer").fetchall()[0][0] == 10
    written = [
        ("Flat 2, 14 Mill Lane", "AL10 0AA"), ("14/2 Mill Lane", "al100aa"), ("2/14 Mill Lane", "AL10 0AA"),
        ("14B Mill Ln", "AL10 0AA"), ("2 14 Mill Lane, Hatfield", "AL10 0AA"), ("2 Mill Lane", "AL10 0AA"),
        ("20 Mill Lane", "AL10 0AB"),  # a neighbouring unit keyed: found in the postcode's sector
        ("Flat 5, 14 Mill Lane", "AL10 0AA"),  # a flat the gazetteer lacks: its building, with the flat kept
        ("7 Rose Walk", "AL10 0AD"),  # two properties it could be: left unmatched, never guessed
        ("33 Mill Lane", "AL10 0AA"),  # no such property
    ]
    matches = match_addresses(con, _records(written))
    uprn = dict(zip(matches["record_key"], matches["uprn"]))
    assert [uprn.get(f"r{i}") for i in range(len(written))] == ["202", "202", "202", "202", "202", "100", "300", "200", None, None]
    kinds = dict(zip(matches["record_key"], matches["match"]))
    assert (kinds["r0"], kinds["r6"], kinds["r7"]) == ("property", "sector", "building")
    flats = dict(zip(matches["record_key"], matches["property_flat"]))
    assert flats["r7"] == "5", "flats under one building stay separate households"


def test_households_form_on_the_property_with_a_gazetteer_or_without(tmp_path):
    con = _warehouse(tmp_path)
    records = _records([("Flat 2, 14 Mill Lane", "AL10 0AA"), ("2/14 Mill Lane", "AL10 0AA"), ("14B Mill Lane", "AL10 0AA")])
    canonical = canonical_addresses(records, match_addresses(con, records))
    assert canonical.select("postcode", "flat", "house_number").unique().rows() == [("AL10 0AA", "2", "14")]
    empty = duckdb.connect(str(tmp_path / "none.duckdb"))
    assert match_addresses(empty, records).is_empty()
    without = canonical_addresses(records, match_addresses(empty, records))
    assert without.select("postcode", "flat", "house_number").unique().rows() == [("AL10 0AA", "2", "14")]
    assert without.drop("flat", "house_number").equals(records.drop("flat", "house_number"))


def test_a_property_the_gazetteer_lacks_is_one_household_however_written_and_no_other_joins_it():
    written = [
        ("Flat 3, 4 Lewis Gardens", "AL14 8QP"), ("Flat 3, 4 Lewis Gardens", "AL14 8QP"), ("4C Lewis Gardens", "AL14 8QP"),
        ("3 4 Lewis Gardens", "AL14 8QP"), ("4/3 Lewis Gardens", "AL14 8QP"),
        ("Flat 4, 3 Campbell Avenue", "AL14 8QP"),  # the same numbers in another street of the postcode
        ("4 Lewis Gardens", "AL14 8QP"),  # the building, no flat
        ("Flat 3, 5 Lewis Gardens", "AL14 8QP"),  # another building
        ("Flat 3, 4 Lewis Gardens", "AL14 8QA"),  # a neighbouring unit keyed: the same property
        ("Flat 3, 4 Lewis Gardens", "AL15 1AA"),  # another district: another Lewis Gardens
        ("2 Church Road", "AL14 1AA"), ("2 Church Road", "AL14 1AA"),  # two villages' Church Roads in one district,
        ("2 Church Road", "AL14 9ZZ"), ("2 Church Road", "AL14 9ZZ"),  # each with as many lines: two properties
    ]
    read = canonical_addresses(_records(written), pl.DataFrame())
    readings = list(read.select("postcode", "flat", "house_number").iter_rows())
    assert readings[:5] == [("AL14 8QP", "3", "4")] * 5, "the reading most lines give"
    assert readings[5:] == [("AL14 8QP", "4", "3"), ("AL14 8QP", None, "4"), ("AL14 8QP", "3", "5"), ("AL14 8QP", "3", "4"), ("AL15 1AA", "3", "4"),
                            ("AL14 1AA", None, "2"), ("AL14 1AA", None, "2"), ("AL14 9ZZ", None, "2"), ("AL14 9ZZ", None, "2")]


def test_every_mention_of_a_line_is_a_vote_though_the_line_is_read_once():
    """Two mentions of a flat under one postcode and one under the next (a unit picked from a
    list): the one is a slip, read as the two are. Counted as lines, one writing each, the two
    postcodes would tie and stand as two households."""
    written = [("Flat 3, 4 Lewis Gardens", "AL14 8QP"), ("Flat 3, 4 Lewis Gardens", "AL14 8QP"), ("Flat 3, 4 Lewis Gardens", "AL14 8QA")]
    read = canonical_addresses(_records(written), pl.DataFrame())
    assert read["postcode"].to_list() == ["AL14 8QP"] * 3
    assert canonical_addresses(_records(written[1:]), pl.DataFrame())["postcode"].to_list() == ["AL14 8QP", "AL14 8QA"]


def test_a_line_two_properties_explain_is_not_guessed_but_read_as_its_property_s_other_lines(tmp_path):
    con = _warehouse(tmp_path)
    # 4 and 8 Ronald Rise are houses in the gazetteer; the family's flat 8 in number 4 is not
    records = _records([("Flat 8, 4 Ronald Rise", "AL10 0AE"), ("Flat 8, 4 Ronald Rise", "AL10 0AE"), ("8 4 Ronald Rise", "AL10 0AE")])
    matches = match_addresses(con, records)
    assert matches["record_key"].to_list() == ["r0", "r1"], "number 8 or flat 8 of number 4: a tie, left unmatched"
    canonical = canonical_addresses(records, matches)
    assert canonical.select("postcode", "flat", "house_number").unique().rows() == [("AL10 0AE", None, "4")]


def test_a_line_sent_without_a_postcode_is_found_by_its_street_and_numbers_where_only_one_property_fits(tmp_path):
    con = _warehouse(tmp_path)
    records = _records([("Flat 2, 14 Mill Lane, Hatfield", ""), ("20 Mill Lane", ""), ("7 Rose Walk", ""), ("33 Mill Lane", "")])
    assert records["postcode"].null_count() == 4
    matches = match_addresses(con, records)
    uprn = dict(zip(matches["record_key"], matches["uprn"]))
    assert [uprn.get(f"r{i}") for i in range(4)] == ["202", "300", None, None], "7 Rose Walk is two properties; 33 Mill Lane none"
    assert set(matches["match"]) == {"street"}
    canonical = canonical_addresses(records, matches)
    assert canonical.select("postcode", "flat", "house_number").rows()[:2] == [("AL10 0AA", "2", "14"), ("AL10 0AA", None, "20")]


def test_without_a_gazetteer_a_line_sent_without_a_postcode_takes_the_one_property_of_its_street_and_numbers():
    written = [
        ("Flat 3, 4 Lewis Gardens", "AL14 8QP"), ("4C Lewis Gardens", ""),
        ("2 Church Road", "AL14 1AA"), ("2 Church Road", "AL15 9ZZ"), ("2 Church Road", ""),  # two such properties: not said which
    ]
    read = canonical_addresses(_records(written), pl.DataFrame())
    assert list(read.select("postcode", "flat", "house_number").iter_rows())[1] == ("AL14 8QP", "3", "4")
    assert read["postcode"][4] is None


def test_the_scorecard_forms_households_on_the_addresses_the_monthly_run_read(listed):
    """The scorecard's months read the addresses family_members read (`household_addresses`, only
    the records read at another address than sent) rather than matching every address again:
    the same records as reading them again from the run's matches."""
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    sent = linked_person_records(con)
    stored = con.sql(f"SELECT * FROM {HOUSEHOLD_ADDRESSES}").pl()
    assert 0 < stored.height < sent.height / 10, "a few records are read at another address; most as sent"
    assert stored["record_key"].is_unique().all()
    matches = con.sql(f"SELECT {', '.join(MATCH_COLUMNS)} FROM address_matches").pl()
    assert household_records(con).equals(canonical_addresses(sent, matches))


def test_each_address_line_read_once_for_all_its_mentions_reads_every_mention_as_one_by_one(listed):
    """The run matches and reads each distinct address line once, its mentions counted as its
    votes, and gives the result to every mention written so (`match_person_addresses`,
    `addresses_read`, `address_matches`): the same as matching and reading the mentions one by one."""
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    sent = con.sql("SELECT record_key, postcode, postcode_sector, address, house_number, flat FROM person_records ORDER BY record_key").pl()
    stored = con.sql(f"SELECT {', '.join(MATCH_COLUMNS)} FROM address_matches ORDER BY record_key").pl()
    assert sent["address"].n_unique() < sent.height / 2, "many mentions share a line"
    assert stored.height > 0 and match_addresses(con, sent).equals(stored)
    # one by one: each matched mention at its property, then every mention a vote of its own
    matched = pl.col("property_postcode").is_not_null()
    at_property = sent.join(stored, on="record_key", how="left", maintain_order="left").with_columns(
        *(pl.when(matched).then(pl.col(f"property_{c}")).otherwise(pl.col(c)).alias(c) for c in HOUSEHOLD_ADDRESS), matched.alias("_matched"),
    )
    one_by_one = one_reading_per_property(at_property, ~pl.col("_matched")).select(sent.columns)
    assert canonical_addresses(sent, stored).equals(one_by_one)
    read_otherwise = pl.any_horizontal(one_by_one[c].ne_missing(sent[c]) for c in HOUSEHOLD_ADDRESS)
    expected = one_by_one.filter(read_otherwise).select("record_key", *HOUSEHOLD_ADDRESS)
    assert 0 < expected.height < sent.height
    assert addresses_read(con, match_person_addresses(con)).equals(expected)
    assert con.sql(f"SELECT * FROM {HOUSEHOLD_ADDRESSES}").pl().equals(expected)


def test_a_warehouse_without_household_addresses_reads_them_again_from_its_matches(listed, tmp_path):
    """A warehouse whose last run kept no `household_addresses` (older than the table) reads the
    addresses again from its `address_matches`, as that run read them; one older still, without
    the matches' property columns, reads them without the gazetteer."""
    import shutil

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(listed / "warehouse.duckdb", copy)
    con = duckdb.connect(str(copy))
    stored = con.sql(f"SELECT * FROM {HOUSEHOLD_ADDRESSES}").pl()
    con.execute(f"DROP TABLE {HOUSEHOLD_ADDRESSES}")
    assert stored.height > 0 and addresses_as_read(con).equals(stored)
    sent = con.sql("SELECT record_key, postcode, address, house_number, flat FROM person_records ORDER BY record_key").pl()
    without = canonical_addresses(sent, pl.DataFrame())
    changed = pl.any_horizontal(without[c].ne_missing(sent[c]) for c in HOUSEHOLD_ADDRESS)
    expected = without.filter(changed).select("record_key", *HOUSEHOLD_ADDRESS)
    assert 0 < expected.height and not expected.equals(stored)
    # older still: its matches a table of mentions, without the last property column
    _matches_as_a_table(con, "* EXCLUDE (property_flat)")
    assert addresses_as_read(con).equals(expected)


def _matches_as_a_table(con: duckdb.DuckDBPyConnection, columns: str = "*") -> None:
    """`address_matches` (`columns` of it) as runs before the view wrote it: a table of the mentions' matches."""
    con.execute(f"CREATE TABLE _older AS SELECT {columns} FROM address_matches")
    con.execute("DROP VIEW address_matches")
    con.execute("ALTER TABLE _older RENAME TO address_matches")


def test_a_warehouse_keeping_each_mentions_match_as_a_table_gets_the_view_of_its_lines(listed, tmp_path):
    """`address_matches` is a view of each matched line's match given to its mentions
    (`address_line_matches`); a warehouse whose last run wrote the mentions' matches as a table
    has it replaced by the view, with the same rows, when matches are stored again."""
    import shutil

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(listed / "warehouse.duckdb", copy)
    con = duckdb.connect(str(copy))
    kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall())
    assert kinds["address_matches"] == "VIEW" and kinds["address_line_matches"] == "BASE TABLE"
    lines, mentions = (con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in ("address_line_matches", "address_matches"))
    assert 0 < lines < mentions, "a line is written once for all the mentions giving it"
    rows = f"SELECT {', '.join(MATCH_COLUMNS)} FROM address_matches ORDER BY record_key"
    before = con.sql(rows).pl()
    _matches_as_a_table(con)
    store_address_matches(con, match_person_addresses(con))
    assert con.execute("SELECT table_type FROM information_schema.tables WHERE table_name = 'address_matches'").fetchall() == [("VIEW",)]
    assert con.sql(rows).pl().equals(before)


def test_households_formed_on_the_ids_numbers_are_those_formed_on_their_places_in_the_ids_order(listed):
    """Family formation holds each person as their id's number (`PERSON_IDS`), or, where some id
    is not written as a run writes them, as the id's place in the ids' order: the same people under
    ids no run writes (in the same order) form the same households, and the ids come back."""
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    frame = household_records(con)
    reference = con.sql("SELECT max(event_date) FROM person_records").fetchall()[0][0]
    con.close()
    renamed = frame.with_columns(pl.col("person_id").str.replace("^P", "Q"))
    with FamilyRecords.of(frame) as numbered, FamilyRecords.of(renamed) as placed:
        assert placed._numbered is not None and numbered._numbered is None
        rows = scratch()
        try:
            held = rows.sql(f"SELECT person_id FROM {numbered.table} ORDER BY _order").pl()["person_id"]
        finally:
            rows.close()
        assert held.dtype == pl.Int64 and held.equals(frame["person_id"].str.slice(1).cast(pl.Int64), check_names=False)
        members, households = form_households(numbered, reference)
        members_q, households_q = form_households(placed, reference)
    back = pl.col("person_id").str.replace("^Q", "P"), pl.col("household_key").str.replace_all(r"Q(\d{8})", "P$1")
    assert members["person_id"].str.starts_with("P").all() and members_q["person_id"].str.starts_with("Q").all()
    assert members.equals(members_q.with_columns(*back))
    assert households.sort("household_key").equals(households_q.with_columns(back[1]).sort("household_key"))


def test_records_held_in_duckdb_are_the_frames_records_and_form_the_same_households(listed):
    """Family formation holds a county's records in DuckDB, beside the warehouse's tables
    (`held_household_records`), rather than in Polars: the same records as the frame
    `household_records` reads, each numbered alike in record_key order, and the same households."""
    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    frame = household_records(con)
    reference = con.sql("SELECT max(event_date) FROM person_records").fetchall()[0][0]
    with held_household_records(con) as held, FamilyRecords.of(frame) as of_frame:
        beside, rows = held.connect(), scratch()
        held_rows = beside.sql(f"SELECT * EXCLUDE (_order) FROM {held.table} ORDER BY _order").pl()
        given = rows.sql(f"SELECT * EXCLUDE (_order) FROM {of_frame.table} ORDER BY _order").pl()
        beside.close()
        rows.close()
        assert held_rows.height == frame.height > 0
        assert held_rows.equals(given)
        assert sorted(held_rows["record_order"]) == list(range(1, frame.height + 1))
        from_warehouse = form_households(held, reference)[0]
    assert from_warehouse.equals(form_households(frame, reference)[0])


def test_a_month_matches_only_the_address_lines_new_to_it_and_matches_every_line_as_afresh(listed, tmp_path):
    """A line's match is its own and the gazetteer's alone, so a run takes the last run's match of
    each line it matched against the same gazetteer with the same code (`address_line_matches`,
    `address_lines_unmatched`) and matches only the lines new since: the same matches as matching
    every line again. Another gazetteer, or none, reuses nothing."""
    import shutil

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(listed / "warehouse.duckdb", copy)
    con = duckdb.connect(str(copy))
    afresh = match_person_addresses(con, reuse=False)
    lines = afresh.lines.height
    assert 0 < afresh.matched.height < lines, "the village has lines matched and lines not"
    assert afresh.stats["address_lines_matched_afresh"] == lines

    def in_order(lines: pl.DataFrame) -> pl.DataFrame:
        # lines are numbered as DuckDB groups the mentions, in no set order: compared by what they are
        return lines.drop("line").sort(pl.all(), nulls_last=True)

    def same_as_afresh(matching) -> None:
        assert in_order(matching.lines).equals(in_order(afresh.lines))
        assert matching.made_with == afresh.made_with is not None

    everything_known = match_person_addresses(con)
    same_as_afresh(everything_known)
    assert everything_known.stats["address_lines_matched_afresh"] == 0, "the last run stored every line it matched"
    # lines the last run did not give, matched and unmatched alike, are matched now
    con.execute("DELETE FROM address_line_matches WHERE rowid % 3 = 0")
    con.execute("DELETE FROM address_lines_unmatched WHERE rowid % 2 = 0")
    gone = con.execute("SELECT (SELECT count(*) FROM address_line_matches) + (SELECT count(*) FROM address_lines_unmatched)").fetchall()[0][0]
    some_new = match_person_addresses(con)
    same_as_afresh(some_new)
    assert 0 < some_new.stats["address_lines_matched_afresh"] == lines - gone < lines
    store_address_matches(con, some_new)
    assert match_person_addresses(con).stats["address_lines_matched_afresh"] == 0
    # a property renamed or added may be any line's: every line is matched again
    con.execute("UPDATE raw_address_gazetteer SET street = street || ' East' WHERE uprn = (SELECT min(uprn) FROM raw_address_gazetteer)")
    assert match_person_addresses(con).stats["address_lines_matched_afresh"] == lines
    con.execute("UPDATE raw_address_gazetteer SET street = replace(street, ' East', '') WHERE uprn = (SELECT min(uprn) FROM raw_address_gazetteer)")
    assert match_person_addresses(con).stats["address_lines_matched_afresh"] == 0, "the same properties again"
    con.execute("INSERT INTO raw_address_gazetteer SELECT * REPLACE ('999999' AS uprn) FROM raw_address_gazetteer LIMIT 1")
    assert match_person_addresses(con).stats["address_lines_matched_afresh"] == lines
    con.execute("DELETE FROM raw_address_gazetteer")
    without = match_person_addresses(con)
    assert without.made_with is None and without.matched.is_empty()
    store_address_matches(con, without)
    assert not {"address_lines_unmatched", "address_matching_made"} & {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def test_the_summaries_of_one_row_a_person_hold_each_person_once_in_the_order_of_all_their_columns(listed):
    """`summarise_records` reads the summaries of one row per person out in the person's order
    alone (`SUMMARY_ORDER`): right only while each holds a person once, when that order is every
    column's."""
    from linkage.families import SUMMARY_ORDER, summarise_records

    con = duckdb.connect(str(listed / "warehouse.duckdb"), read_only=True)
    reference = con.sql("SELECT max(event_date) FROM person_records").fetchall()[0][0]
    with held_household_records(con) as held:
        summaries = summarise_records(held, reference)
    by_person = [name for name, order in SUMMARY_ORDER.items() if order == "person_id"]
    assert set(by_person) == {"people", "addresses", "postcodes"}
    for name, frame in summaries.items():
        assert frame.height > 0, name
        raw = frame.drop("age", "dependent_child") if name == "people" else frame
        assert raw.equals(raw.sort(raw.columns, nulls_last=False)), name
        if name in by_person:
            assert frame["person_id"].is_unique().all(), name
