"""Group persons into households, and households with dependent children into families.

As of the reference date:

1. A person's current address is the latest full address (postcode, house
   number and flat) any source recorded for them up to the reference date;
   recency wins, so a house move or a separation shows. A record giving a home
   they had left, after several at the address they moved to, is late
   (LATE_RECORD_DAYS), not a move back.
2. A person no source gives a current full address for (an infant seen only
   at A&E, a child known only to children's services, someone whose latest
   record is at a new postcode) joins the household at their latest postcode
   where a pupil names them as contact; failing that, the one household there
   that holds someone of their surname (between two, the surname says
   nothing); failing that, the household, where it lives now, of the victim of
   a domestic abuse notification that names them as a child; failing that, the
   home of a brother or sister named with them in one contact at the
   children's front door; failing that, the new address of people of their
   surname who were seen at that postcode and have since moved on; failing
   that, for names recorded surname first, the household there of the surname
   their forename is; failing that, for a dependent child, the one household
   of their surname at a postcode they were recorded at before (children do
   not move out on their own); failing that, others of their surname at that
   postcode with no address either.
3. Moves. Someone last seen at an address (or its postcode) well before
   strangers were seen there has moved away: people of another surname, whom
   no record names as their household or the police found at home with them,
   and not women recorded as Begum, Khatun or Bibi in place of the family
   name. They follow kin they lived with (of their surname, or named as their
   household by a record) if those were seen since at a new address. Someone
   whose address is known only from old records, whose kin of their surname
   were seen at that postcode and since only elsewhere, moved with them; so
   did someone a record names as one household with another (siblings in one
   front-door contact, a victim and the children at a notification, a claimant
   and partner) whose records still give the home the other has left, never
   the new one.
4. People at one address form one household. A household with at least one
   dependent child (0-15, or 16-18 and still at school) is a family for early
   help; other households are kept but never listed.
5. Two families at one address (a concealed family, or two sharing a house) are
   told apart where their children carry surnames not alike and nothing the
   partners recorded joins them: no child's school contact is an adult of the
   other's surname, and no record names people of both as one household (a
   front-door contact naming children of both, a domestic abuse notification
   naming a child of one as the other's, a claim with a partner of each).
   Adults of a third surname (a partner who kept their own, a grandparent
   caring for the children) join the family they are named with, or else the
   larger.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import jellyfish
import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from linkage.stable_ids import PERSON_IDS
from rules import NAMES_IN_PLACE_OF_A_FAMILY_NAME
from warehouse import register, scratch


def _age(dob: pl.Expr, on: dt.date) -> pl.Expr:
    years = pl.lit(on.year) - dob.dt.year()
    before_birthday = (pl.lit(on.month) < dob.dt.month()) | ((pl.lit(on.month) == dob.dt.month()) & (pl.lit(on.day) < dob.dt.day()))
    return (years - before_birthday.cast(pl.Int32)).cast(pl.Int32)


#: A person's records go on giving the home they left for up to this long after a move (a school
#: roll or a police system updated late; the ONS linkage study links movers least well) ...
LATE_RECORD_DAYS = 540
#: ... so an address first recorded after the latest-seen one, on at least this many records,
#: seen within LATE_RECORD_DAYS of it, is where they moved to, and the later sighting of the old
#: home is a late record. Moving back to a former home is rarer than a record that is late.
MOVED_INTO_RECORDS = 2

#: What each person's records say, as of the reference date, in one pass of DuckDB over a
#: county's millions of records (its parallel aggregation is where Polars' sorts were slow).
#: Every choice has a complete order, so reruns choose alike: ties go to the first record in
#: record_key order (`record_order`, its place in that order: an integer compares faster than
#: the key's text, a fifth of these statements' time at 1.2M residents).
SUMMARIES = (
    # a view, not a table: at 1.2M residents the records held in DuckDB (`HELD_DATABASE`) take
    # 650 MB of its 1 GB cap, and a copy of them sent 230 MB to disk; as a view, the month's
    # households 8.6 -> 7.5 s (two runs each, alternating), the same. A view cannot take a
    # parameter, so the date is written in (`summarise_records`).
    """
CREATE TEMP VIEW cur AS
    SELECT person_id, record_order, source, event_date, address_date, forename, surname, dob, sex, birth_year_stated,
           postcode, postcode || '|' || coalesce(flat, '') || '|' || house_number AS address_key
    FROM linked WHERE event_date <= {reference}
    """,
    """
-- the name shown is the one most sources use (a nickname or a typo in one record is not),
-- the latest breaking ties: a new surname after marriage wins once it is the commoner
CREATE TEMP TABLE people AS
WITH dobs AS (
    SELECT person_id, dob, count(*) AS n, max(event_date) AS last FROM cur WHERE dob IS NOT NULL GROUP BY ALL
), names AS (
    SELECT person_id, forename, surname, count(*) AS n, max(event_date) AS last FROM cur WHERE forename IS NOT NULL GROUP BY ALL
), latest AS (
    SELECT person_id,
           first(sex ORDER BY event_date DESC, record_order) FILTER (WHERE sex IS NOT NULL) AS sex,
           first(birth_year_stated ORDER BY event_date DESC, record_order) FILTER (WHERE birth_year_stated IS NOT NULL) AS birth_year_stated,
           max(event_date) AS last_seen,
           coalesce(bool_or(source = 'school_attendance' AND event_date >= $school_cutoff), false) AS in_education
    FROM cur GROUP BY person_id
)
SELECT latest.*, n.forename, n.surname, d.dob
FROM latest
LEFT JOIN (SELECT person_id, first(forename ORDER BY n DESC, last DESC, forename, surname) AS forename,
                  first(surname ORDER BY n DESC, last DESC, forename, surname) AS surname
           FROM names GROUP BY person_id) n USING (person_id)
