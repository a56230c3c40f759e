"""Partners' addresses matched to the council's gazetteer (LLPG), so households form on properties.

A partner writes one flat as "Flat 2, 14 Mill Lane", "14/2 Mill Lane", "2/14 Mill Lane" or
"14B Mill Lane"; read alone, "2 14 Mill Lane" could be flat 2 of number 14 or number 2. The
gazetteer knows which properties exist, so a written address is read as the property it can
only be. The method follows MoJ's `uk-address-matcher` (which cannot share our environment: its
release 1.5.3 needs duckdb < 2 and splink < 5) and ASSIGN: numbers and street tokens compared,
exact first, then fuzzy, within the postcode; then, for what is left and names a street the
postcode does not hold, within the postcode's sector (a neighbouring unit keyed by mistake). A match must explain the address's numbers
better than any other property there; a tie is left unmatched rather than guessed.

Each distinct (postcode, address line) is matched once. The result, per person mention:
`uprn`, `match` (property, building: the flat is not in the gazetteer, so the building's UPRN
with the partner's flat; sector: found in a neighbouring postcode; street: a line sent without a
postcode, found by its street and numbers in the whole gazetteer), and the property's own
postcode, house number and flat, which replace the partner's when households are formed
(`canonical_addresses`): a flat stays a household of its own under its building.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from linkage import standardise
from linkage.families import FamilyRecords
from linkage.person_records import HOUSEHOLD_COLUMNS, PERSON_RECORDS, RECORD_POSITION, linked_person_records, mention_join
from linkage.standardise import address_key, per_distinct_value, postcode_parts
from warehouse import register, scratch, table_columns, table_exists

GAZETTEER_TABLE = "raw_address_gazetteer"
#: Each matched mention with its line's match (MATCH_COLUMNS): a view of ADDRESS_LINE_MATCHES.
ADDRESS_MATCHES = "address_matches"
#: Each matched address line (LINE_COLUMNS) with its match: what `address_matches` gives its mentions.
ADDRESS_LINE_MATCHES = "address_line_matches"
#: Each address line the last run found no property for (LINE_COLUMNS): with ADDRESS_LINE_MATCHES,
#: every line it matched, so the next run matches only the lines new to it.
ADDRESS_LINES_UNMATCHED = "address_lines_unmatched"
#: What the last run's lines were matched against and with (`matched_with`): one row, `made_with`.
ADDRESS_MATCHING_MADE = "address_matching_made"

# A candidate's score: its house number explained (4), its flat explained (2), the street
# found exactly in the line (1) or alike (0), less one for each number in the line the property
# does not explain. The partner's own reading of the line is no evidence: "8 4 Ronald Rise" is
# number 8 or flat 8 of number 4, and where the gazetteer holds both houses and not the flat the
# two tie and the line is left to its property's other lines (`one_reading_per_property`).
_MATCH_SQL = """
WITH candidates AS (
    SELECT a.address_id, g.uprn, g.is_building, g.postcode, g.pao, g.sao_number,
           -- a number the line marks as a flat ("Flat 8, 6 ...") is never read as a house number
           CASE WHEN a.flat IS NOT NULL THEN g.pao = a.house_number
                ELSE list_contains(a.numbers, g.pao) OR list_contains(a.numbers, g.pao || g.sao_letter) END AS pao_ok,
           g.sao_number IS NULL OR list_contains(a.numbers, g.sao_number) OR list_contains(a.numbers, g.pao || g.sao_letter) AS sao_ok,
           contains(' ' || a.address || ' ', ' ' || g.street || ' ') AS street_exact,
           jaro_winkler_similarity(a.street_part, g.street) >= 0.88 AS street_alike,
           len(list_filter(a.numbers, lambda n: n <> g.pao AND n <> coalesce(g.sao_number, '') AND n <> g.pao || coalesce(g.sao_letter, ''))) AS unexplained
    FROM addresses a JOIN house_numbers k USING (address_id) JOIN gazetteer g ON g.pao = k.pao AND {block}
), scored AS (
    SELECT *, 4 + CASE WHEN sao_number IS NOT NULL THEN 2 ELSE 0 END + CASE WHEN street_exact THEN 1 ELSE 0 END
              - unexplained AS score
    FROM candidates WHERE pao_ok AND sao_ok AND (street_exact OR street_alike)
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY address_id ORDER BY score DESC, uprn) AS rank,
           count(*) OVER (PARTITION BY address_id, score) AS tied
    FROM scored
)
SELECT address_id, uprn, is_building, postcode AS property_postcode, pao AS property_house_number, sao_number AS property_flat
FROM ranked WHERE rank = 1 AND tied = 1
"""


_STREET_IN_POSTCODE = """
    SELECT a.address_id FROM addresses a JOIN gazetteer g ON a.postcode = g.postcode
    WHERE contains(' ' || a.address || ' ', ' ' || g.street || ' ') OR jaro_winkler_similarity(a.street_part, g.street) >= 0.88
