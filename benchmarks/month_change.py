"""What a month changes between two runs' warehouses, by hand (not a test): mentions, persons,
households and profiles (distinct descriptions, as linkage groups mentions), each as before,
after, and how many changed. It says how much of the county a month's run must look at again,
depending on what a step's work follows: a step redoing every changed person or household
redoes a quarter to a third of a 1.2M county each month (school attendance mentions every
pupil every month); one following new profiles, a few percent. The last row is the region
households would be formed again in, were only the persons with a new mention and those
recorded at their postcodes taken again: most of the county, so family formation cannot be made
incremental that way.

    # last month cold, then this month on a copy of it
    .venv/bin/python -m pipelines.cli run --landing benchmarks/cache/county_1200000_7_2026-10_monthly_last_month --month 2026-09 --out /tmp/before
    cp -r /tmp/before /tmp/after
    .venv/bin/python -m pipelines.cli run --landing benchmarks/cache/county_1200000_7_2026-10_monthly --month 2026-10 --out /tmp/after
    .venv/bin/python benchmarks/month_change.py /tmp/before /tmp/after

Persons and households are matched by their stable ids (person_id, family_ref), which carry
over from run to run. Figures only: no row of either warehouse is printed. Benchmark counties'
warehouses are not encrypted; an encrypted one is not read here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from linkage.model import mention_keys_sql  # noqa: E402
from warehouse import sql_literal  # noqa: E402

WAREHOUSE = "warehouse.duckdb"


def _count(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return con.execute(sql).fetchone()[0]


def month_change(before: Path, after: Path) -> list[tuple[str, int, int, str]]:
    """(what, before, after, what changed) for mentions, persons, households, families and profiles."""
    con = duckdb.connect()
    try:
        for name, folder in (("b", before), ("a", after)):
            con.execute(f"ATTACH {sql_literal(str(folder / WAREHOUSE))} AS {name} (READ_ONLY)")
            con.execute(f"CREATE TEMP VIEW records_{name} AS SELECT * FROM {name}.person_records")
            # each person's mentions and each household's persons, as sorted lists, to compare whole
            con.execute(f"CREATE TEMP TABLE persons_{name} AS SELECT person_id, list_sort(list(record_key)) AS mentions FROM {name}.person_links GROUP BY person_id")
            con.execute(f"CREATE TEMP TABLE households_{name} AS SELECT family_ref, list_sort(list(person_id)) AS persons FROM {name}.family_members GROUP BY family_ref")
            con.execute(f"CREATE TEMP TABLE keys_{name} AS SELECT record_key, profile_key FROM ({mention_keys_sql(f'records_{name}', (), 'NULL')})")
        rows = []
        mentions = [_count(con, f"SELECT count(*) FROM records_{n}") for n in "ba"]
        new = _count(con, "SELECT count(*) FROM records_a ANTI JOIN records_b USING (record_key)")
        gone = _count(con, "SELECT count(*) FROM records_b ANTI JOIN records_a USING (record_key)")
        rows.append(("mentions", *mentions, f"{new:,} new, {gone:,} gone ({(new + gone) / mentions[1]:.1%})"))

        con.execute("CREATE TEMP TABLE changed_persons AS SELECT a.person_id, b.mentions IS NOT NULL AND list_has_all(a.mentions, b.mentions) AS only_added FROM persons_a a LEFT JOIN persons_b b USING (person_id) WHERE b.mentions IS NULL OR a.mentions <> b.mentions")
        persons = [_count(con, f"SELECT count(*) FROM persons_{n}") for n in "ba"]
        changed, only_added = con.execute("SELECT count(*), count(*) FILTER (WHERE only_added) FROM changed_persons").fetchone()
        rows.append(("persons", *persons, f"{changed:,} hold other mentions ({changed / persons[1]:.1%}); {only_added:,} of them only by mentions added"))

        households = [_count(con, f"SELECT count(*) FROM households_{n}") for n in "ba"]
        with_changed = _count(con, "SELECT count(DISTINCT family_ref) FROM a.family_members JOIN changed_persons USING (person_id)")
        other_members = _count(con, "SELECT count(*) FROM households_a a LEFT JOIN households_b b USING (family_ref) WHERE b.persons IS NULL OR a.persons <> b.persons")
        rows.append(("households", *households, f"{with_changed:,} hold a changed person ({with_changed / households[1]:.1%}); {other_members:,} other members ({other_members / households[1]:.1%})"))

        # families (households with a dependent child: what indicators, scores and lists are made
        # for) holding a changed person, and those a new mention of each source reaches: a source
        # whose file names most children (school attendance's termly census) touches most families
        family_refs = "SELECT family_ref FROM a.families WHERE is_family"
        families = [_count(con, f"SELECT count(*) FROM {n}.families WHERE is_family") for n in "ba"]
        touched_families = _count(con, f"SELECT count(DISTINCT family_ref) FROM a.family_members JOIN changed_persons USING (person_id) WHERE family_ref IN ({family_refs})")
        by_source = con.execute(f"""SELECT r.source, count(DISTINCT m.family_ref) FROM records_a r ANTI JOIN records_b USING (record_key)
                                    JOIN a.person_links l USING (record_key) JOIN a.family_members m USING (person_id)
                                    WHERE m.family_ref IN ({family_refs}) GROUP BY r.source ORDER BY 2 DESC, 1""").fetchall()
        reach = ", ".join(f"{source} {n / families[1]:.0%}" for source, n in by_source)
        rows.append(("families", *families, f"{touched_families:,} hold a changed person ({touched_families / families[1]:.1%}); a new mention reaches, by source: {reach}"))

        profiles = [_count(con, f"SELECT count(DISTINCT profile_key) FROM keys_{n}") for n in "ba"]
        con.execute("CREATE TEMP TABLE new_profiles AS SELECT DISTINCT profile_key FROM keys_a ANTI JOIN (SELECT DISTINCT profile_key FROM keys_b) USING (profile_key)")
        new_profiles = _count(con, "SELECT count(*) FROM new_profiles")
        holders = _count(con, "SELECT count(DISTINCT l.person_id) FROM keys_a JOIN new_profiles USING (profile_key) JOIN a.person_links l USING (record_key)")
        repeated = _count(con, "SELECT count(*) FROM keys_a k ANTI JOIN records_b USING (record_key) SEMI JOIN (SELECT DISTINCT profile_key FROM keys_b) USING (profile_key)")
        rows.append(("profiles", *profiles, f"{new_profiles:,} new ({new_profiles / profiles[1]:.1%}), held by {holders:,} persons ({holders / persons[1]:.1%}); {repeated:,} of the {new:,} new mentions repeat a profile held before"))

        # households formed again only around what changed: the postcodes the persons with a new
        # mention were ever recorded at (the household rules read every postcode a person was
        # seen at: kin who moved on, a child's earlier postcode), and everyone recorded there;
        # and, narrower than the rules allow, only those persons' latest postcodes
        con.execute("CREATE TEMP TABLE seen_a AS SELECT DISTINCT l.person_id, r.postcode FROM records_a r JOIN a.person_links l USING (record_key) WHERE r.postcode IS NOT NULL")
        con.execute("""CREATE TEMP TABLE touched AS SELECT DISTINCT l.person_id
                       FROM (SELECT record_key FROM records_a ANTI JOIN records_b USING (record_key)) n JOIN a.person_links l USING (record_key)""")
        con.execute("""CREATE TEMP TABLE latest_a AS SELECT l.person_id, arg_max(r.postcode, r.address_date) AS postcode
                       FROM records_a r JOIN a.person_links l USING (record_key) WHERE r.postcode IS NOT NULL GROUP BY ALL""")
        seen = _count(con, "SELECT count(DISTINCT person_id) FROM seen_a")
        postcodes = _count(con, "SELECT count(DISTINCT postcode) FROM seen_a")
        touched = _count(con, "SELECT count(*) FROM touched")
        around = "SELECT DISTINCT postcode FROM seen_a SEMI JOIN touched USING (person_id)"
        region_postcodes = _count(con, f"SELECT count(*) FROM ({around})")
        region = _count(con, f"SELECT count(DISTINCT person_id) FROM seen_a WHERE postcode IN ({around})")
        latest = _count(con, "SELECT count(*) FROM latest_a WHERE postcode IN (SELECT postcode FROM latest_a SEMI JOIN touched USING (person_id))")
        rows.append((
            "persons with a postcode; of them, in households formed again around new mentions", seen, region,
            f"{touched:,} persons have a new mention ({touched / persons[1]:.1%}); the postcodes they were ever recorded at are {region_postcodes:,} of "
            f"{postcodes:,} ({region_postcodes / postcodes:.1%}), where {region:,} of the {seen:,} persons with a postcode were recorded ({region / seen:.1%}); "
            f"at their latest postcodes alone, {latest:,} persons live ({latest / seen:.1%})",
        ))
        return rows
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="output folder of last month's run")
    parser.add_argument("after", type=Path, help="output folder of this month's run (made on a copy of the one before)")
    args = parser.parse_args()
    for folder in (args.before, args.after):
        if not (folder / WAREHOUSE).exists():
            parser.error(f"{folder} holds no {WAREHOUSE}")
    print("| | before | after | changed |\n| --- | ---: | ---: | --- |")
    for what, before, after, changed in month_change(args.before, args.after):
        print(f"| {what} | {before:,} | {after:,} | {changed} |")


if __name__ == "__main__":
    main()
