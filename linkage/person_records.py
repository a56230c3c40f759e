"""person_records: one row per person mention across all sources, standardised for linkage.

Which columns of a source are the person's, what the event date is and what
role the person played all come from the source's contract (canonical column
names are shared across contracts; `eventDate`, `eventRef` and `personRole`
are SQL expressions in each contract). So a new source with a contract joins
linkage without code here.

The columns:
- provenance: `source`, `file`, `row` (as in the spec), `record_key` ("source|file|row");
- name: `forename`, `preferred_forename`, `surname` (standardised), `forename_raw_upper`;
- `dob` (date; null where unknown), `age_stated` (ASB gives an age instead), `sex` (M, F, U or null);
- address: `postcode`, `postcode_sector`, `postcode_district`, `address` (normalised line),
  `house_number`, `flat`;
- identifiers: `nhs_number`, `upn`, `nino`, where the source holds them;
- event: `event_date`, `address_date` (when the address was recorded: a school census day,
  else the event date), `event_ref` (an incident, notification, claim, case or school term),
  `role` (SUSPECT, VICTIM, CLAIMANT, PUPIL, ...);
- contacts (school records): `contact_forename`, `contact_surname`, `contact_relationship`;
- `record_position`: the record's place in the table's order (source, file, row), as one integer.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import polars as pl

from data_contracts import Contract
from linkage.standardise import address_key, flat_number, house_number, name_key, postcode_parts
from warehouse import MENTION_KEY_JOIN, register, scratch, sql_literal, table_columns, table_exists, transaction, write_atomically

PERSON_RECORDS = "person_records"

_OPTIONAL_TEXT = (
    "preferred_forename", "nhs_number", "upn", "nino", "contact_forename", "contact_surname", "contact_relationship",
)


def _address_sql(contract: Contract) -> str:
    if contract.has_column("address"):
        return "address"
    parts = [p for p in ("address_line_1", "address_line_2", "town") if contract.has_column(p)]
    if not parts:
        return "CAST(NULL AS VARCHAR)"
    return "concat_ws(', ', " + ", ".join(parts) + ")"


def _sex_sql(contract: Contract) -> str:
    if not contract.has_column("sex"):
        return "CAST(NULL AS VARCHAR)"
    mapping = contract.column("sex").standard_values
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE sex {cases} ELSE NULL END"


def record_key_sql(alias: str) -> str:
    """SQL: the record_key of the mention aliased `alias` (its source, file and row): the one
    rule, so that a reader holding those three need not carry the key's text."""
    return f"{alias}.source || '|' || {alias}.file || '|' || CAST({alias}.row AS VARCHAR)"


def source_mentions_sql(contract: Contract, where: str = "") -> str:
    """SELECT the mentions of one source from its raw table, in person_records' shape (unstandardised);
    `where`: a condition on the raw table's rows."""
    c = contract.custom
    optional = ", ".join(
        f"{name} AS {name}" if contract.has_column(name) else f"CAST(NULL AS VARCHAR) AS {name}" for name in _OPTIONAL_TEXT
    )
    age = "age" if contract.has_column("age") else "CAST(NULL AS BIGINT)"
    return f"""
        SELECT '{contract.source}' AS source, _file AS file, _row AS row,
               forename, surname, dob, {age} AS age_stated, {_sex_sql(contract)} AS sex,
               postcode, {_address_sql(contract)} AS address,
               CAST({c['eventDate']} AS DATE) AS event_date,
               CAST({c.get('addressDate', c['eventDate'])} AS DATE) AS address_date,
               CAST({c['eventRef']} AS VARCHAR) AS event_ref,
               CAST({c['personRole']} AS VARCHAR) AS role,
               {optional}
        FROM "{contract.raw_table}" {f"WHERE {where}" if where else ""}
    """


def _address_parts(values: pl.LazyFrame) -> pl.LazyFrame:
    # the key made once and its numbers read from it: Polars does not share the key's list
    # expressions between three columns (school attendance's 165,000 addresses 0.71 -> 0.25 s)
    key = values.with_columns(address_key(pl.col("value")).alias("address"))
    return key.with_columns(house_number(pl.col("address")).alias("house_number"), flat_number(pl.col("address")).alias("flat"))