"""


#: What the matcher reads of the gazetteer's properties.
GAZETTEER_COLUMNS = ("uprn", "parent_uprn", "sao", "pao", "street", "postcode")

#: A flat's number as the letter partners sometimes write it after the house number (14B: flat 2 of 14).
FLAT_LETTERS = {str(n): letter for n, letter in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ", start=1)}
_LETTER_NUMBERS = {letter: n for n, letter in FLAT_LETTERS.items()}


def _gazetteer(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The gazetteer standardised as partners' addresses are: street tokens spelt out, the flat's number."""
    raw = con.sql(f"SELECT {', '.join(GAZETTEER_COLUMNS)} FROM {GAZETTEER_TABLE}").pl()
    postcode, sector, _ = postcode_parts(pl.col("postcode"))
    buildings = raw.filter(pl.col("parent_uprn").is_not_null()).select(pl.col("parent_uprn").alias("uprn")).unique()
    # each distinct postcode, number and street read once: a county's properties share a few thousand streets
    standard = raw.select("uprn", "postcode", "pao", "street", "sao")
    standard = per_distinct_value(standard, "postcode", {"_postcode": postcode, "postcode_sector": sector})
    standard = per_distinct_value(standard, "pao", {"_pao": address_key(pl.col("pao"))})
    standard = per_distinct_value(standard, "street", {"_street": address_key(pl.col("street"))})
    standard = per_distinct_value(standard, "sao", {"sao_number": address_key(pl.col("sao")).str.extract(r"([0-9]+)$", 1)})
    return standard.select(
        "uprn",
        pl.col("_postcode").alias("postcode"), "postcode_sector",
        pl.col("_pao").alias("pao"),
        pl.col("_street").alias("street"),
        "sao_number",
        pl.col("uprn").is_in(buildings["uprn"].implode()).alias("is_building"),
    ).with_columns(
        # the letter a flat's number is sometimes written as (14B for flat 2 of 14)
        pl.col("sao_number").replace_strict(FLAT_LETTERS, default=None, return_dtype=pl.String).alias("sao_letter")
    )


def _house_numbers(addresses: pl.DataFrame) -> pl.DataFrame:
    """address_id -> every house number (pao) a property could have to explain the line: the
    line's numbers, their digits without a flat's letter (14B: 14), the partner's house number.
    The matcher joins the gazetteer on these, so a line is scored only against properties whose
    number it holds (any other fails `pao_ok`) instead of every property in its sector."""
    numbers = addresses.select("address_id", pl.col("numbers").alias("pao")).explode("pao")
    return pl.concat([
        numbers,
        numbers.select("address_id", pl.col("pao").str.extract(r"^([0-9]+)", 1)),
        addresses.select("address_id", pl.col("house_number").alias("pao")),
    ]).drop_nulls().unique()


def _line_parts() -> list[pl.Expr]:
    """An address line's numbers as written, and the line from its street on (numbers and a
    flat's marker taken off the front): what the matcher compares with each property."""
    return [
        pl.col("address").str.extract_all(r"\b[0-9]+[A-Z]?\b").alias("numbers"),
        pl.col("address").str.replace(r"^((FLAT|APARTMENT|UNIT|APT) )?([0-9]+[A-Z]? )+", "").alias("street_part"),
    ]


#: What the matcher and the readings read of a mention's address. Mentions written alike are one
#: line, matched and read once and given to every mention of it: a county's 3.7M mentions are
#: 315,000 lines at 1.2M residents.
LINE_COLUMNS = ("postcode", "postcode_sector", "address", "house_number", "flat")
#: A matched line's property: its postcode, house number and flat, which households form on.
PROPERTY_COLUMNS = ("property_postcode", "property_house_number", "property_flat")


def match_addresses(con: duckdb.DuckDBPyConnection, records: pl.DataFrame) -> pl.DataFrame:
    """records: person_records' (record_key and LINE_COLUMNS). Returns record_key -> uprn, match,
    property_postcode, property_house_number, property_flat, for the records matched (none when
    the gazetteer is absent or empty), in record_key order."""
    lines = records.select(LINE_COLUMNS).unique().with_row_index("line")
    found = match_lines(con, lines)
    return (
        records.select("record_key", *LINE_COLUMNS).join(lines, on=list(LINE_COLUMNS), nulls_equal=True)
        .join(found, on="line").select(MATCH_COLUMNS).sort("record_key")
    )


