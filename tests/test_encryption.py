"""The warehouse encrypted at rest when a key is configured (DuckDB's database encryption)."""

from __future__ import annotations

import duckdb
import pytest

from linkage.families import FamilyRecords
from warehouse import KEY_ENV, HeldWarehouse, WarehouseError, open_warehouse

KEY = "correct horse battery staple"


def _httpfs_available() -> bool:
    con = duckdb.connect()
    try:
        con.execute("LOAD httpfs")
        return True
    except duckdb.Error:
        return False
    finally:
        con.close()


@pytest.fixture
def encrypted(tmp_path):
    """An encrypted warehouse holding a name. Written here with DuckDB's fallback cipher,
    which earlyhelp itself refuses for writing: this machine may lack httpfs."""
    path = tmp_path / "warehouse.duckdb"
    con = duckdb.connect()
    if not _httpfs_available():
        con.execute("SET force_mbedtls_unsafe = 'true'")
    con.execute(f"ATTACH '{path}' AS w (ENCRYPTION_KEY '{KEY}')")
    con.execute("CREATE TABLE w.people AS SELECT 'Oyelaran' AS surname, DATE '2014-03-09' AS dob FROM range(2000)")
    con.close()
    return path


def test_encrypted_warehouse_is_unreadable_without_the_key(encrypted, monkeypatch):
    assert b"Oyelaran" not in encrypted.read_bytes()
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(encrypted), read_only=True).execute("SELECT * FROM people").fetchall()
    monkeypatch.setenv(KEY_ENV, KEY)
    with open_warehouse(encrypted, read_only=True) as con:
        assert con.execute("SELECT count(*), any_value(surname) FROM people").fetchall() == [(2000, "Oyelaran")]


def test_a_wrong_key_is_a_clear_error_that_never_repeats_the_key(encrypted):
    with pytest.raises(WarehouseError) as caught:
        with open_warehouse(encrypted, read_only=True, key="wrong key"):
            pass
    assert "wrong key" not in str(caught.value) and "warehouse.duckdb" in str(caught.value)


def test_writing_encrypted_needs_openssl_and_never_falls_back(tmp_path):
    if _httpfs_available():
        with open_warehouse(tmp_path / "w.duckdb", key=KEY) as con:
            con.execute("CREATE TABLE t AS SELECT 'Oyelaran' AS surname")
        assert b"Oyelaran" not in (tmp_path / "w.duckdb").read_bytes()
    else:
        with pytest.raises(WarehouseError, match="httpfs"):
            with open_warehouse(tmp_path / "w.duckdb", key=KEY):
                pass
        assert not (tmp_path / "w.duckdb").exists()


def test_a_run_holds_an_encrypted_warehouse_as_it_opens_one(tmp_path, monkeypatch):
    """A run's held warehouse (`HeldWarehouse`) with a key is the encrypted file, each step's
    connection inside it; without OpenSSL it is refused as `open_warehouse` refuses it."""
    monkeypatch.setenv(KEY_ENV, KEY)
    path = tmp_path / "w.duckdb"
    if not _httpfs_available():
        with pytest.raises(WarehouseError, match="httpfs"):
            HeldWarehouse(path)
        assert not path.exists()
        return
    held = HeldWarehouse(path)
    with held.connection() as con:
        con.execute("CREATE TABLE people AS SELECT 'Oyelaran' AS surname")
    with held.connection() as con:
        assert con.execute("SELECT surname FROM people").fetchall() == [("Oyelaran",)]
    held.close()
    assert b"Oyelaran" not in path.read_bytes()
    with open_warehouse(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM people").fetchall() == [(1,)]

def test_family_formation_holds_its_records_beside_an_encrypted_warehouse(encrypted, monkeypatch):
    """Family formation copies the linked records into an in-memory database attached beside the
    warehouse's (`FamilyRecords.held_in`), and reads them through a cursor of that connection:
    on an encrypted warehouse, opened read-only as the scorecard opens it, too."""
    monkeypatch.setenv(KEY_ENV, KEY)
    blank = {"address_date": "DATE", "forename": "VARCHAR", "event_date": "DATE", "age_stated": "INTEGER", "sex": "VARCHAR",
             "source": "VARCHAR", "event_ref": "VARCHAR", "role": "VARCHAR", "postcode": "VARCHAR",
             "house_number": "VARCHAR", "flat": "VARCHAR", "contact_forename": "VARCHAR", "contact_surname": "VARCHAR"}
    nulls = ", ".join(f"CAST(NULL AS {kind}) AS {name}" for name, kind in blank.items())
    query = f"SELECT rowid AS _order, rowid + 1 AS record_order, surname, dob, 'P' || rowid AS person_id, {nulls} FROM people"
    with open_warehouse(encrypted, read_only=True) as con:
        with FamilyRecords.held_in(con, query) as held:
            beside = held.connect()
            try:
                assert beside.sql(f"SELECT count(*), count(DISTINCT person_id), any_value(surname) FROM {held.table}").fetchall() == [(2000, 2000, "Oyelaran")]
            finally:
                beside.close()
        # let go with the block, the warehouse still open
        assert con.sql("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'held_records'").fetchall() == [(0,)]
