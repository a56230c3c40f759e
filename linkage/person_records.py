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
- contacts (school records): `contact_forename`, `contact_surname`, `contact_relationship`.
"""

from __future__ import annotations

import duckdb
import polars as pl

from data_contracts import Contract
from linkage.standardise import (
    address_key,
    flat_number,
    house_number,
    name_key,
    postcode_parts,
)
from warehouse import table_exists

PERSON_RECORDS = "person_records"

_OPTIONAL_TEXT = (
    "preferred_forename", "nhs_number", "upn", "nino", "contact_forename", "contact_surname", "contact_relationship",
)


def _address_sql(contract: Contract) -> str:
    if contract.has_column("address"):
        return "address"
    parts = [p for p in ("address_line_1", "address_line_2", "town") if contract.has_column(p)]
    if not parts:
        return "NULL"
    return "concat_ws(', ', " + ", ".join(parts) + ")"


def _sex_sql(contract: Contract) -> str:
    if not contract.has_column("sex"):
        return "NULL"
    mapping = contract.column("sex").standard_values
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE sex {cases} ELSE NULL END"


def source_mentions_sql(contract: Contract) -> str:
    """SELECT the mentions of one source from its raw table, in person_records' shape (unstandardised)."""
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
        FROM "{contract.raw_table}"
    """


def _per_distinct_value(frame: pl.DataFrame, column: str, derived: dict[str, pl.Expr]) -> pl.DataFrame:
    """`derived` (expressions of `column`) computed once per distinct value and joined back: a
    county's millions of mentions hold tens of thousands of names and postcodes, and the regular
    expressions and Unicode normalisation are the cost."""
    values = frame.select(pl.col(column).unique()).with_columns(**derived)
    return frame.join(values, on=column, how="left", nulls_equal=True)


def standardise_mentions(mentions: pl.DataFrame) -> pl.DataFrame:
    frame = mentions.with_columns(
        (pl.col("source") + "|" + pl.col("file") + "|" + pl.col("row").cast(pl.String)).alias("record_key"),
    )
    for column in ("forename", "preferred_forename", "surname", "contact_forename", "contact_surname"):
        frame = _per_distinct_value(frame, column, {f"_{column}": name_key(pl.col(column))}).drop(column).rename({f"_{column}": column})
    postcode = dict(zip(("postcode", "postcode_sector", "postcode_district"), postcode_parts(pl.col("postcode"))))
    frame = _per_distinct_value(frame, "postcode", {f"_{k}": v for k, v in postcode.items()}).drop("postcode").rename({f"_{k}": k for k in postcode})
    address = address_key(pl.col("address"))
    frame = _per_distinct_value(
        frame, "address", {"_address": address, "house_number": house_number(address), "flat": flat_number(address)}
    ).drop("address").rename({"_address": "address"})
    return frame.select(
        "record_key", "source", "file", "row", "forename", "preferred_forename", "surname", "dob", "age_stated", "sex",
        "postcode", "postcode_sector", "postcode_district", "address", "house_number", "flat",
        "nhs_number", "upn", "nino", "event_date", "address_date", "event_ref", "role",
        "contact_forename", "contact_surname", "contact_relationship",
    )


#: The columns households are formed from (`linkage.families`), with each record's person.
HOUSEHOLD_COLUMNS = (
    "record_key", "source", "event_date", "address_date", "forename", "surname", "dob", "age_stated", "sex",
    "postcode", "address", "house_number", "flat", "role", "event_ref", "contact_forename", "contact_surname",
)


def linked_person_records(con: duckdb.DuckDBPyConnection) -> pl.DataFrame:
    """person_records with each record's person_id, only the columns households need: the join
    and the narrow read are DuckDB's, so a county's millions of mentions never travel whole."""
    columns = ", ".join(f"r.{c}" for c in HOUSEHOLD_COLUMNS)
    # in person_records' own order: a join's output order is the threads', and ties must not be
    return con.sql(
        f"SELECT {columns}, l.person_id FROM {PERSON_RECORDS} r JOIN person_links l USING (record_key) ORDER BY r.source, r.file, r.row"
    ).pl()


def build_person_records(con: duckdb.DuckDBPyConnection, contracts: list[Contract]) -> pl.DataFrame:
    """Every mention of a person in every loaded source that holds people."""
    frames = []
    for contract in contracts:
        if not contract.holds_people:
            continue
        if table_exists(con, contract.raw_table):
            frames.append(con.sql(source_mentions_sql(contract)).pl())
    if not frames:
        raise ValueError("no source holding people has been loaded")
    mentions = pl.concat(frames, how="vertical_relaxed")
    return standardise_mentions(mentions).sort("source", "file", "row")