def match_lines(con: duckdb.DuckDBPyConnection, lines: pl.DataFrame) -> pl.DataFrame:
    """lines: distinct address lines (LINE_COLUMNS), numbered (`line`). Returns line -> uprn,
    match, property_postcode, property_house_number, property_flat, for the lines matched."""
    empty = pl.DataFrame(schema={"line": lines.schema["line"], "uprn": pl.String, "match": pl.String, **dict.fromkeys(PROPERTY_COLUMNS, pl.String)})
    if lines.is_empty() or not table_exists(con, GAZETTEER_TABLE) or con.execute(f"SELECT count(*) FROM {GAZETTEER_TABLE}").fetchall()[0][0] == 0:
        return empty
    gazetteer = _gazetteer(con)
    addresses = (
        lines.filter(pl.col("address").is_not_null() & pl.col("postcode").is_not_null())
        .select(pl.col("line").alias("address_id"), *LINE_COLUMNS)
        .with_columns(*_line_parts())
    )
    local = scratch()
    try:
        register(local, "gazetteer", gazetteer)
        register(local, "addresses", addresses)
        register(local, "house_numbers", _house_numbers(addresses))
        exact = local.sql(_MATCH_SQL.format(block="a.postcode = g.postcode")).pl().with_columns(pl.lit("postcode").alias("pass"))
        # the lines left go on to the sector: only these are searched for their street in their
        # own postcode (every line's search was most of the matcher's time, for the few left)
        register(local, "addresses", addresses.join(exact.select("address_id"), on="address_id", how="anti"))
        # only where the street is not in the postcode given: a street that is there, without the
        # number, is a property the gazetteer lacks (a new build), not a postcode keyed wrong
        rest = local.sql(
            _MATCH_SQL.format(block=f"a.postcode_sector = g.postcode_sector AND a.postcode <> g.postcode AND a.address_id NOT IN ({_STREET_IN_POSTCODE})")
        ).pl().with_columns(pl.lit("sector").alias("pass"))
    finally:
        local.close()
    found = pl.concat([exact, rest]).join(addresses.select("address_id", "flat"), on="address_id").rename({"address_id": "line"})
    matched = pl.concat([found, _match_without_postcode(lines, gazetteer)], how="diagonal_relaxed")
    if matched.is_empty():
        return empty
    return matched.select(
        pl.col("line").cast(lines.schema["line"]), "uprn",
        pl.when(pl.col("pass").is_in(["sector", "street"])).then(pl.col("pass"))
        .when(pl.col("is_building") & pl.col("property_flat").is_null() & pl.col("flat").is_not_null())
        .then(pl.lit("building")).otherwise(pl.lit("property")).alias("match"),
        pl.col("property_postcode").cast(pl.String),
        pl.col("property_house_number").cast(pl.String),
        # a flat the gazetteer lacks keeps the partner's flat number under its building
        pl.coalesce("property_flat", pl.when(pl.col("is_building")).then(pl.col("flat"))).cast(pl.String).alias("property_flat"),
    )


def _match_without_postcode(lines: pl.DataFrame, gazetteer: pl.DataFrame) -> pl.DataFrame:
    """Lines a partner sent without a postcode (police records: "may be blank"), matched by their
    street and numbers across the whole gazetteer: the same scoring, a tie (one street name in
    two towns, say) left unmatched. Streets are found by the line's leading words after its
    numbers, so the join is on equal names, never a scan of every property for every line."""
    no_postcode = lines.filter(pl.col("address").is_not_null() & pl.col("postcode").is_null())
    if no_postcode.is_empty():
        return pl.DataFrame()
    written = ["address", "house_number", "flat"]
    lines = (
        no_postcode.select(written).unique()
        .with_row_index("address_id")
        .with_columns(*_line_parts(), pl.lit(None, dtype=pl.String).alias("postcode"))
    )
    words = lines.select("address_id", pl.col("street_part").str.split(" ").alias("words"))
    streets = (
        words.with_columns(pl.int_ranges(1, pl.col("words").list.len() + 1).alias("n")).explode("n")
        .select("address_id", pl.col("words").list.head(pl.col("n")).list.join(" ").alias("street"))
    )
    candidates = streets.join(gazetteer, on="street")
    local = scratch()
    try:
        register(local, "gazetteer", candidates)
        register(local, "addresses", lines)
        register(local, "house_numbers", _house_numbers(lines))
        found = local.sql(_MATCH_SQL.format(block="a.address_id = g.address_id")).pl()
    finally:
        local.close()
    # each line takes its own match: on the address alone, two lines written alike but with another
    # house number or flat would each take both, and a line's match would depend on the others sent
    found = found.join(lines.select("address_id", *written), on="address_id")
    return no_postcode.select("line", *written).join(found, on=written, nulls_equal=True).drop("house_number").with_columns(pl.lit("street").alias("pass"))