LEFT JOIN (SELECT person_id, first(dob ORDER BY n DESC, last DESC, dob) AS dob FROM dobs GROUP BY person_id) d USING (person_id)
    """,
    """
-- the current full address (postcode, flat, house number): the latest seen, recency first, then
-- how often; unless an address first seen after it (moved into) is on enough records seen since
-- its own first sighting, within the time records run late (left_postcode: the home left)
CREATE TEMP TABLE addresses AS
WITH seen AS (
    SELECT person_id, address_key, max(address_date) AS last, min(address_date) AS since, count(*) AS n, any_value(postcode) AS postcode
    FROM cur WHERE address_key IS NOT NULL GROUP BY ALL
), latest AS (
    SELECT person_id, first(address_key ORDER BY last DESC, n DESC, address_key) AS address_key,
           first(postcode ORDER BY last DESC, n DESC, address_key) AS postcode,
           first(since ORDER BY last DESC, n DESC, address_key) AS since,
           max(last) AS address_seen
    FROM seen GROUP BY person_id
), moved_into AS (
    SELECT s.person_id, first(s.address_key ORDER BY s.since DESC, s.n DESC, s.address_key) AS address_key,
           first(s.postcode ORDER BY s.since DESC, s.n DESC, s.address_key) AS postcode,
           first(s.last ORDER BY s.since DESC, s.n DESC, s.address_key) AS address_seen
    FROM seen s JOIN latest l USING (person_id)
    WHERE s.since > l.since AND s.n >= $moved_into_records AND s.last >= l.address_seen - INTERVAL (CAST($stale_days AS INTEGER)) DAY
      AND s.n > (SELECT count(*) FROM cur c WHERE c.person_id = s.person_id AND c.address_key = l.address_key AND c.address_date > s.since)
    GROUP BY s.person_id
)
SELECT l.person_id, coalesce(m.address_key, l.address_key) AS address_key, coalesce(m.postcode, l.postcode) AS postcode,
       coalesce(m.address_seen, l.address_seen) AS address_seen,
       CASE WHEN m.address_key IS NOT NULL THEN l.postcode END AS left_postcode
FROM latest l LEFT JOIN moved_into m USING (person_id)
    """,
    """
-- the latest postcode from any source, with or without a street (A&E records none)
CREATE TEMP TABLE postcodes AS
SELECT person_id, first(postcode ORDER BY address_date DESC, record_order) AS latest_postcode, max(address_date) AS postcode_seen
FROM cur WHERE postcode IS NOT NULL GROUP BY person_id
    """,
    """
-- every postcode each person was recorded at
CREATE TEMP TABLE postcodes_seen AS SELECT DISTINCT person_id AS kin, postcode FROM cur WHERE postcode IS NOT NULL
    """,
    """