#: The mention columns standardised, each with what is made of its distinct values (a frame of
#: them, `value`; the raw value is not kept): computed once per distinct value in Polars (a
#: county's millions of mentions hold tens of thousands of names and postcodes, and the regular
#: expressions and Unicode normalisation are the cost), joined back to the mentions by DuckDB.
#: Lazy, so a postcode's normal form is worked out once for its three parts (Polars' common
#: subexpressions: A&E's 107,000 postcodes 0.19 -> 0.05 s).
STANDARDISED = {
    **{name: (lambda values, name=name: values.with_columns(name_key(pl.col("value")).alias(name))) for name in ("forename", "preferred_forename", "surname", "contact_forename", "contact_surname")},
    "postcode": lambda values: values.with_columns(postcode_parts(pl.col("value"))),
    "address": _address_parts,
}

#: person_records' columns, in order.
PERSON_RECORD_COLUMNS = (
    "record_key", "source", "file", "row", "forename", "preferred_forename", "surname", "dob", "age_stated", "sex",
    "postcode", "postcode_sector", "postcode_district", "address", "house_number", "flat",
    "nhs_number", "upn", "nino", "event_date", "address_date", "event_ref", "role",
    "contact_forename", "contact_surname", "contact_relationship",
)


@contextmanager
def standardised(con: duckdb.DuckDBPyConnection, mentions: str, order: str = "m.file, m.row") -> Iterator[str]:
    """A query of the mentions `mentions` (a SELECT in source_mentions_sql's shape) standardised, in
    person_records' columns and in file and row order (or `order`, where the mentions are `m`; "":
    any), for as long as the context lasts. Only each column's distinct values come into Polars:
    the mentions stay in DuckDB, which joins them to their standard forms within its memory cap (at
    1.2M residents school attendance's 2.16M mentions, read into Polars, standardised and sorted
    there, took 2.3 GB more)."""
    views = []
    joins = []
    made = {}
    try:
        for column, derive in STANDARDISED.items():
            values = con.sql(f"SELECT DISTINCT {column} AS value FROM ({mentions})").pl()
            view = f"_standard_{column}"
            forms = derive(values.lazy()).collect()
            register(con, view, forms)
            views.append(view)
            # IS NOT DISTINCT FROM: a missing value has its standard form too (missing)
            joins.append(f"LEFT JOIN {view} ON m.{column} IS NOT DISTINCT FROM {view}.value")
            made.update({derived: f"{view}.{derived}" for derived in forms.columns if derived != "value"})
        chosen = ", ".join(f"{made.get(c, f'm.{c}')} AS {c}" for c in PERSON_RECORD_COLUMNS if c != "record_key")
        yield f"""SELECT {record_key_sql("m")} AS record_key, {chosen}
                  FROM ({mentions}) m {' '.join(joins)} {f"ORDER BY {order}" if order else ""}"""
    finally:
        for view in views:
            con.unregister(view)


def standardise_mentions(mentions: pl.DataFrame) -> pl.DataFrame:
    """`mentions` (source_mentions_sql's columns, one source's or several's) standardised, as
    person_records holds them, in their order (for benchmarks and tests whose mentions are frames)."""
    con = scratch()
    try:
        register(con, "_mentions", mentions.with_columns(pl.int_range(pl.len()).alias("_order")))
        with standardised(con, "SELECT * FROM _mentions", order="m._order") as query:
            return con.sql(query).pl()
    finally:
        con.close()


#: The columns households are formed from (`linkage.families`), with each record's person.
HOUSEHOLD_COLUMNS = (
    "record_key", "source", "event_date", "address_date", "forename", "surname", "dob", "age_stated", "sex",
    "postcode", "address", "house_number", "flat", "role", "event_ref", "contact_forename", "contact_surname",
)