@dataclass
class AddressMatching:
    """Every distinct address line of the person mentions (LINE_COLUMNS), how many mentions give
    it (`mentions`) and, where matched, its property (uprn, match, PROPERTY_COLUMNS; null where not);
    `made_with`: what they were matched against and with (`matched_with`), None without a gazetteer."""

    lines: pl.DataFrame
    stats: dict = field(default_factory=dict)  # figures only, for the asset's metadata
    made_with: str | None = None

    @property
    def matched(self) -> pl.DataFrame:
        return self.lines.filter(pl.col("match").is_not_null())


def matched_with(con: duckdb.DuckDBPyConnection) -> str | None:
    """What a line's match rests on besides the line itself: the gazetteer's properties as loaded
    (how many, and the sum of DuckDB's hashes of what the matcher reads of each, GAZETTEER_COLUMNS:
    whatever file they came from and however its contract read them; 0.03 s for a 1.2M county's
    608,674), the code that standardises and matches (this module, `standardise`) and DuckDB's and
    Polars' versions (their hashes, string functions and regular expressions). None without a
    gazetteer."""
    if not table_exists(con, GAZETTEER_TABLE):
        return None
    properties, hashed = con.execute(f"SELECT count(*), sum(hash({', '.join(GAZETTEER_COLUMNS)})) FROM {GAZETTEER_TABLE}").fetchall()[0]
    if not properties:
        return None
    code = b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], standardise))
    text = code + f"{properties} {hashed} duckdb {duckdb.__version__} polars {pl.__version__}".encode()
    return hashlib.sha256(text).hexdigest()


def _lines_matched_before(con: duckdb.DuckDBPyConnection, made_with: str | None) -> tuple[pl.DataFrame, pl.DataFrame] | None:
    """The last run's matched lines (LINE_COLUMNS and the match) and unmatched lines, where they
    were matched as this run would match them (the same `made_with`); else None."""
    if made_with is None or not all(table_exists(con, t) for t in (ADDRESS_MATCHING_MADE, ADDRESS_LINES_UNMATCHED, ADDRESS_LINE_MATCHES)):
        return None
    if con.execute(f"SELECT made_with FROM {ADDRESS_MATCHING_MADE}").fetchall() != [(made_with,)]:
        return None
    matched = con.sql(f"SELECT {', '.join((*LINE_COLUMNS, *MATCH_COLUMNS[1:]))} FROM {ADDRESS_LINE_MATCHES}").pl()
    return matched, con.sql(f"SELECT {', '.join(LINE_COLUMNS)} FROM {ADDRESS_LINES_UNMATCHED}").pl()


def match_person_addresses(con: duckdb.DuckDBPyConnection, reuse: bool = True) -> AddressMatching:
    """Every person mention with an address line and a postcode, matched to the gazetteer. With
    `reuse`, a line the last run matched against the same gazetteer with the same code takes that
    run's match (a line's match is its own and the gazetteer's alone) and only the lines new since
    are matched: a month's few thousand of a county's 315,000 at 1.2M residents."""
    began = time.perf_counter()
    lines = person_lines(con)
    made_with = matched_with(con)
    before = _lines_matched_before(con, made_with) if reuse else None
    if before is None:
        found, afresh = match_lines(con, lines), lines.height
    else:
        matched_then, unmatched_then = before
        on = list(LINE_COLUMNS)
        kept = lines.select("line", *on).join(matched_then, on=on, nulls_equal=True).drop(on)
        new = lines.join(matched_then.select(on), on=on, how="anti", nulls_equal=True).join(unmatched_then, on=on, how="anti", nulls_equal=True)
        found, afresh = pl.concat([kept, match_lines(con, new)], how="vertical_relaxed"), new.height
    lines = lines.join(found, on="line", how="left", maintain_order="left")
    matching = AddressMatching(lines, made_with=made_with)
    matched = matching.matched
    with_line = lines.filter(pl.col("address").is_not_null() & pl.col("postcode").is_not_null())["mentions"].sum()
    matching.stats = {
        "addresses_matched_to_gazetteer": matched["mentions"].sum(),
        "address_match_rate": round(matched["mentions"].sum() / with_line, 4) if with_line else None,
        "address_lines_matched_afresh": afresh,
        "address_matching_seconds": round(time.perf_counter() - began, 2),
        **{f"address_matches_{kind}": n for kind, n in matched.group_by("match").agg(pl.col("mentions").sum()).sort("match").iter_rows()},
    }
    return matching