-- every full address each person was recorded at
CREATE TEMP TABLE addresses_seen AS SELECT DISTINCT person_id, address_key AS former_address FROM cur WHERE address_key IS NOT NULL
    """,
)


#: Each summary's order as read out (`summarise_records`): the summaries of one row per person
#: by the person alone, which orders them as every column would (0.12-0.15 s less at 1.2M
#: residents, where the sort's keys held every column); the rest by all their columns.
SUMMARY_ORDER = {"people": "person_id", "addresses": "person_id", "postcodes": "person_id", "postcodes_seen": "ALL", "addresses_seen": "ALL"}

#: What the household rules read of the records beyond the summaries (SUMMARIES): the records
#: that name people together or name a pupil's contact, with these columns. Half a county's
#: records and a third of their columns: the rest are read only by DuckDB.
TIE_SOURCES = ("worklessness", "front_door_contacts", "domestic_abuse")
TIE_COLUMNS = ("person_id", "source", "event_date", "event_ref", "role", "postcode", "house_number", "flat", "contact_forename", "contact_surname")
#: What family formation reads of each record: the summaries' columns and the rules'.
HELD_COLUMNS = ("record_order", "address_date", "forename", "surname", "dob", "sex", "birth_year_stated", *TIE_COLUMNS)
#: The birth year an age stated gives, made by DuckDB where the records lack it.
_BIRTH_YEAR_STATED = "CAST(year(event_date) - age_stated AS INTEGER)"

#: The compressed in-memory database the records are held in (the scratch database's or the warehouse's): held
#: uncompressed, they took the room DuckDB's summaries work in, and spilled them (8.2 against
#: 6.4 s a month at 1.2M residents; compressed, 7.1 s).
HELD_DATABASE = "held_records"

_HELD = itertools.count()


@dataclass
class FamilyRecords:
    """The linked person records families form from, held as a table of a DuckDB database (memory
    bounded, spilling to disk beyond it) rather than as a Polars frame: at 1.2M residents the
    3.7M records held 1.6 GB in Polars for the whole of family formation, or of the scorecard's
    six months of it. Made once (only HELD_COLUMNS): from a frame the caller can then let go, in
    the process's scratch database (`of`), or from the warehouse's tables, in the warehouse's
    database (`held_in`); `close` (or leaving a `with` block) drops the table.

    A person is held as a number that orders as their id's text does (`person_ids` gives the id
    back): the id's own number where every id is written as a run writes them (`PERSON_IDS`), else
    the id's place in the ids' order. The summaries group by it and the household rules join,
    sort and break ties on it, an integer where the id is text: at 1.2M residents the records held
    and families formed 10.5-10.9 -> 9.3-9.9 s (four each, alternating), the same families."""

    table: str
    # the connection whose database holds the table (`held_in`); None: this process's scratch database
    con: duckdb.DuckDBPyConnection | None = field(default=None, repr=False)
    # (person_number, person_id) where the ids are not all written as PERSON_IDS writes them
    _numbered: pl.DataFrame | None = field(default=None, repr=False)
    # the records the household rules read, whatever their date (`ties`): read once for the
    # scorecard's six months, each taking those made by its date
    _ties: pl.DataFrame | None = field(default=None, repr=False)

    @classmethod
    def of(cls, records: pl.DataFrame) -> FamilyRecords:
        """records: a frame of linked person records (HOUSEHOLD_COLUMNS and person_id), held in
        this process's scratch database."""
        given, records = records.columns, records.with_row_index("_order")
        con = scratch()
        try:
            register(con, "_given", records)
            # each record's place in record_key order (see SUMMARIES): its place in a table made
            # in that order (a window over 3.7M keys runs on one thread: 13 s at 1.2M residents)
            con.execute("CREATE TEMP TABLE _in_key_order AS SELECT _order FROM _given ORDER BY record_key, _order")
            return cls._hold(con, "_given r JOIN (SELECT rowid + 1 AS record_order, _order FROM _in_key_order) o USING (_order)", given)
        finally:
            con.close()

    @classmethod
    def held_in(cls, con: duckdb.DuckDBPyConnection, query: str) -> FamilyRecords:
        """The records `query` gives (HOUSEHOLD_COLUMNS, person_id, each record's place in
        person_records as `_order` and in record_key order as `record_order`), held in the
        database `con` is a connection to, beside the tables they come from: not streamed to the
        scratch database through Arrow: at 1.2M residents family_members alone 25.0 -> 23.6 s
        (medians of six and five runs, alternating), its peak in a cold run 3,873 -> 3,662 MiB.
        They go when that database is closed, if not before."""
        return cls._hold(con, f"({query}) r", con.sql(query).columns, within=con)

    @classmethod
    def _hold(cls, con: duckdb.DuckDBPyConnection, source: str, given: list[str], within: duckdb.DuckDBPyConnection | None = None) -> FamilyRecords:
        """HELD_COLUMNS of `source` (aliased r, with _order and record_order) as a new table of
        HELD_DATABASE in con's database; `within`: that connection, kept to reach them (else the
        scratch database is theirs)."""
        held = cls(f"{HELD_DATABASE}.family_records_{next(_HELD)}", within)
        # written though the warehouse be open read-only: the held database is the process's own
        con.execute(f"ATTACH IF NOT EXISTS ':memory:' AS {HELD_DATABASE} (READ_WRITE, COMPRESS)")

        def hold(person: str, joined: str = "") -> None:
            columns = [person if c == "person_id" else f"r.{c}" if c in given else f"{_BIRTH_YEAR_STATED} AS {c}" for c in HELD_COLUMNS if c != "record_order"]
            con.execute(f'CREATE OR REPLACE TABLE {held.table} AS SELECT r._order, {", ".join(columns)}, record_order FROM {source}{joined}')

        hold(f"{PERSON_IDS.number_sql('r.person_id')} AS person_id")
        if con.execute(f"SELECT count(*) FROM {held.table} WHERE person_id IS NULL").fetchall()[0][0]:
            # some id is not one a run writes (a test's, say): each numbered by its place in the ids' order
            numbered = f"{held.table}_numbered"
            con.execute(f"""CREATE TABLE {numbered} AS SELECT person_id, CAST(row_number() OVER (ORDER BY person_id) AS BIGINT) AS person_number
                            FROM (SELECT DISTINCT r.person_id FROM {source} WHERE r.person_id IS NOT NULL)""")
            hold("n.person_number AS person_id", f" LEFT JOIN {numbered} n ON n.person_id = r.person_id")
            held._numbered = con.sql(f"SELECT person_number, person_id FROM {numbered}").pl()
            con.execute(f"DROP TABLE {numbered}")
        return held

    def person_ids(self, number: pl.Expr) -> pl.Expr:
        """The person id of each person number the held records give."""
        if self._numbered is None:
            return PERSON_IDS.text(number)
        return number.replace_strict(self._numbered["person_number"], self._numbered["person_id"], default=None, return_dtype=pl.String)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the database holding the records."""
        return self.con.cursor() if self.con is not None else scratch()

    def close(self) -> None:
        self._ties = None
        con = self.connect()
        try:
            con.execute(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            con.close()

    def __enter__(self) -> FamilyRecords:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def ties(self, reference: dt.date) -> pl.DataFrame:
        """The records made by `reference` that the household rules read in Polars (TIE_COLUMNS),
        in the records' order (a frame's, or person_records'): fetched once, whatever their date."""
        if self._ties is None:
            con = self.connect()
            try:
                self._ties = con.sql(
                    f"""SELECT {", ".join(TIE_COLUMNS)} FROM {self.table}
                        WHERE source IN (SELECT unnest($sources)) OR contact_surname IS NOT NULL ORDER BY _order""",
                    params={"sources": list(TIE_SOURCES)},
                ).pl()
            finally:
                con.close()
        latest = self._ties["event_date"].max()
        if latest is None or latest <= reference:
            return self._ties  # all made by then (a monthly run's): no copy
        return self._ties.filter(pl.col("event_date").is_null() | (pl.col("event_date") <= reference))


def summarise_records(records: FamilyRecords, reference: dt.date) -> dict[str, pl.DataFrame]:
    """people (person_id, name, dob, sex, age, dependent_child, in_education, last_seen),
    addresses (person_id -> latest full address_key, postcode, address_seen),
    postcodes (person_id -> latest_postcode, postcode_seen), postcodes_seen (kin, postcode),
    addresses_seen (person_id, former_address); person_id: the number each person is held as
    (`FamilyRecords.person_ids`)."""
    con = records.connect()
    try:
        con.execute(f"CREATE TEMP VIEW linked AS SELECT * FROM {records.table}")
        parameters = {"reference": reference, "school_cutoff": reference - dt.timedelta(days=366),
                      "moved_into_records": MOVED_INTO_RECORDS, "stale_days": LATE_RECORD_DAYS}
        for statement in SUMMARIES:
            statement = statement.replace("{reference}", f"DATE '{reference:%Y-%m-%d}'")
            con.execute(statement, {k: v for k, v in parameters.items() if f"${k}" in statement} or None)
        frames = {name: con.sql(f"SELECT * FROM {name} ORDER BY {order}").pl() for name, order in SUMMARY_ORDER.items()}
    finally:
        con.close()
    age = pl.coalesce(_age(pl.col("dob"), reference), pl.lit(reference.year) - pl.col("birth_year_stated"))
    frames["people"] = (
        frames["people"].with_columns(age.alias("age"))
        .with_columns(((pl.col("age") <= 15) | ((pl.col("age") <= 18) & pl.col("in_education"))).fill_null(False).alias("dependent_child"))
        .drop("birth_year_stated")
    )
    return frames