def linked_person_records(con: duckdb.DuckDBPyConnection, columns: tuple[str, ...] = HOUSEHOLD_COLUMNS) -> pl.DataFrame:
    """person_records with each record's person_id, only the columns households need (or
    `columns`), in person_records' order: the join and the narrow read are DuckDB's, so a
    county's millions of mentions never travel whole."""
    chosen = ", ".join(f"pr.{c}" for c in columns)
    return con.sql(f"SELECT {chosen}, pl.person_id FROM {PERSON_RECORDS} pr JOIN person_links pl ON {mention_join(con)} ORDER BY pr.{RECORD_POSITION}").pl()


#: person_records' own order (source, file, row), for a join of it to come out in: a join's
#: output order is the threads', and ties must not be. One integer the table holds
#: (`_file_places`): ordering by the three key columns took 4.3 s against 2.8 s at 1.2M
#: residents (medians of six), and now and then 11-17 s; and a month's records are changed in
#: place, the new files' added after the rest, so a row's place in the table is not its place in
#: that order.
RECORD_POSITION = "record_position"
#: The bits of record_position below a record's file (its row) and below its source (its file's
#: place among the source's files).
_ROW_BITS, _FILE_BITS = 32, 20


def write_linked_records(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """The `linked_records.parquet` export: source, file, row, person_id, family_id,
    match_probability, every mention's person and family in person_records' order. Written by
    DuckDB from the warehouse rather than read into Polars and written from there: at 1.2M
    residents (3.7M rows) family_members alone 37.9 -> 33.6 s (medians of two), the file 38 ->
    34 MB; its peak (4.3 GB, at this export: the join's sort) is the same either way."""
    query = f"""SELECT pr.source, pr.file, pr.row, pl.person_id, m.family_ref AS family_id, pl.match_probability
                FROM {PERSON_RECORDS} pr JOIN person_links pl ON {mention_join(con)} JOIN family_members m USING (person_id)
                ORDER BY pr.{RECORD_POSITION}"""
    # in the order asked for: DuckDB keeps a query's order in what it copies out (preserve_insertion_order)
    write_atomically(path, lambda tmp: con.execute(f"COPY ({query}) TO {sql_literal(tmp)} (FORMAT parquet, COMPRESSION zstd)"))


#: For each landing file whose rows person_records holds: the file's SHA-256, what its mentions
#: were made with (`_made_with`), the reading its rows come from (`READING`), so the next run
#: takes them as they are, which of its rows were loaded then (`rows_loaded`, `rows_digest`), and
#: the record_position of its row 0 (`first_position`).
PERSON_RECORDS_MADE = "person_records_made"
#: What says which reading of a file its loaded rows come from (landed_files' columns): the day it
#: was checked and the contract it was checked under. A file read again another day can load rows
#: it did not (a date the earlier day judged to be in the future is not one now) and set aside
#: fewer fields; one read again the same day under the same contract gives each row as it was.
READING = ("validated_on", "contract_sha256")
#: Each file's first_position as person_records held it when person_links was made
#: (`store_links_made`): where they are those person_records holds now, a link's record_position
#: is its mention's (`mention_join`).
PERSON_LINKS_MADE = "person_links_made"
_PLACES = "source, file, first_position"


def store_links_made(con: duckdb.DuckDBPyConnection) -> None:
    """Record the file places person_links' record_positions were taken under (in the transaction
    that writes person_links, from the person_records it was made from); none where person_records
    was made by a version that recorded no places (its links are then joined by key)."""
    if "first_position" in table_columns(con, PERSON_RECORDS_MADE):
        con.execute(f"CREATE OR REPLACE TABLE {PERSON_LINKS_MADE} AS SELECT {_PLACES} FROM {PERSON_RECORDS_MADE}")
    else:
        con.execute(f"DROP TABLE IF EXISTS {PERSON_LINKS_MADE}")


def mention_join(con: duckdb.DuckDBPyConnection) -> str:
    """The condition joining a mention (`pr`, person_records) to its link (`pl`, person_links): on
    record_position, an integer, where person_links was made under the file places person_records
    holds now; else on record_key, text. At 1.2M residents the 3.7M mentions joined on their key
    took 1.1-1.2 s against 0.7-0.8 s on their position, and a run joins them five times (family
    formation's records, the linked-records export, the indicators' mentions, the lists'
    addresses and records). A file gone or added before another moves the places of the files
    after it, so positions of links made before that are not their mentions' now (a step run
    alone after person_records, say): then the key, which never moves."""
    recorded = "first_position" in table_columns(con, PERSON_LINKS_MADE) and "first_position" in table_columns(con, PERSON_RECORDS_MADE)
    if not recorded or RECORD_POSITION not in table_columns(con, "person_links"):
        return MENTION_KEY_JOIN
    differ = con.execute(
        f"""SELECT count(*) FROM ((SELECT {_PLACES} FROM {PERSON_LINKS_MADE} EXCEPT ALL SELECT {_PLACES} FROM {PERSON_RECORDS_MADE})
                                  UNION ALL (SELECT {_PLACES} FROM {PERSON_RECORDS_MADE} EXCEPT ALL SELECT {_PLACES} FROM {PERSON_LINKS_MADE}))"""
    ).fetchall()[0][0]
    return f"pl.{RECORD_POSITION} = pr.{RECORD_POSITION}" if differ == 0 else MENTION_KEY_JOIN


def _made_with(contract: Contract) -> str | None:
    """What a source's mentions rest on besides their own rows: its contract, the code that reads and
    standardises them (this module and what it calls) and DuckDB's and Polars' versions. None where a
    contract's expression reads beyond its row (a window), so a mention is not its row's alone."""
    expressions = [str(v) for k, v in contract.custom.items() if k in ("eventDate", "addressDate", "eventRef", "personRole")]
    if any(re.search(r"\bOVER\s*\(", e, re.IGNORECASE) for e in expressions):
        return None
    from ingestion import identifiers
    from linkage import standardise
    import rules

    code = b"".join(Path(m.__file__).read_bytes() for m in (sys.modules[__name__], standardise, identifiers, rules))
    text = code + source_mentions_sql(contract).encode() + f"duckdb {duckdb.__version__} polars {pl.__version__}".encode()
    return hashlib.sha256(text).hexdigest()


#: person_records_made's columns, as `mentions_made` gives them.
MADE_SCHEMA = {
    "source": pl.String, "file": pl.String, "sha256": pl.String, "made_with": pl.String, "validated_on": pl.Date, "contract_sha256": pl.String,
    "rows_loaded": pl.Int64, "rows_digest": pl.UInt64,
}


def mentions_made(con: duckdb.DuckDBPyConnection, contracts: list[Contract]) -> pl.DataFrame:
    """MADE_SCHEMA: the files whose rows the person_records built now hold, the reading their rows
    come from (READING, from landed_files), and which of each file's rows are loaded: how many,
    and the rows' numbers hashed and combined (so a file that lost one row and gained another
    shows too)."""
    frames = [pl.DataFrame(schema=MADE_SCHEMA)]
    for contract in contracts:
        if contract.holds_people and table_exists(con, contract.raw_table):
            files = con.sql(
                f"""SELECT r.file, r.sha256, {", ".join(f"f.{c}" for c in READING)}, r.rows_loaded, r.rows_digest
                    FROM (SELECT _file AS file, _sha256 AS sha256, count(*) AS rows_loaded, bit_xor(hash(_row)) AS rows_digest
                          FROM "{contract.raw_table}" GROUP BY ALL) r
                    LEFT JOIN landed_files f ON f.source = $source AND f.file = r.file ORDER BY r.file, r.sha256""",
                params={"source": contract.source},
            ).pl()
            frames.append(files.with_columns(pl.lit(contract.source).alias("source"), pl.lit(_made_with(contract), pl.String).alias("made_with")).select(
                pl.col(name).cast(kind) for name, kind in MADE_SCHEMA.items()
            ))
    return pl.concat(frames)


def write_person_records(con: duckdb.DuckDBPyConnection, contracts: list[Contract], reuse: bool = True) -> dict[str, int]:
    """Replace person_records and person_records_made in the warehouse, in one transaction; returns
    the mentions by source. Made one source at a time, so no more than one source's mentions are
    ever held in Python. With `reuse` and the last run's tables, the mentions of a file loaded
    then, unchanged and read the same way, stay in the table as they are (those of its rows still
    loaded), and only the other files' rows are read, standardised and added: the same records
    either way, and a month's run neither reads the county's millions of mentions out nor writes
    them again (at 1.2M residents a month's table was 11 s of rewriting)."""
    held = sorted((c for c in contracts if c.holds_people and table_exists(con, c.raw_table)), key=lambda c: c.source)
    if not held:
        raise ValueError("no source holding people has been loaded")
    made_now = mentions_made(con, held)
    reused = pl.DataFrame(schema={"source": pl.String, "file": pl.String, "rows_changed": pl.Boolean})
    if reuse and RECORD_POSITION in table_columns(con, PERSON_RECORDS) and table_exists(con, PERSON_RECORDS_MADE):
        # files whose mentions would be made as they were (`made_with` is null where they cannot
        # be reused), from the same reading of the file: each row still loaded is as it was then
        made = con.sql(f"SELECT * FROM {PERSON_RECORDS_MADE}").pl()
        # made by a version that did not record them: nothing is reused
        made = made.with_columns(pl.lit(None, kind).alias(name) for name, kind in MADE_SCHEMA.items() if name not in made.columns)
        reused = made_now.join(made, on=["source", "file", "sha256", "made_with", *READING], how="inner", suffix="_then").select(
            "source", "file",
            ((pl.col("rows_loaded") != pl.col("rows_loaded_then")) | (pl.col("rows_digest") != pl.col("rows_digest_then"))).fill_null(True).alias("rows_changed"),
        )
    places = _file_places(made_now)
    register(con, "_record_files", places)
    try:
        with transaction(con):
            if reused.is_empty():
                _make_person_records(con, held)
            else:
                _change_person_records(con, held, reused)
            register(con, "_made", made_now.join(places, on=["source", "file"], how="left", maintain_order="left"))
            con.execute(f"CREATE OR REPLACE TABLE {PERSON_RECORDS_MADE} AS SELECT * FROM _made")
            con.unregister("_made")
    finally:
        con.unregister("_record_files")
    return dict(con.sql(f"SELECT source, count(*) FROM {PERSON_RECORDS} GROUP BY source ORDER BY source").fetchall())


def _file_places(files: pl.DataFrame) -> pl.DataFrame:
    """source, file, first_position: the record_position of each file's row 0, from the source's
    place among the sources and the file's among the source's files (`files`: every file loaded)."""
    places = files.select("source", "file").unique().sort("source", "file").with_columns(
        (pl.col("source").rank("dense") - 1).cast(pl.Int64).alias("source_place"),
        pl.col("file").cum_count().over("source").cast(pl.Int64).sub(1).alias("file_place"),
    )
    if places.height and places["file_place"].max() >= 1 << _FILE_BITS:
        raise ValueError(f"person_records: a source of more than {1 << _FILE_BITS:,} files is past what record_position numbers")
    return places.select("source", "file", (pl.col("source_place") * (1 << (_ROW_BITS + _FILE_BITS)) + pl.col("file_place") * (1 << _ROW_BITS)).alias("first_position"))


#: A mention (`m`) with its record_position, from `_record_files` (`_file_places`).
_POSITIONED = f"""SELECT m.*, f.first_position + m.row AS {RECORD_POSITION}
                  FROM ({{mentions}}) m JOIN _record_files f ON f.source = m.source AND f.file = m.file"""


def _make_person_records(con: duckdb.DuckDBPyConnection, held: list[Contract]) -> None:
    """person_records made from every loaded row, a source at a time. Not put in record_position
    order: nothing reads the table's own order (a month's changes in place leave it in none), and
    sorting a 1.2M county's 3.7M mentions as they were written took 0.7 s of the step's 6."""
    for i, contract in enumerate(held):
        with standardised(con, source_mentions_sql(contract), order="") as fresh:
            rows = _POSITIONED.format(mentions=fresh)
            con.execute(f"CREATE OR REPLACE TABLE _person_records_next AS {rows}" if i == 0 else f"INSERT INTO _person_records_next BY NAME {rows}")
    _check_rows(con, "_person_records_next")
    con.execute(f"DROP TABLE IF EXISTS {PERSON_RECORDS}")
    con.execute(f"ALTER TABLE _person_records_next RENAME TO {PERSON_RECORDS}")


def _change_person_records(con: duckdb.DuckDBPyConnection, held: list[Contract], reused: pl.DataFrame) -> None:
    """person_records changed in place: the mentions of rows no longer loaded, or of files not
    reused, removed; the other files' rows made and added (after the rest: record_position gives
    the order), with any row a reused file loads now and did not then, and the kept ones
    renumbered where their file's place moved (an older file gone). reused: source, file,
    rows_changed (whether the file's rows loaded are not those loaded when its mentions were
    made: fewer, replaced by a later file or past retention; more, a file that had replaced
    them gone)."""
    sources = ", ".join(sql_literal(c.source) for c in held)
    con.execute(f"DELETE FROM {PERSON_RECORDS} WHERE source NOT IN ({sources})")
    for contract in held:
        # the files as literals: DuckDB cannot stream the millions of kept rows past a subquery
        # on a registered frame (it ran out of its memory limit at 1.2M residents). Only a file
        # whose rows changed is looked up row by row in the raw table: at 1.2M residents a
        # month's one file of a source, not its forty (the month's person_records 3.5 -> 2.4 s,
        # medians of three months, alternating)
        source = sql_literal(contract.source)
        of_source = reused.filter(pl.col("source") == contract.source)
        whole, changed, files = (", ".join(sql_literal(f) for f in frame["file"]) for frame in (
            of_source.filter(~pl.col("rows_changed")), of_source.filter(pl.col("rows_changed")), of_source,
        ))
        kept = []
        if whole:
            kept.append(f"p.file IN ({whole})")
        if changed:
            kept.append(f"""(p.file IN ({changed}) AND EXISTS (SELECT 1 FROM "{contract.raw_table}" r WHERE r._file = p.file AND r._row = p.row))""")
        con.execute(f"DELETE FROM {PERSON_RECORDS} p WHERE p.source = {source} AND NOT ({' OR '.join(kept) or 'false'})")
        made = [f"_file NOT IN ({files})"] if files else []
        if changed:
            # the rows of a changed file that have no mentions: found once, as the mentions are
            # made from the raw rows several times over (`standardised`)
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _rows_gained AS SELECT r._file, r._row FROM "{contract.raw_table}" r
                            WHERE r._file IN ({changed}) AND NOT EXISTS (
                                SELECT 1 FROM {PERSON_RECORDS} p WHERE p.source = {source} AND p.file IN ({changed}) AND p.file = r._file AND p.row = r._row)""")
            if con.execute("SELECT count(*) FROM _rows_gained").fetchall()[0][0]:
                made.append(f'EXISTS (SELECT 1 FROM _rows_gained g WHERE g._file = "{contract.raw_table}"._file AND g._row = "{contract.raw_table}"._row)')
        with standardised(con, source_mentions_sql(contract, " OR ".join(made)), order="") as fresh:
            con.execute(f"INSERT INTO {PERSON_RECORDS} BY NAME {_POSITIONED.format(mentions=fresh)}")
        con.execute("DROP TABLE IF EXISTS _rows_gained")
    con.execute(f"""UPDATE {PERSON_RECORDS} p SET {RECORD_POSITION} = f.first_position + p.row FROM _record_files f
                    WHERE f.source = p.source AND f.file = p.file AND p.{RECORD_POSITION} IS DISTINCT FROM f.first_position + p.row""")
    _check_rows(con, PERSON_RECORDS)


def _check_rows(con: duckdb.DuckDBPyConnection, table: str) -> None:
    (rows,) = con.execute(f"SELECT max(row) FROM {table}").fetchall()[0]
    if (rows or 0) >= 1 << _ROW_BITS:
        raise ValueError(f"person_records: a file of more than {1 << _ROW_BITS:,} rows is past what record_position numbers")