def person_lines(con: duckdb.DuckDBPyConnection, matches: str | None = None) -> pl.DataFrame:
    """person_records' distinct address lines (LINE_COLUMNS), numbered (`line`), with how many
    mentions give each; `matches`: a table or view of matches by record_key (MATCH_COLUMNS) whose
    columns each line takes (every mention of a line is matched alike)."""
    taken = ", ".join(f"m.{c}" for c in MATCH_COLUMNS[1:]) if matches else ""
    joined = f"LEFT JOIN {matches} m USING (record_key)" if matches else ""
    return con.sql(f"""
        SELECT {", ".join(f"r.{c}" for c in LINE_COLUMNS)}{", " + taken if taken else ""}, count(*) AS mentions
        FROM {PERSON_RECORDS} r {joined} GROUP BY ALL""").pl().with_row_index("line")


#: What `address_matches` keeps of each match: enough to form households on the property again.
MATCH_COLUMNS = ("record_key", "uprn", "match", *PROPERTY_COLUMNS)


def _lines_equal(left: str, right: str) -> str:
    """A join condition: the two sides' address lines the same (nulls alike)."""
    return " AND ".join(f"{left}.{c} IS NOT DISTINCT FROM {right}.{c}" for c in LINE_COLUMNS)


def store_address_matches(con: duckdb.DuckDBPyConnection, matching: AddressMatching) -> None:
    """`address_line_matches`: each matched line (LINE_COLUMNS) and its match; and `address_matches`,
    a view giving each matched mention (MATCH_COLUMNS) its line's match where the mentions are, in
    no particular order. A table of the mentions' matches copied 2M record keys out of
    person_records for readers the run no longer has (its months read `household_addresses`): at
    1.2M residents written in 1.0-1.1 s, where the 258,000 matched lines take 0.17 s and the view
    0.2 s when read. With a gazetteer, also the lines left unmatched (`address_lines_unmatched`)
    and what they were matched with (`address_matching_made`), for the next run to match only
    the lines new to it; without one, neither is kept."""
    register(con, "_lines_matched", matching.matched.select(*LINE_COLUMNS, *MATCH_COLUMNS[1:]))
    try:
        con.execute(f"CREATE OR REPLACE TABLE {ADDRESS_LINE_MATCHES} AS SELECT * FROM _lines_matched")
    finally:
        con.unregister("_lines_matched")
    if matching.made_with is None:
        con.execute(f"DROP TABLE IF EXISTS {ADDRESS_MATCHING_MADE}")
        con.execute(f"DROP TABLE IF EXISTS {ADDRESS_LINES_UNMATCHED}")
    else:
        register(con, "_lines_unmatched", matching.lines.filter(pl.col("match").is_null()).select(LINE_COLUMNS))
        try:
            con.execute(f"CREATE OR REPLACE TABLE {ADDRESS_LINES_UNMATCHED} AS SELECT * FROM _lines_unmatched")
        finally:
            con.unregister("_lines_unmatched")
        con.execute(f"CREATE OR REPLACE TABLE {ADDRESS_MATCHING_MADE} AS SELECT ? AS made_with", [matching.made_with])
    # a warehouse whose last run predates the view holds the mentions' matches as a table
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_type = 'BASE TABLE'", [ADDRESS_MATCHES]).fetchall()[0][0]:
        con.execute(f"DROP TABLE {ADDRESS_MATCHES}")
    con.execute(f"""CREATE OR REPLACE VIEW {ADDRESS_MATCHES} AS
                    SELECT r.record_key, {", ".join(f"m.{c}" for c in MATCH_COLUMNS[1:])}
                    FROM {PERSON_RECORDS} r JOIN {ADDRESS_LINE_MATCHES} m ON {_lines_equal("r", "m")}""")


#: The person records households formed on at another address than the one sent (a matched
#: property's, or the reading most of a property's lines give), as the monthly run read them:
#: record_key and HOUSEHOLD_ADDRESS. A few percent of a county's records.
HOUSEHOLD_ADDRESSES = "household_addresses"
HOUSEHOLD_ADDRESS = ("postcode", "house_number", "flat")


def household_records(con: duckdb.DuckDBPyConnection, matching: AddressMatching | None = None) -> pl.DataFrame:
    """The linked person records families are formed from: each matched record at its property's
    address. `matching`: this run's (`match_person_addresses`); by default the monthly run's, so
    the scorecard's months form families as the monthly run does (`addresses_as_read`)."""
    return read_as(linked_person_records(con), addresses_read(con, matching) if matching is not None else addresses_as_read(con))