def form_households(records: pl.DataFrame | FamilyRecords, reference: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """records: person_records with `person_id`, or those records held in DuckDB (`FamilyRecords`).
    Returns (person_id -> household_key with how it was placed, households)."""
    if isinstance(records, pl.DataFrame):
        with FamilyRecords.of(records) as held:
            return form_households(held, reference)
    # what was recorded after the reference date was not known on it: families as they stood in an
    # earlier month (the scorecard's evaluation) form from the records made by then, ties included
    held, summaries = records, summarise_records(records, reference)
    records = records.ties(reference)
    addresses, postcodes_seen = summaries["addresses"], summaries["postcodes_seen"]
    placed = summaries["people"].join(addresses, on="person_id", how="left").join(summaries["postcodes"], on="person_id", how="left")
    # a later record at another postcode means the full address is out of date: they moved
    placed = placed.with_columns(
        pl.when((pl.col("latest_postcode") != pl.col("postcode")) & (pl.col("latest_postcode") != pl.col("left_postcode")).fill_null(True)).then(None).otherwise(pl.col("address_key")).alias("address_key")
    )
    placed = placed.with_columns(pl.lit(None, dtype=pl.String).alias("placed_by"))
    ties = _named_as_one_household(records)
    placed = _evict_former_occupants(placed, pl.concat([ties, _recorded_at_home_together(records)]).unique())
    placed = _follow_household(placed, summaries["addresses_seen"], ties)
    # 2. no full address: named as a pupil's contact at that postcode (a parent seen only at A&E) ...
    contacts = _school_contacts(records, addresses)
    placed = placed.join(contacts, left_on=["forename", "surname", "latest_postcode"], right_on=["contact_forename", "contact_surname", "contact_postcode"], how="left")
    placed = placed.with_columns(
        pl.when(pl.col("address_key").is_null() & pl.col("contact_address").is_not_null()).then(pl.lit("school contact")).otherwise(pl.col("placed_by")).alias("placed_by"),
        pl.coalesce("address_key", "contact_address").alias("address_key"),
        pl.coalesce("postcode", pl.when(pl.col("contact_address").is_not_null()).then(pl.col("latest_postcode"))).alias("postcode"),
    )
    # ... or the household at their latest postcode with someone of their surname, where only one
    # household there has it (between two, the surname does not say which)
    housed = placed.filter(pl.col("address_key").is_not_null()).select("address_key", "postcode", "surname")
    best = (
        housed.unique(["postcode", "surname", "address_key"])
        .filter(pl.len().over("postcode", "surname") == 1)
        .select(pl.col("postcode").alias("latest_postcode"), "surname", pl.col("address_key").alias("surname_address"))
    )
    placed = placed.join(best, on=["latest_postcode", "surname"], how="left")
    # ... or the address of the victim at a domestic abuse notification naming them as a child
    victims_now = placed.filter(pl.col("address_key").is_not_null()).select(pl.col("person_id").alias("adult_id"), pl.col("address_key").alias("victim_address"))
    child_links = _child_of_victim(records).join(victims_now, on="adult_id")
    child_links = child_links.group_by("person_id").agg(pl.col("victim_address").sort().first())
    placed = placed.join(child_links, on="person_id", how="left")
    # ... or the home of a brother or sister named with them in one contact at the children's front door
    housed_now = placed.filter(pl.col("address_key").is_not_null()).select(pl.col("person_id").alias("other_id"), pl.col("address_key").alias("sibling_address"))
    placed = placed.join(_named_together(records).join(housed_now, on="other_id").pipe(_most_voted, "sibling_address"), on="person_id", how="left")
    placed = placed.join(_kin_moved_from_postcode(placed, postcodes_seen), on="person_id", how="left")
    # ... or, for names recorded surname first, the household there of the surname their forename is
    swapped = _names_the_other_way_round(summaries["people"])
    placed = placed.join(best.rename({"surname": "forename", "surname_address": "swapped_address"}), on=["latest_postcode", "forename"], how="left").with_columns(
        pl.when(pl.col("person_id").is_in(swapped.implode())).then(pl.col("swapped_address")).alias("swapped_address")
    )
    # ... or, for a child, the one household of their surname at a postcode they were recorded at before
    placed = placed.join(_child_at_an_earlier_postcode(placed, postcodes_seen, best), on="person_id", how="left")
    placed = placed.with_columns(
        pl.when(pl.col("address_key").is_not_null()).then(pl.col("address_key"))
        .when(pl.col("surname_address").is_not_null()).then(pl.col("surname_address"))
        .when(pl.col("victim_address").is_not_null()).then(pl.col("victim_address"))
        .when(pl.col("sibling_address").is_not_null()).then(pl.col("sibling_address"))
        .when(pl.col("kin_address").is_not_null()).then(pl.col("kin_address"))
        .when(pl.col("swapped_address").is_not_null()).then(pl.col("swapped_address"))
        .when(pl.col("earlier_address").is_not_null()).then(pl.col("earlier_address"))
        .when(pl.col("former_address").is_not_null()).then(pl.lit("moved from:") + pl.col("former_address"))
        .when(pl.col("latest_postcode").is_not_null() & pl.col("surname").is_not_null())
        .then(pl.lit("postcode:") + pl.col("latest_postcode") + "|" + pl.col("surname"))
        .otherwise(pl.lit("person:") + held.person_ids(pl.col("person_id")))
        .alias("household_key"),
        pl.when(pl.col("placed_by").is_not_null()).then(pl.col("placed_by"))
        .when(pl.col("address_key").is_not_null()).then(pl.lit("address"))
        .when(pl.col("surname_address").is_not_null()).then(pl.lit("postcode and surname"))
        .when(pl.col("victim_address").is_not_null()).then(pl.lit("domestic abuse notification"))
        .when(pl.col("sibling_address").is_not_null()).then(pl.lit(NAMED_WITH_SIBLING))
        .when(pl.col("kin_address").is_not_null()).then(pl.lit("moved with their household"))
        .when(pl.col("swapped_address").is_not_null()).then(pl.lit("postcode and surname"))
        .when(pl.col("earlier_address").is_not_null()).then(pl.lit("postcode and surname"))
        .when(pl.col("former_address").is_not_null()).then(pl.lit("moved away together"))
        .when(pl.col("latest_postcode").is_not_null() & pl.col("surname").is_not_null()).then(pl.lit("postcode and surname, no address"))
        .otherwise(pl.lit("alone"))
        .alias("placed_by"),
    )
    placed = _follow_kin_who_moved_on(placed, postcodes_seen)
    placed = _moved_with_those_named_with_them(placed, ties, summaries["addresses_seen"])
    placed = separate_families_at_one_address(placed, records, ties, held.person_ids).with_columns(household_parts(pl.col("household_key")))
    placed = placed.with_columns(pl.col("placed_by").replace_strict(PLACEMENT_CONFIDENCE).alias("placement_confidence"))
    members = placed.select(
        held.person_ids(pl.col("person_id")).alias("person_id"), "household_key", "household_postcode", "household_house_number", "placed_by", "placement_confidence",
        "forename", "surname", "dob", "sex", "age", "dependent_child", "last_seen",
    )
    households = members.group_by("household_key").agg(
        pl.len().alias("members"),
        pl.col("dependent_child").sum().alias("dependent_children"),
    ).with_columns((pl.col("dependent_children") > 0).alias("is_family"))
    return members, households


#: Surnames this alike (Jaro-Winkler, any part of one against any part of the other) are one
#: family's however a partner wrote them: a typo, a transliteration (Hussain, Hussein), a
#: feminine form (Kowalska, Kowalski), half of a double-barrelled name.
SURNAMES_ALIKE = 0.88


def _surnames_alike(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return False
    return any(jellyfish.jaro_winkler_similarity(x, y) >= SURNAMES_ALIKE for x in re.split(r"[ -]+", a) for y in re.split(r"[ -]+", b) if x and y)


def separate_families_at_one_address(placed: pl.DataFrame, records: pl.DataFrame, ties: pl.DataFrame, person_ids: Callable[[pl.Expr], pl.Expr]) -> pl.DataFrame:
    """Split a household whose dependent children fall into groups of surnames not alike, with no
    record joining the groups, into one family per group (rule 5 of the module's docstring).
    A second family's key is the address's key with its eldest child's person id appended, so
    it is as stable as the people in it. Households whose children share a surname (almost all)
    are left as they are, untouched by the comparison. person_ids: a person's id from the number
    they are held as (`FamilyRecords.person_ids`)."""
    children = placed.filter(pl.col("dependent_child") & pl.col("surname").is_not_null())
    mixed = children.group_by("household_key").agg(pl.col("surname").n_unique().alias("surnames")).filter(pl.col("surnames") > 1)["household_key"]
    at = placed.filter(pl.col("household_key").is_in(mixed.implode()) & ~pl.col("household_key").str.starts_with("postcode:"))
    if at.is_empty():
        return placed
    # recorded ties between two people: a pupil's contact, and those a record names as one household (`ties`)
    named = records.filter(pl.col("contact_surname").is_not_null()).select("person_id", "contact_forename", "contact_surname").unique()
    recorded = pl.concat([
        named.join(at.select(pl.col("person_id").alias("adult_id"), pl.col("forename").alias("contact_forename"), pl.col("surname").alias("contact_surname")),
                   on=["contact_forename", "contact_surname"]).select("person_id", "adult_id"),
        ties.rename({"other_id": "adult_id"}),
    ])
    # people at one address are one family where their surnames are alike or a record ties them
    people = at.select("person_id", "household_key", "surname", "dependent_child", "dob").sort("household_key", "person_id").with_row_index("i")
    pairs = people.join(people, on="household_key", suffix="_b").filter(pl.col("i") < pl.col("i_b"))
    surnames = pairs.select("surname", "surname_b").unique()
    alike = surnames.filter(pl.Series([_surnames_alike(x, y) for x, y in surnames.iter_rows()], dtype=pl.Boolean))
    tied = pl.concat([recorded, recorded.select(pl.col("adult_id").alias("person_id"), pl.col("person_id").alias("adult_id"))]).rename({"adult_id": "person_id_b"})
    joined = pl.concat([
        pairs.join(alike, on=["surname", "surname_b"], how="semi"),
        pairs.join(tied.cast(pairs.select("person_id", "person_id_b").schema), on=["person_id", "person_id_b"], how="semi"),
    ])
    graph = coo_matrix((np.ones(joined.height, dtype=np.int8), (joined["i"].to_numpy(), joined["i_b"].to_numpy())), shape=(people.height,) * 2)
    people = people.with_columns(pl.Series("family", connected_components(graph, directed=False)[1]))
    # each household's families with a dependent child, largest first; the largest keeps the address's
    # key (adults tied to no child are in it), each other's key is the address's with its eldest child's id
    families = (
        people.group_by("household_key", "family")
        .agg(
            pl.len().alias("size"), pl.col("person_id").min().alias("first_id"),
            pl.col("person_id").filter("dependent_child")
            .sort_by([pl.col("dob").filter("dependent_child"), pl.col("person_id").filter("dependent_child")], nulls_last=True)
            .first().alias("eldest"),
        )
        .filter(pl.col("eldest").is_not_null())
        .sort("household_key", "size", "first_id", descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("household_key").alias("rank"))
    )
    split = families.filter(pl.col("rank") == 1)["household_key"]
    if split.is_empty():
        return placed
    moved = people.join(families.filter(pl.col("rank") > 0), on=["household_key", "family"]).select(
        "person_id", (pl.col("household_key") + "|" + person_ids(pl.col("eldest"))).alias("separate_key")
    )
    # the meeting is told a family was told apart from another at its address: a judgement, not a record
    shared = pl.col("household_key").is_in(split.implode()) & (pl.col("placed_by") == "address")
    return placed.with_columns(pl.when(shared).then(pl.lit(SHARED_ADDRESS)).otherwise(pl.col("placed_by")).alias("placed_by")).join(
        moved, on="person_id", how="left"
    ).with_columns(pl.coalesce("separate_key", "household_key").alias("household_key")).drop("separate_key")


#: How sure a placement is, by the evidence that placed the person (`placed_by`): a full address
#: the person's own records give is firm; a named link to someone housed (a pupil's contact, a
#: domestic abuse notification), a move followed with the household, or a family told apart from
#: another at one address by their surnames (rule 5) is likely; a postcode and a surname alone
#: (an adult seen only at A&E, say) is a guess the meeting must check.
SHARED_ADDRESS = "address, told apart from another family there"
NAMED_WITH_SIBLING = "named with a sibling at the front door"
PLACEMENT_CONFIDENCE = {
    "address": "high",
    SHARED_ADDRESS: "medium",
    "school contact": "medium",
    "domestic abuse notification": "medium",
    NAMED_WITH_SIBLING: "medium",
    "moved with their household": "medium",
    "postcode and surname": "low",
    "moved away together": "low",
    "postcode and surname, no address": "low",
    "alone": "low",
}


#: Evidence this much newer from other people at an address means the earlier occupants left.
MOVED_AWAY_AFTER = dt.timedelta(days=180)


def _evict_former_occupants(placed: pl.DataFrame, ties: pl.DataFrame) -> pl.DataFrame:
    """People last seen at an address well before others were seen there have moved away:
    someone else lives there now. The others must be strangers: not of their surname (nor
    carrying a name in place of a family name, `NAMES_IN_PLACE_OF_A_FAMILY_NAME`), and no
    record names them as one household or at home together (`ties`: person_id, other_id).
    Those who moved away keep the old address only as `former_address`, so those who left
    together stay together."""
    # last seen there: at the address, or at its postcode by a source that records no street (A&E)
    at = placed.filter(pl.col("address_key").is_not_null()).select(
        "person_id", "address_key", "surname", "address_seen", pl.max_horizontal("address_seen", "postcode_seen").alias("last_there")
    )
    later = at.join(at, on="address_key", suffix="_other").filter(
        pl.col("address_seen_other") > pl.col("last_there") + MOVED_AWAY_AFTER
    )
    tied = ties.rename({"other_id": "person_id_other"}).with_columns(pl.lit(True).alias("tied"))
    kin = (
        (pl.col("surname") == pl.col("surname_other"))
        | pl.col("surname").is_in(NAMES_IN_PLACE_OF_A_FAMILY_NAME) | pl.col("surname_other").is_in(NAMES_IN_PLACE_OF_A_FAMILY_NAME)
        | pl.col("tied").fill_null(False)
    )
    strangers = later.join(tied, on=["person_id", "person_id_other"], how="left").group_by("person_id").agg(kin.any().alias("kin"))
    moved = strangers.filter(~pl.col("kin")).select("person_id", pl.lit(True).alias("moved_away"))
    placed = placed.join(moved, on="person_id", how="left")
    return placed.with_columns(
        pl.when(pl.col("moved_away")).then(pl.col("address_key")).alias("former_address"),
        pl.when(pl.col("moved_away")).then(None).otherwise(pl.col("address_key")).alias("address_key"),
        pl.when(pl.col("moved_away")).then(None).otherwise(pl.col("postcode")).alias("postcode"),
    ).drop("moved_away")


def _follow_household(placed: pl.DataFrame, history: pl.DataFrame, ties: pl.DataFrame) -> pl.DataFrame:
    """Someone who moved away joins their kin they used to live with (of their surname, or named
    as their household by a record: `ties`, person_id and other_id), where those were seen
    since at a new address: households usually move together. Others seen at the old address
    may have lived there at another time, so they are not followed.
    history: (person_id, former_address), every full address each person was recorded at."""
    now = placed.filter(pl.col("address_key").is_not_null()).select(pl.col("person_id").alias("other"), pl.col("address_key").alias("new_address"), pl.col("surname").alias("other_surname"))
    movers = placed.filter(pl.col("former_address").is_not_null()).select("person_id", "former_address", "surname")
    went_with = (
        movers.join(history.rename({"person_id": "other"}), on="former_address")
        .filter(pl.col("other") != pl.col("person_id"))
        .join(now, on="other")
        .filter(pl.col("new_address") != pl.col("former_address"))
        .join(ties.rename({"other_id": "other"}).with_columns(pl.lit(True).alias("tied")), on=["person_id", "other"], how="left")
        .filter((pl.col("surname") == pl.col("other_surname")) | pl.col("tied").fill_null(False))
        .group_by("person_id", "new_address")
        .agg(pl.len().alias("n"))
        .sort(["person_id", "n", "new_address"], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select("person_id", "new_address")
    )
    placed = placed.join(went_with, on="person_id", how="left")
    return placed.with_columns(
        pl.when(pl.col("new_address").is_not_null()).then(pl.lit("moved with their household")).otherwise(pl.col("placed_by")).alias("placed_by"),
        pl.coalesce("new_address", "address_key").alias("address_key"),
        pl.when(pl.col("new_address").is_not_null()).then(None).otherwise(pl.col("former_address")).alias("former_address"),
    ).drop("new_address")


def _child_at_an_earlier_postcode(placed: pl.DataFrame, postcodes_seen: pl.DataFrame, by_surname: pl.DataFrame) -> pl.DataFrame:
    """person_id -> earlier_address, for a dependent child with no address whose latest postcode
    holds no household of their surname: the one household of their surname at the postcodes
    they were recorded at before, where there is only one. Children do not move out on their own;
    an A&E visit gives where the child was (or a neighbouring postcode keyed), not a new home.
    by_surname: (latest_postcode, surname) -> surname_address, one household each."""
    children = placed.filter(pl.col("dependent_child") & pl.col("address_key").is_null()).select("person_id", "surname", "latest_postcode")
    return (
        postcodes_seen.rename({"kin": "person_id"})
        .join(children, on="person_id")
        .filter(pl.col("postcode") != pl.col("latest_postcode"))
        .join(by_surname.rename({"latest_postcode": "postcode", "surname_address": "earlier_address"}), on=["postcode", "surname"])
        .group_by("person_id")
        .agg(pl.col("earlier_address").unique())
        .filter(pl.col("earlier_address").list.len() == 1)
        .select("person_id", pl.col("earlier_address").list.first())
    )


def _names_the_other_way_round(people: pl.DataFrame) -> pl.Series:
    """The person ids whose names were recorded surname first (names that do not follow a
    forename-surname order, keyed the other way round): the county's people carry their surname
    more often as a forename, and their forename more often as a surname."""
    as_forename = people.group_by(pl.col("forename").alias("name")).len().rename({"len": "as_forename"})
    as_surname = people.group_by(pl.col("surname").alias("name")).len().rename({"len": "as_surname"})
    counted = (
        people.select("person_id", "forename", "surname")
        .join(as_forename.rename({"name": "surname", "as_forename": "surname_as_forename"}), on="surname", how="left")
        .join(as_surname.rename({"name": "surname", "as_surname": "surname_as_surname"}), on="surname", how="left")
        .join(as_forename.rename({"name": "forename", "as_forename": "forename_as_forename"}), on="forename", how="left")
        .join(as_surname.rename({"name": "forename", "as_surname": "forename_as_surname"}), on="forename", how="left")
        .fill_null(0)
    )
    return counted.filter(
        (pl.col("surname_as_forename") > pl.col("surname_as_surname")) & (pl.col("forename_as_surname") > pl.col("forename_as_forename"))
    )["person_id"]


def _kin_moved_from_postcode(placed: pl.DataFrame, postcodes_seen: pl.DataFrame) -> pl.DataFrame:
    """person_id -> kin_address, for someone known only by postcode (an infant seen at A&E, say)
    whose postcode no one of their surname lives at now, but where people of their surname were
    seen before moving on to a full address: the household moved, and took them along."""
    unplaced = placed.filter(pl.col("address_key").is_null() & pl.col("surname").is_not_null() & pl.col("latest_postcode").is_not_null())
    housed = placed.filter(pl.col("address_key").is_not_null()).select(
        pl.col("person_id").alias("kin"), "surname", pl.col("address_key").alias("kin_address"), pl.col("postcode").alias("kin_postcode")
    )
    # (postcode, surname) pairs: joined on both, a county's Smiths never meet each other
    were_there = postcodes_seen.join(housed, on="kin").filter(pl.col("kin_postcode") != pl.col("postcode"))
    return (
        unplaced.select("person_id", "surname", pl.col("latest_postcode").alias("postcode"))
        .join(were_there, on=["postcode", "surname"])
        .pipe(_most_voted, "kin_address")
    )


def _most_voted(votes: pl.DataFrame, choice: str) -> pl.DataFrame:
    """person_id -> the `choice` most of their rows vote for, ties to the first in order."""
    return (
        votes.group_by("person_id", choice)
        .len()
        .sort(["person_id", "len", choice], descending=[False, True, False])
        .group_by("person_id", maintain_order=True)
        .first()
        .select("person_id", choice)
    )


def household_parts(key: pl.Expr) -> list[pl.Expr]:
    """The postcode and house number a household key is made of, as columns: keys are
    'POSTCODE|FLAT|NUMBER' (an address), 'moved from:' an address, 'postcode:POSTCODE|SURNAME'
    (no address known) or 'person:ID' (alone); read here, where they are written."""
    parts = key.str.split("|")
    return [
        pl.when(key.str.starts_with("person:")).then(None)
        .otherwise(parts.list.get(0, null_on_oob=True).str.replace(r"^(moved from:|postcode:)", "")).alias("household_postcode"),
        pl.when(key.str.starts_with("postcode:")).then(None).otherwise(parts.list.get(2, null_on_oob=True)).alias("household_house_number"),
    ]


def _moved_with_those_named_with_them(placed: pl.DataFrame, ties: pl.DataFrame, history: pl.DataFrame) -> pl.DataFrame:
    """Someone a record names with another as one household (`ties`: `_named_as_one_household`) whose
    records still give the address the other has left, never the other's new one, moved with
    them: a partner's records catch up with a move months late (a school's roll, a police
    system), and a family is not split by the one record that has not.
    history: (person_id, former_address), every full address each person was recorded at."""
    at_address = placed.filter(pl.col("placed_by") == "address")
    stale = (
        ties
        .join(at_address.select("person_id", "household_key"), on="person_id")
        .join(at_address.select(pl.col("person_id").alias("other_id"), pl.col("household_key").alias("their_household")), on="other_id")
        .filter(pl.col("household_key") != pl.col("their_household"))
        # the other lived here before, and this one was never recorded at the other's new address
        .join(history.rename({"person_id": "other_id", "former_address": "household_key"}), on=["other_id", "household_key"], how="semi")
        .join(history.rename({"former_address": "their_household"}), on=["person_id", "their_household"], how="anti")
        .pipe(_most_voted, "their_household")
    )
    placed = placed.join(stale, on="person_id", how="left")
    return placed.with_columns(
        pl.coalesce("their_household", "household_key").alias("household_key"),
        pl.when(pl.col("their_household").is_not_null()).then(pl.lit("moved with their household")).otherwise(pl.col("placed_by")).alias("placed_by"),
    ).drop("their_household")


def _follow_kin_who_moved_on(placed: pl.DataFrame, postcodes_seen: pl.DataFrame) -> pl.DataFrame:
    """Someone whose address is known only from old records (a school leaver, say), whose kin of
    their surname were seen at that postcode too and since then only somewhere else, went with
    them: a household moves together, and the one no source has seen since moved too."""
    stale = placed.filter(pl.col("placed_by") == "address").select(
        "person_id", "surname", "postcode", pl.max_horizontal("address_seen", "postcode_seen").alias("last_there"), "household_key"
    )
    kin = placed.select(
        pl.col("person_id").alias("kin"), "surname", "latest_postcode", pl.col("postcode_seen").alias("kin_seen"), pl.col("household_key").alias("kin_household")
    )
    were_there = postcodes_seen.join(kin, on="kin").filter(pl.col("latest_postcode") != pl.col("postcode"))
    followed = (
        stale.join(were_there, on=["postcode", "surname"])
        .filter(
            (pl.col("kin") != pl.col("person_id"))
            & (pl.col("kin_seen") > pl.col("last_there") + MOVED_AWAY_AFTER)
            & (pl.col("kin_household") != pl.col("household_key"))
        )
        .pipe(_most_voted, "kin_household")
    )
    # ... unless someone of their surname still lives at the old address
    stayed = placed.filter(pl.col("placed_by") == "address").group_by("household_key", "surname").len().filter(pl.col("len") > 1)
    followed = followed.join(stale.select("person_id", "household_key", "surname"), on="person_id").join(stayed, on=["household_key", "surname"], how="anti")
    placed = placed.join(followed.select("person_id", "kin_household"), on="person_id", how="left")
    return placed.with_columns(
        pl.coalesce("kin_household", "household_key").alias("household_key"),
        pl.when(pl.col("kin_household").is_not_null()).then(pl.lit("moved with their household")).otherwise(pl.col("placed_by")).alias("placed_by"),
    ).drop("kin_household")


def _school_contacts(records: pl.DataFrame, addresses: pl.DataFrame) -> pl.DataFrame:
    """(contact forename, surname, postcode) -> the address of the pupil who names them, latest first."""
    school = records.filter((pl.col("source") == "school_attendance") & pl.col("contact_surname").is_not_null())
    named = school.select("person_id", "contact_forename", "contact_surname", "event_date").join(addresses, on="person_id")
    return (
        named.sort("event_date", descending=True)
        .group_by("contact_forename", "contact_surname", pl.col("postcode").alias("contact_postcode"), maintain_order=True)
        .agg(pl.col("address_key").first().alias("contact_address"))
    )


def _named_together(records: pl.DataFrame) -> pl.DataFrame:
    """(person_id, other_id): children named in one contact at the children's front door, which
    names a household's children together."""
    named = records.filter(pl.col("source") == "front_door_contacts").select("event_ref", "person_id").unique()
    return (
        named.join(named.rename({"person_id": "other_id"}), on="event_ref")
        .filter(pl.col("person_id") != pl.col("other_id"))
        .select("person_id", "other_id")
        .unique()
    )


def _named_as_one_household(records: pl.DataFrame) -> pl.DataFrame:
    """(person_id, other_id), both ways: people a record names as living together: children named
    in one front-door contact, a domestic abuse victim and the children resident or present, a
    benefit claimant and the partner on the claim."""
    claims = records.filter(pl.col("source") == "worklessness").select("event_ref", "person_id").unique()
    victims = _child_of_victim(records).rename({"adult_id": "other_id"})
    one_way = pl.concat([
        _named_together(records),
        claims.join(claims.rename({"person_id": "other_id"}), on="event_ref").filter(pl.col("person_id") != pl.col("other_id")).select("person_id", "other_id"),
        victims,
    ])
    return pl.concat([one_way, one_way.select(pl.col("other_id").alias("person_id"), pl.col("person_id").alias("other_id"))]).unique()


def _recorded_at_home_together(records: pl.DataFrame) -> pl.DataFrame:
    """(person_id, other_id), both ways: the victim and perpetrator of one domestic abuse
    notification recorded at one address, a couple at home when the police came. Not a household
    for good (they may have separated since), but not strangers to each other's address either."""
    at = ["event_ref", "postcode", "house_number", "flat"]
    notified = records.filter((pl.col("source") == "domestic_abuse") & pl.col("house_number").is_not_null()).select("person_id", "role", *at)
    couples = notified.filter(pl.col("role") == "VICTIM").drop("role").join(
        notified.filter(pl.col("role") == "PERPETRATOR").drop("role").rename({"person_id": "other_id"}), on=at, nulls_equal=True
    ).select("person_id", "other_id")
    return pl.concat([couples, couples.select(pl.col("other_id").alias("person_id"), pl.col("person_id").alias("other_id"))])


def _child_of_victim(records: pl.DataFrame) -> pl.DataFrame:
    da = records.filter(pl.col("source") == "domestic_abuse")
    victims = da.filter(pl.col("role") == "VICTIM").select("event_ref", pl.col("person_id").alias("adult_id"))
    children = da.filter(pl.col("role").is_in(["CHILD_RESIDENT", "CHILD_PRESENT"])).select("event_ref", "person_id")
    return children.join(victims, on="event_ref").select("person_id", "adult_id").unique()