def held_household_records(con: duckdb.DuckDBPyConnection, read: pl.DataFrame | None = None) -> FamilyRecords:
    """`household_records` held in DuckDB for family formation (`FamilyRecords.held_in`), in the
    warehouse's own database, open while `con` is: never whole in Polars, where a county's 3.7M
    records held 1.6 GB. `read`: the addresses read at another address than the one sent, this run's
    (`addresses_read`) or by default the monthly run's (`addresses_as_read`)."""
    read = addresses_as_read(con) if read is None else read
    register(con, "_addresses_read", read.select("record_key", *HOUSEHOLD_ADDRESS).with_columns(pl.lit(True).alias("_read")))
    try:
        address = [f"CASE WHEN a._read THEN a.{c} ELSE pr.{c} END AS {c}" for c in HOUSEHOLD_ADDRESS]
        columns = [f"pr.{c}" for c in HOUSEHOLD_COLUMNS if c not in HOUSEHOLD_ADDRESS]
        # each record's place in person_records (`_order`), the order `linked_person_records` reads
        # them in; and in record_key order (`record_order`), as `FamilyRecords` numbers a frame's:
        # its row in person_links, which is written in that order (`PersonLinkage.person_links`),
        # so the records are not sorted again by their keys' text (0.4-0.6 s at 1.2M residents)
        return FamilyRecords.held_in(con, f"""
            SELECT pr.{RECORD_POSITION} AS _order, {", ".join(columns + address)}, pl.person_id, pl.rowid + 1 AS record_order
            FROM {PERSON_RECORDS} pr JOIN person_links pl ON {mention_join(con)} LEFT JOIN _addresses_read a ON a.record_key = pr.record_key""")
    finally:
        con.unregister("_addresses_read")


def addresses_as_read(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """The addresses the monthly run read at another address than the one sent (record_key and
    HOUSEHOLD_ADDRESS): its `household_addresses` as stored (read again, 8 of the scorecard
    evaluation's 75 s at 1.2M residents), else its `address_matches` read again."""
    if table_exists(con, HOUSEHOLD_ADDRESSES):
        return con.sql(f"SELECT record_key, {', '.join(HOUSEHOLD_ADDRESS)} FROM {HOUSEHOLD_ADDRESSES}").pl()
    # a warehouse whose last run predates the property columns forms households as that run did
    stored = table_columns(con, ADDRESS_MATCHES) >= set(MATCH_COLUMNS)
    return addresses_read(con, AddressMatching(person_lines(con, ADDRESS_MATCHES if stored else None)))


def addresses_read(con: duckdb.DuckDBPyConnection, matching: AddressMatching) -> pl.DataFrame:
    """What `household_addresses` stores: record_key and HOUSEHOLD_ADDRESS of the records read at
    another address than the one sent (a matched property's, or the reading most of a property's
    lines give), in record_key order. Each line is read once (`read_lines`, on counts: a reading
    does not depend on the records' order) and the lines read otherwise than sent, a few percent,
    are given to their mentions by DuckDB where the mentions are."""
    lines = matching.lines
    if "match" not in lines.columns:
        lines = lines.with_columns(pl.lit(None, pl.String).alias(c) for c in MATCH_COLUMNS[1:])
    read = read_lines(lines)
    changed = pl.any_horizontal(read[c].ne_missing(lines[c]) for c in HOUSEHOLD_ADDRESS)
    register(con, "_lines_read", lines.select(LINE_COLUMNS).with_columns(read.select(pl.col(c).alias(f"read_{c}") for c in HOUSEHOLD_ADDRESS)).filter(changed))
    try:
        return con.sql(f"""SELECT r.record_key, {", ".join(f"m.read_{c} AS {c}" for c in HOUSEHOLD_ADDRESS)}
                           FROM {PERSON_RECORDS} r JOIN _lines_read m ON {_lines_equal("r", "m")} ORDER BY r.record_key""").pl()
    finally:
        con.unregister("_lines_read")


def read_as(sent: pl.DataFrame, read: pl.DataFrame) -> pl.DataFrame:
    """`sent` with the addresses `read` (record_key and HOUSEHOLD_ADDRESS) gives in place of theirs."""
    address = sent.select("record_key", *HOUSEHOLD_ADDRESS).join(
        read.with_columns(pl.lit(True).alias("_read")), on="record_key", how="left", maintain_order="left", suffix="_read"
    )
    return _set_in_place(sent, address.select(
        pl.when(pl.col("_read")).then(pl.col(f"{c}_read")).otherwise(pl.col(c)).alias(c) for c in HOUSEHOLD_ADDRESS
    ))


#: What reading a line reads of it: the line as sent, and its property where matched.
_READ_KEYS = ("postcode", "address", "house_number", "flat", *PROPERTY_COLUMNS)


def canonical_addresses(records: pl.DataFrame, matches: pl.DataFrame) -> pl.DataFrame:
    """records (with record_key, postcode, address, house_number, flat) with each matched record's
    address replaced by its property's, so people at one property share one household key; the
    addresses the gazetteer does not hold are read as one property however they are written
    (`read_lines`, each distinct line once)."""
    address = records.select("record_key", "postcode", "address", "house_number", "flat")
    if matches.is_empty():
        address = address.with_columns(pl.lit(None, pl.String).alias(c) for c in PROPERTY_COLUMNS)
    else:
        address = address.join(matches.select("record_key", *PROPERTY_COLUMNS), on="record_key", how="left", maintain_order="left")
    lines = address.group_by(_READ_KEYS).agg(pl.len().alias("mentions"))
    read = lines.select(_READ_KEYS).with_columns(read_lines(lines).select(pl.col(c).alias(f"_read_{c}") for c in HOUSEHOLD_ADDRESS))
    given = address.join(read, on=list(_READ_KEYS), how="left", nulls_equal=True, maintain_order="left")
    return _set_in_place(records, given.select(pl.col(f"_read_{c}").alias(c) for c in HOUSEHOLD_ADDRESS))


def read_lines(lines: pl.DataFrame) -> pl.DataFrame:
    """lines: distinct address lines (postcode, address, house_number, flat, and PROPERTY_COLUMNS
    where matched) with how many mentions give each (`mentions`). Returns them, in order, each
    matched line at its property's address and the others read as one property however they are
    written (`one_reading_per_property`)."""
    matched = pl.col("property_postcode").is_not_null()
    address = lines.select(
        *(pl.when(matched).then(pl.col(f"property_{c}")).otherwise(pl.col(c)).alias(c) for c in ("postcode", "house_number", "flat")),
        matched.alias("_matched"),
    )
    return one_reading_per_property(_set_in_place(lines, address), ~pl.col("_matched"), mentions="mentions").drop("_matched")


#: Lines of a property under a postcode other than most of its lines' are a slip when at least
#: this many times fewer (a neighbouring unit picked from a list); more are a namesake street.
SLIP_RATIO = 2


def one_reading_per_property(records: pl.DataFrame, unmatched: pl.Expr | None = None, mentions: str | None = None) -> pl.DataFrame:
    """A property no gazetteer holds is written many ways: "Flat 3, 4 Lewis Gardens", "4/3 Lewis
    Gardens", "3 4 Lewis Gardens", "4C Lewis Gardens", sometimes under a neighbouring postcode;
    read alone they are several households. Lines in one postcode district naming the same
    street (town included) with the same numbers (a flat's letter read as its number, as the
    gazetteer's `sao_letter`: 4C is flat 3 of 4) are one property, and each takes the reading
    (postcode, house number, flat) most of those lines give, ties to the first in order; lines
    the gazetteer matched vote with their property's reading, so a form it could not match joins
    the property the others were matched to (a flat it lacks, written "18G", with "Flat 7, 18").
    A line sent without a postcode takes the reading of the one property in the county's lines
    with its street and numbers, where there is only one.
    `unmatched`: the records this applies to (default: every record with an address line).
    `mentions`: a column of how many mentions each row stands for (default: one each)."""
    with_line = pl.col("address").is_not_null() & pl.col("postcode").is_not_null()
    eligible = with_line if unmatched is None else with_line & unmatched
    # each way a line is written counted once, before its street and numbers are read: a
    # county's 2M lines are 260,000 ways (at 1.2M residents the counts took 0.4 rather than 0.55 s)
    lines = records.filter(with_line).group_by("postcode", "address", "house_number", "flat").agg(
        (pl.len() if mentions is None else pl.col(mentions).sum()).alias("len")
    )
    if lines.is_empty():
        return records
    written = _street_and_numbers(lines.select("postcode", "address").unique())
    written = written.with_columns(pl.col("postcode").str.split(" ").list.first().alias("district"))
    counted = lines.join(written, on=["postcode", "address"]).group_by("district", "street", "numbers", "postcode", "house_number", "flat").agg(pl.col("len").sum())

    def most_given(within: list[str]) -> pl.DataFrame:
        reading = [c for c in ("postcode", "house_number", "flat") if c not in within]
        return (
            counted.group_by(*within, *reading).agg(pl.col("len").sum())
            .sort([*within, "len", *reading], descending=[*(False for _ in within), True, *(False for _ in reading)], nulls_last=True)
            .group_by(*within, maintain_order=True)
            .agg(pl.col("postcode").first().alias("read_postcode"), pl.col("house_number").first().alias("read_house_number"),
                 pl.col("flat").first().alias("read_flat"), pl.col("len").sum().alias("read_lines"), pl.col("len").first().alias("most_lines"))
        )

    # within the postcode; then across the postcode district, where a property's lines under one
    # postcode are a few beside its many under another (a neighbouring unit picked from a list),
    # not where as many are there (a street of the same name elsewhere in the district)
    in_postcode = written.join(most_given(["postcode", "street", "numbers"]), on=["postcode", "street", "numbers"])
    in_district = written.join(most_given(["district", "street", "numbers"]).drop("read_lines"), on=["district", "street", "numbers"]).join(
        in_postcode.select("postcode", "address", pl.col("read_lines").alias("own_lines")), on=["postcode", "address"]
    ).filter((pl.col("read_postcode") != pl.col("postcode")) & (pl.col("own_lines") * SLIP_RATIO <= pl.col("most_lines")))
    reading = ["postcode", "address", "read_postcode", "read_house_number", "read_flat"]
    readings = pl.concat([in_district.select(reading), in_postcode.join(in_district, on=["postcode", "address"], how="anti").select(reading)])
    # a line sent without a postcode: the reading of the one property in the county's lines with its street and numbers
    without = _street_and_numbers(records.filter(pl.col("address").is_not_null() & pl.col("postcode").is_null()).select("address").unique())
    only_one = most_given(["street", "numbers"]).join(
        counted.group_by("street", "numbers").agg(pl.col("postcode").n_unique().alias("postcodes")).filter(pl.col("postcodes") == 1), on=["street", "numbers"]
    )
    unposted = without.join(only_one, on=["street", "numbers"]).select("address", *reading[2:])
    # the readings are joined to the address columns alone, one row each (a line has one reading),
    # and set back in place: joining every record's columns copied a county's millions of records
    unposted_use = pl.col("postcode").is_null() & pl.col("read_house_number_unposted").is_not_null() & pl.col("_unmatched")
    address = (
        records.select("postcode", "address", "house_number", "flat", eligible.alias("_eligible"), (pl.lit(True) if unmatched is None else unmatched).alias("_unmatched"))
        .join(readings, on=["postcode", "address"], how="left", maintain_order="left")
        .join(unposted, on="address", how="left", maintain_order="left", suffix="_unposted")
        .select(_read_as(pl.col("_eligible") & pl.col("read_house_number").is_not_null(), unposted_use))
    )
    return _set_in_place(records, address)


def _read_as(posted: pl.Expr, unposted_use: pl.Expr) -> list[pl.Expr]:
    """postcode, house number and flat: the line's reading where it has one (`posted`), else the
    reading of a line sent without a postcode (`unposted_use`), else as written."""
    return [
        pl.when(posted).then(pl.col(f"read_{c}")).when(unposted_use).then(pl.col(f"read_{c}_unposted")).otherwise(pl.col(c)).alias(c)
        for c in ("postcode", "house_number", "flat")
    ]


def _set_in_place(records: pl.DataFrame, columns: pl.DataFrame) -> pl.DataFrame:
    """records with `columns` (one row per record, in its order) replacing its own of those names."""
    if columns.height != records.height:
        raise ValueError(f"{columns.height} rows of addresses for {records.height} records: a reading joined twice")
    return records.with_columns(columns.get_columns())


def _street_and_numbers(lines: pl.DataFrame) -> pl.DataFrame:
    """lines (with `address`) with the line's numbers, a flat's letter read as its number (4C: 3
    and 4), sorted, and its street: the words that are not numbers or a flat's marker. Lines
    without a number are dropped: they name no property."""
    # the numbers as written ("14B 3"), a flat's letter split off and read as its number ("14 2 3"),
    # sorted as text: on the line as one string, not number by number in lists (0.21 against 0.33 s
    # for a county's 280,000 lines)
    written = pl.col("address").str.extract_all(r"\b[0-9]+[A-Z]?\b").list.join(" ")
    numbers = written.str.replace_all(r"([0-9])([A-Z])", "$1 $2").str.replace_many(list(_LETTER_NUMBERS), list(_LETTER_NUMBERS.values()))
    return lines.with_columns(
        numbers.str.split(" ").list.sort().list.join(" ").alias("numbers"),
        pl.col("address").str.replace_all(r"\b([0-9]+[A-Z]?|FLAT|APARTMENT|UNIT|APT)\b", "").str.replace_all(r"\s+", " ").str.strip_chars().alias("street"),
    ).filter(pl.col("numbers") != "")
