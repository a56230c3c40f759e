"""Linkage: the constraints that stop over-merging, stable references, and scoring."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import polars as pl
import pytest

from warehouse import scratch
from linkage.cluster import ConstrainedClusterer, _dob_compatible, _with_birth_dates_conflict, cluster_persons
from linkage.evaluate import pairwise_score
from linkage.model import COMPARISONS, compare
from linkage.stable_ids import PERSON_IDS, assign_stable_ids


def profiles(rows):
    schema = {
        "pid": pl.Int64, "dob": pl.Date, "birth_year": pl.Int32, "forename": pl.String, "preferred_forename": pl.String,
        "surname": pl.String, "nhs_number": pl.String, "upn": pl.String, "nino": pl.String, "mentions": pl.Int64,
    }
    return pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)


D = dt.date


def test_twins_stay_two_people_however_strong_the_link():
    c = ConstrainedClusterer(profiles([
        {"pid": 1, "dob": D(2015, 3, 4), "forename": "OLIVER", "surname": "SMITH"},
        {"pid": 2, "dob": D(2015, 3, 4), "forename": "OLIVIA", "surname": "SMITH"},
        {"pid": 3, "dob": D(2015, 3, 4), "forename": "OLLIE", "surname": "SMITH"},  # a nickname of Oliver
    ]))
    assert not c.link(1, 2)
    assert c.link(1, 3)
    assert not c.link(3, 2), "a nickname brought in by one record cannot chain twins together"
    assert c.find(1) == c.find(3) != c.find(2)


def test_typos_and_swapped_names_are_not_twins():
    c = ConstrainedClusterer(profiles([
        {"pid": 1, "dob": D(2015, 3, 4), "forename": "KATHERINE", "surname": "OBRIEN"},
        {"pid": 2, "dob": D(2015, 3, 4), "forename": "KATHERNE", "surname": "OBRIEN"},
        {"pid": 3, "dob": D(2015, 3, 4), "forename": "OBRIEN", "surname": "KATHERINE"},
        {"pid": 4, "dob": D(2015, 4, 3), "forename": "KATHERINE", "surname": "OBRIEN"},  # day and month transposed
    ]))
    assert c.link(1, 2) and c.link(1, 3) and c.link(1, 4)


def test_parent_and_child_of_one_name_stay_two_and_cannot_be_chained():
    c = ConstrainedClusterer(profiles([
        {"pid": 1, "dob": D(1980, 6, 1), "forename": "JOHN", "surname": "SMITH"},
        {"pid": 2, "dob": D(2008, 9, 9), "forename": "JOHN", "surname": "SMITH"},
        {"pid": 3, "birth_year": None, "forename": "JOHN", "surname": "SMITH"},  # a police record with no date of birth
        {"pid": 4, "birth_year": 2008, "forename": "JOHN", "surname": "SMITH"},  # an age was stated instead
    ]))
    assert not c.link(1, 2)
    assert c.link(3, 1)
    assert not c.link(3, 2), "one record without a date of birth cannot join father and son"
    assert not c.link(4, 1) and c.link(4, 2)


def test_birth_dates_a_reviewer_joined_are_each_checked_against_the_next_link():
    # a reviewer's match joins two dates no slip explains (the reviewer knew better); a later
    # record with one of those dates is checked against both, as if the person held them apart
    c = ConstrainedClusterer(profiles([
        {"pid": 1, "dob": D(2012, 5, 17), "forename": "AMY", "surname": "COLE"},
        {"pid": 2, "dob": D(2012, 9, 3), "forename": "AMY", "surname": "COLE"},
        {"pid": 3, "dob": D(2012, 5, 17), "forename": "AMY", "surname": "COLE"},
        {"pid": 4, "dob": D(2012, 5, 18), "forename": "AMY", "surname": "COLE"},  # a day out
        {"pid": 5, "dob": D(2012, 5, 17), "forename": "AMY", "surname": "COLE"},
    ]))
    assert c.link(1, 2, force=True)
    assert not c.link(3, 1), "2012-09-03 is no slip from 2012-05-17, whoever joined it to the person"
    assert c.link(3, 4) and c.link(5, 3), "dates the rules joined stay a slip apart, and one already held is no news"
    assert c.find(3) == c.find(4) == c.find(5) != c.find(1)


def test_different_identifiers_and_reviewer_decisions_are_respected():
    c = ConstrainedClusterer(
        profiles([
            {"pid": 1, "forename": "A", "surname": "B", "nhs_number": "9434765919", "mentions": 3},
            {"pid": 2, "forename": "A", "surname": "B", "nhs_number": "4010232137", "mentions": 2},
            {"pid": 3, "forename": "A", "surname": "B"},
            {"pid": 4, "forename": "A", "surname": "B"},
        ]),
        cannot_link=[(3, 4)],
    )
    assert not c.link(1, 2), "two numbers each carried by several mentions are two people"
    assert not c.link(3, 4)
    assert c.link(1, 3)


def test_one_mention_keyed_with_another_members_number_neither_splits_nor_merges():
    # a sibling's NHS number keyed once on Amy's row (valid, and wrong); Amy's own number is on
    # her other records, her brother's on his
    c = ConstrainedClusterer(profiles([
        {"pid": 1, "forename": "AMY", "surname": "BOND", "dob": dt.date(2015, 3, 4), "nhs_number": "9434765919", "mentions": 6},
        {"pid": 2, "forename": "AMY", "surname": "BOND", "dob": dt.date(2015, 3, 4), "nhs_number": "4010232137", "mentions": 1},
        {"pid": 3, "forename": "TOM", "surname": "BOND", "dob": dt.date(2012, 9, 30), "nhs_number": "4010232137", "mentions": 5},
    ]))
    assert c.link(2, 1), "one mention's number does not keep Amy from her own records"
    assert not c.link(3, 1), "sharing the wrongly keyed number does not join her brother to her"
    assert c.find(3) != c.find(1)
    # their father at a police notification: no birth date, and Amy's number keyed on his row
    father = ConstrainedClusterer(profiles([
        {"pid": 1, "forename": "AMY", "surname": "BOND", "dob": dt.date(2015, 3, 4), "nhs_number": "9434765919", "mentions": 6},
        {"pid": 4, "forename": "GARY", "surname": "BOND", "nhs_number": "9434765919", "mentions": 1},
        {"pid": 5, "forename": "AMY", "surname": "BOND", "mentions": 1},
    ]))
    assert not father.link(4, 1), "names not alike, no birth date shared: the number alone does not join them"
    assert father.link(5, 1), "her own record without a birth date still joins her"
    # where identifiers are themselves corrupted (FEBRL), the rule can be turned off
    lenient = ConstrainedClusterer(profiles([
        {"pid": 1, "forename": "A", "surname": "B", "nino": "2519978"},
        {"pid": 2, "forename": "A", "surname": "B", "nino": "2519977"},
    ]), identifiers=False)
    assert lenient.link(1, 2)


def test_an_identifier_keyed_with_one_slip_is_its_own_level():
    con = scratch()
    con.register("profiles", pl.DataFrame({
        "pid": [1, 2, 3, 4],
        "forename": ["ANN"] * 4, "preferred_forename": [None] * 4, "surname": ["LEE"] * 4,
        "dob": [None] * 4, "birth_year": [None] * 4, "postcode": [None] * 4, "postcode_sector": [None] * 4,
        "postcode_district": [None] * 4, "address": [None] * 4, "house_number": [None] * 4, "street": [None] * 4, "sex": [None] * 4,
        "nhs_number": ["9434765919", "9434765919", "9434769519", "4010232137"], "upn": [None] * 4, "nino": [None] * 4,
    }, schema_overrides={"dob": pl.Date, "birth_year": pl.Int32, **{c: pl.String for c in ("preferred_forename", "postcode", "postcode_sector", "postcode_district", "address", "house_number", "street", "sex", "upn", "nino")}}))
    con.register("pairs", pl.DataFrame({"l": [1, 1, 1], "r": [2, 3, 4]}))
    levels = dict(compare(con, "pairs").select("r", "identifier").iter_rows())
    labels = COMPARISONS["identifier"]
    assert {r: labels[level] for r, level in levels.items()} == {2: "same", 3: "one slip", 4: "different"}


def test_a_pairs_weight_is_its_prior_odds_its_levels_weights_and_how_rare_its_shared_name_is():
    """Fellegi-Sunter as scored in DuckDB: log2 prior odds, plus each comparable level's
    log2(m/u), plus for an exact forename or surname log2(u_exact / the name's frequency), bounded;
    a model without term frequencies adds only the levels."""
    import math

    from linkage.model import FittedModel, compare_into, prior_m, score, term_frequencies

    con = scratch()
    blank = {c: [None] * 5 for c in ("preferred_forename", "dob", "birth_year", "postcode", "postcode_sector", "postcode_district", "address",
                                     "house_number", "street", "sex", "nhs_number", "upn", "nino")}
    profiles = pl.DataFrame(
        # 5 is 1 with forename and surname swapped: exact on both, sharing neither
        {"pid": [1, 2, 3, 4, 5], "forename": ["ANN", "ANN", "ANN", "ZOE", "LEE"], "surname": ["LEE", "LEE", "OYELARAN", "OYELARAN", "ANN"], **blank},
        schema_overrides={"dob": pl.Date, "birth_year": pl.Int32, **{c: pl.String for c in blank if c not in ("dob", "birth_year")}},
    )
    con.register("profiles", profiles)
    con.register("pairs", pl.DataFrame({"l": [1, 1, 3, 1], "r": [2, 3, 4, 5]}))
    compare_into(con, "pairs", "candidate_levels")
    levels = con.sql("SELECT * FROM candidate_levels ORDER BY l, r").pl()
    m = {name: prior_m(len(labels)) for name, labels in COMPARISONS.items()}
    u = {name: np.full(len(labels), 1 / len(labels)) for name, labels in COMPARISONS.items()}
    tf = {name: dict(term_frequencies(profiles, name).iter_rows()) for name in ("forename", "surname")}

    names = {row["pid"]: row for row in profiles.iter_rows(named=True)}

    def expected(row: dict, adjusted: bool) -> float:
        weight = math.log2(0.01 / 0.99) + sum(math.log2(m[n][row[n]] / u[n][row[n]]) for n in COMPARISONS if row[n] >= 0)
        for name in ("forename", "surname"):
            shared = names[row["l"]][name] if names[row["l"]][name] == names[row["r"]][name] else None
            if adjusted and row[name] == len(COMPARISONS[name]) - 1 and shared is not None:
                weight += min(max(math.log2(u[name][-1] / tf[name][shared]), -3.0), 6.0)
        return weight

    for adjusted, model in ((True, FittedModel(0.01, m, u, 3, 0)), (False, FittedModel(0.01, m, u, 3, 0, tf_fields=()))):
        scored = score(con, model, profiles).sort("l", "r")
        want = [expected(row, adjusted) for row in levels.iter_rows(named=True)]
        assert scored["match_weight"].to_list() == pytest.approx(want, abs=1e-9)
        assert scored["match_probability"].to_list() == pytest.approx([1 / (1 + 2 ** -w) for w in want], abs=1e-12)
    # not vacuous: the common forename shared by 1 and 2 and the surname shared by 3 and 4 were adjusted
    assert {(1, 2), (3, 4)} <= {(r["l"], r["r"]) for r in levels.iter_rows(named=True) if r["same_forename"] or r["same_surname"]}
    swapped = levels.filter((pl.col("l") == 1) & (pl.col("r") == 5)).row(0, named=True)
    assert (swapped["forename"], swapped["surname"]) == (len(COMPARISONS["forename"]) - 1, len(COMPARISONS["surname"]) - 1)
    assert not swapped["same_forename"] and not swapped["same_surname"]


def test_stable_ids_survive_new_records_splits_and_merges():
    first = assign_stable_ids(
        pl.DataFrame({"record": ["a", "b", "c", "d", "e"], "cluster": [1, 1, 2, 2, 3]}), "record", "cluster", None, "P", 3
    )
    ids = dict(first.ids.iter_rows())
    assert ids == {"a": "P001", "b": "P001", "c": "P002", "d": "P002", "e": "P003"}
    previous = first.ids
    # a new record joins person 1; person 2 splits (d alone now); 3 and a new record f merge into 1
    again = assign_stable_ids(
        pl.DataFrame({"record": ["a", "b", "c", "d", "e", "f", "g"], "cluster": [9, 9, 8, 7, 9, 9, 6]}), "record", "cluster", previous, "P", 3
    )
    ids = dict(again.ids.iter_rows())
    assert ids["a"] == ids["b"] == ids["e"] == ids["f"] == "P001"
    assert ids["c"] == "P002" and ids["d"] == "P004" and ids["g"] == "P005"
    assert again.merges == 1 and again.splits == 1 and again.new == 2
    # re-running on the same clusters gives the same ids
    rerun = assign_stable_ids(pl.DataFrame({"record": list(ids), "cluster": [9, 9, 8, 7, 9, 9, 6]}), "record", "cluster", again.ids, "P", 3)
    assert dict(rerun.ids.iter_rows()) == ids


def test_the_last_runs_ids_read_where_the_warehouse_holds_them_give_the_ids_a_frame_of_them_gives(tmp_path):
    """`PreviousIds`: the votes counted by DuckDB over the warehouse's table: the same ids, splits,
    merges and new ids as the last ids given as a frame, whatever the members' order."""
    import duckdb

    from linkage.stable_ids import PreviousIds

    last = pl.DataFrame({"record": ["a", "b", "c", "d", "e", "h"], "id": ["P001", "P001", "P002", "P002", "P007", None]})
    con = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    con.execute("CREATE TABLE person_links AS SELECT record AS record_key, id AS person_id FROM last")
    held = PreviousIds(con, "person_links", "record_key", "person_id")
    for members in (
        pl.DataFrame({"record": ["a", "b", "c", "d", "e", "f", "g", "h"], "cluster": [9, 9, 8, 7, 9, 9, 6, 5]}),
        pl.DataFrame({"record": ["g", "d", "a", "e", "c", "b", "f", "h"], "cluster": [3, 4, 3, 4, 3, 4, 5, 5]}),
    ):
        given, read = (assign_stable_ids(members, "record", "cluster", previous, "P", 3) for previous in (last, held))
        assert dict(read.ids.iter_rows()) == dict(given.ids.iter_rows())
        assert (read.splits, read.merges, read.new, read.kept) == (given.splits, given.merges, given.new, given.kept)
        assert max(dict(read.ids.iter_rows()).values()) >= "P008", "new ids follow the highest issued"
    # nothing before: every id new
    con.execute("DELETE FROM person_links")
    assert dict(assign_stable_ids(members, "record", "cluster", held, "P", 3).ids.iter_rows())["g"] == "P001"
    con.close()


def test_new_ids_follow_each_clusters_first_member_in_whatever_order_the_members_come():
    """New ids are issued in the order of each cluster's first member (its least key), whether the
    members come sorted, as a run's mentions do, or not."""
    given = pl.DataFrame({"record": ["d", "b", "a", "c"], "cluster": [1, 2, 1, 2]})
    for members in (given, given.sort("record")):
        assert dict(assign_stable_ids(members, "record", "cluster", None, "P", 3).ids.iter_rows()) == {"a": "P001", "d": "P001", "b": "P002", "c": "P002"}


def test_an_id_is_read_as_its_number_only_where_it_is_written_as_a_run_writes_ids():
    """Family formation works on person numbers (`linkage.families.FamilyRecords`): an id is read
    as its number only where writing the number again gives the id, so that numbers order as the
    ids' text does and give the ids back."""
    written = ["P00000000", "P00000042", "P99999999", "P00001000"]
    others = ["P0000042", "P000000042", "Q00000042", "P0000004a", "P-0000042", "P+0000042", "P 0000042", "p00000042", "P", ""]
    con = scratch()
    try:
        numbers = [con.execute(f"SELECT {PERSON_IDS.number_sql('$id')}", {"id": i}).fetchall()[0][0] for i in written + others]
    finally:
        con.close()
    assert numbers[:len(written)] == [0, 42, 99999999, 1000]
    assert numbers[len(written):] == [None] * len(others)
    assert pl.select(PERSON_IDS.text(pl.Series([0, 42, 99999999, 1000]))).to_series().to_list() == written
    assert sorted(written) == pl.select(PERSON_IDS.text(pl.Series(sorted(numbers[:len(written)])))).to_series().to_list()


def test_links_refused_at_once_are_those_the_birth_date_rule_refuses():
    """Links whose two birth dates no slip explains are refused in one column-wise pass: it must
    agree with the rule itself on every kind of slip and on dates that are simply different."""
    base = [dt.date(1984, 3, 7), dt.date(2010, 1, 1), dt.date(2019, 12, 31), dt.date(2012, 10, 10), dt.date(1999, 11, 1)]
    others = set()
    for d in base:
        others |= {d, d + dt.timedelta(days=1), d - dt.timedelta(days=1), d + dt.timedelta(days=40), d.replace(year=d.year + 1), d.replace(year=d.year - 3)}
        others |= {d.replace(day=1), d.replace(month=1, day=1), d.replace(day=min(d.month, 28), month=min(d.day, 12))}
        others |= {d.replace(year=d.year + 10), d.replace(year=d.year - 100)}  # one digit of the year keyed wrong
    pairs = [(a, b) for a in base for b in sorted(others)]
    dobs = sorted({d for pair in pairs for d in pair})
    pid = {d: i for i, d in enumerate(dobs)}
    profiles = pl.DataFrame({"pid": list(range(len(dobs))), "dob": dobs, "birth_year": [d.year for d in dobs]})
    links = pl.DataFrame({"l": [pid[a] for a, _ in pairs], "r": [pid[b] for _, b in pairs], "match_weight": [1.0] * len(pairs)})
    judged = _with_birth_dates_conflict(links, profiles)
    expected = {(pid[a], pid[b]): not _dob_compatible(a, b) or abs(a.year - b.year) > 1 for a, b in pairs}
    assert {(l, r): c for l, r, c in judged.select("l", "r", "birth_dates_conflict").iter_rows()} == expected
    assert 0 < sum(expected.values()) < len(expected)


def test_pairwise_scores():
    frame = pl.DataFrame({"pred": [1, 1, 1, 2, 2, 3], "true": [1, 1, 2, 2, 2, 3]})
    s = pairwise_score(frame, "pred", "true", "person")
    # predicted pairs: 3 + 1 = 4; true pairs: 1 + 3 = 4; both: (0,1) and (3,4) = 2
    assert (s.predicted_pairs, s.true_pairs, s.true_positive_pairs) == (4, 4, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == pytest.approx(0.5) and s.f1 == pytest.approx(0.5)
    # a record without a predicted cluster is not counted; more true clusters than predicted
    frame = pl.DataFrame({"pred": [1, 1, 1, 1, 2, 3, None], "true": [1, 1, 2, 2, 4, 3, 9]})
    s = pairwise_score(frame, "pred", "true", "person")
    assert (s.records, s.predicted_clusters, s.true_clusters) == (6, 3, 4)
    assert (s.predicted_pairs, s.true_pairs, s.true_positive_pairs) == (6, 2, 2)


def test_clustering_takes_safe_groups_whole_and_still_keeps_twins_apart():
    people = profiles([
        # one person at three addresses: nothing to contradict, a group taken whole
        {"pid": 0, "forename": "AMY", "surname": "OKAFOR", "dob": D(2012, 3, 4), "birth_year": 2012},
        {"pid": 1, "forename": "AMY", "surname": "OKAFOR", "dob": D(2012, 3, 4), "birth_year": 2012},
        {"pid": 2, "forename": "AMY", "surname": "OKAFOR", "dob": D(2012, 3, 4), "birth_year": 2012},
        # twins whose strong links would chain them: the careful path keeps them two
        {"pid": 3, "forename": "JACK", "surname": "REES", "dob": D(2015, 1, 1), "birth_year": 2015},
        {"pid": 4, "forename": "OSCAR", "surname": "REES", "dob": D(2015, 1, 1), "birth_year": 2015},
        {"pid": 5, "forename": "JACK", "surname": "REES", "dob": D(2015, 1, 1), "birth_year": 2015},
        {"pid": 6, "forename": "OSCAR", "surname": "REES", "dob": D(2015, 1, 1), "birth_year": 2015},
        # a parent and child of one name, and nobody else
        {"pid": 7, "forename": "KAY", "surname": "LEE", "dob": D(1980, 5, 5), "birth_year": 1980},
        {"pid": 8, "forename": "KAY", "surname": "LEE", "dob": D(2010, 5, 5), "birth_year": 2010},
        {"pid": 9, "forename": "ZED", "surname": "NOONE", "dob": D(1990, 1, 1), "birth_year": 1990},
    ])
    pairs = pl.DataFrame(
        {"l": [0, 1, 3, 4, 5, 3, 4, 7], "r": [1, 2, 5, 6, 4, 6, 5, 8], "match_weight": [20.0, 19, 18, 18, 17, 16, 15, 21]}
    ).with_columns((1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability"))
    clusters, refused, _ = cluster_persons(people, pairs, 0.99)
    person = dict(clusters.iter_rows())
    assert person[0] == person[1] == person[2] == 0
    assert person[3] == person[5] != person[4] == person[6]
    assert person[7] != person[8] and person[9] == 9
    assert refused == 4


def test_linkage_by_observable_group_counts_persons_linked_across_sources_and_left_for_review():
    from linkage.evaluate import LinkedPersons, group_link_rates
    from linkage.model import build_profiles

    def mention(key, source, dob, sex, postcode):
        return {"record_key": key, "source": source, "forename": "AMY", "preferred_forename": None, "surname": "STONE", "dob": dob, "sex": sex,
                "postcode": postcode, "postcode_sector": None, "postcode_district": None, "address": None, "house_number": None,
                "nhs_number": None, "upn": None, "nino": None, "event_date": D(2026, 3, 1), "age_stated": None}

    records = pl.DataFrame([
        # person 1: one description from a school and from A&E (one profile, two sources)
        mention("a1", "school_attendance", D(2015, 3, 4), "F", "AL10 1AA"), mention("a2", "ae_attendances", D(2015, 3, 4), "F", "AL10 1AA"),
        mention("b1", "ae_attendances", D(2024, 1, 1), "9", "AL10 1AA"),  # person 2
        # person 3: male and born 1990-06-06 on three mentions of one profile, female and born a
        # day later on two profiles of one mention each; two postcodes (a blank is none)
        *[mention(f"c{i}", "worklessness", D(1990, 6, 6), "M", "AL10 1AA") for i in (1, 4, 5)],
        mention("c2", "worklessness", D(1990, 6, 7), "F", "AL10 2BB"), mention("c3", "worklessness", D(1990, 6, 7), "F", None),
    ], schema_overrides={"dob": pl.Date, "event_date": pl.Date, "age_stated": pl.Int64})
    profiles, mapping, sources = build_profiles(records)
    # each profile's person (the record_key's letter), its cluster numbered by its least pid
    persons = mapping.with_columns(pl.col("record_key").str.slice(0, 1).alias("person_id")).group_by("pid").agg(pl.col("person_id").first())
    persons = persons.with_columns(pl.col("pid").min().over("person_id").alias("cluster")).sort("pid")
    reviewed = mapping.filter(pl.col("record_key").is_in(["b1", "a2"]))["pid"]  # the queue's pair, through one mention of each
    linked = LinkedPersons.of(profiles, persons["cluster"], persons.select("cluster", "person_id").unique(), reviewed, sources)
    # counted over mentions, not profiles: person c is male, born 1990-06-06
    assert linked.persons.sort("person_id").rows() == [
        ("a", 2, 2, 1, True, D(2015, 3, 4), "F"), ("b", 1, 1, 1, True, D(2024, 1, 1), None), ("c", 5, 1, 2, False, D(1990, 6, 6), "M"),
    ]
    # of the persons A&E mentions (a and b), one is mentioned by a school too
    assert linked.source_rates.select("source", "source_other", "rate").rows() == [("ae_attendances", "school_attendance", 0.5), ("school_attendance", "ae_attendances", 1.0)]
    rates = group_link_rates(linked.persons, D(2026, 10, 31))
    row = {(g, v): (n, linked, review) for g, v, n, linked, review in rates.iter_rows()}
    assert row[("age_band", "5-15")] == (1, 1.0, 1.0)
    assert row[("age_band", "0-4")] == (1, 0.0, 1.0)
    assert row[("age_band", "30-49")] == (1, 0.0, 0.0)
    assert row[("sex", "not stated")][0] == 1 and row[("postcodes", "two or more postcodes")][0] == 1
    assert [v for g, v, *_ in rates.iter_rows() if g == "age_band"] == ["0-4", "5-15", "30-49"], "bands in age order"


#: The oracle for `LinkedPersons`: the same counts made by DuckDB over every mention of the
#: warehouse joined to its person, as the pipeline made them before it counted them over profiles.
_LINKED_PERSONS_OVER_MENTIONS = """
CREATE TEMP TABLE m AS SELECT pl.person_id, pr.record_key, pr.source, pr.dob, pr.sex, pr.postcode FROM person_records pr JOIN person_links pl USING (record_key);
CREATE TEMP TABLE s AS SELECT DISTINCT person_id, source FROM m;
CREATE TEMP TABLE persons AS
WITH reviewed AS (SELECT record_key_l AS record_key FROM review_queue UNION SELECT record_key_r FROM review_queue),
per_person AS (SELECT person_id, count(*) AS mentions, bool_or(record_key IN (SELECT record_key FROM reviewed)) AS in_review FROM m GROUP BY person_id),
sources AS (SELECT person_id, count(source) AS sources FROM s GROUP BY person_id),
postcodes AS (SELECT person_id, count(DISTINCT postcode) AS postcodes_seen FROM m GROUP BY person_id),
dobs AS (SELECT person_id, first(dob ORDER BY n DESC, dob) AS dob FROM (SELECT person_id, dob, count(*) AS n FROM m WHERE dob IS NOT NULL GROUP BY ALL) GROUP BY person_id),
sexes AS (SELECT person_id, first(sex ORDER BY n DESC, sex) AS sex FROM (SELECT person_id, sex, count(*) AS n FROM m WHERE sex IN ('M', 'F') GROUP BY ALL) GROUP BY person_id)
SELECT p.person_id, p.mentions, s.sources, c.postcodes_seen, p.in_review, d.dob, x.sex
FROM per_person p JOIN sources s USING (person_id) JOIN postcodes c USING (person_id) LEFT JOIN dobs d USING (person_id) LEFT JOIN sexes x USING (person_id)
ORDER BY person_id;
CREATE TEMP TABLE rates AS
WITH n AS (SELECT source, count(*) AS persons FROM s GROUP BY source)
SELECT a.source, b.source AS source_other, count(*) AS len, any_value(n.persons) AS persons, count(*) / any_value(n.persons) AS rate
FROM s a JOIN s b ON a.person_id = b.person_id AND a.source <> b.source JOIN n ON n.source = a.source GROUP BY ALL ORDER BY a.source, source_other;
"""


def test_what_a_run_says_of_its_persons_is_counted_as_over_every_mention_of_the_warehouse(september, tmp_path):
    import duckdb

    from linkage import link_persons
    from linkage.model import MentionsTable

    _, out = september
    shutil.copy(out / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        previous = con.sql("SELECT record_key, person_id AS id FROM person_links").pl()
        result = link_persons(MentionsTable(con, "person_records"), previous_ids=previous)
        assert result.person_links.sort("record_key").equals(con.sql("SELECT * FROM person_links ORDER BY record_key").pl())
        con.execute(_LINKED_PERSONS_OVER_MENTIONS)
        persons, rates = con.sql("SELECT * FROM persons").pl(), con.sql("SELECT * FROM rates").pl()
    assert persons["sources"].max() > 2 and rates.height > 20, "persons mentioned by several of the village's sources"
    assert result.linked.persons.sort("person_id").equals(persons)
    assert result.linked.source_rates.equals(rates)


def test_the_family_ceiling_places_only_those_no_record_places(tmp_path):
    from linkage.evaluate import family_ceiling, score_linked_records

    # true family 1: records a, b (placed by address) and c (A&E only, placed nowhere); family 2: d, wrongly with 1
    rows = [("a", "P1", "F1", 1), ("b", "P2", "F1", 1), ("c", "P3", "F9", 1), ("d", "P4", "F1", 2)]
    linked = pl.DataFrame({"source": ["s"] * 4, "file": ["f"] * 4, "row": [1, 2, 3, 4], "person_id": [r[1] for r in rows], "family_id": [r[2] for r in rows]})
    truth = pl.DataFrame({"source": ["s"] * 4, "file": ["f"] * 4, "row": [1, 2, 3, 4], "person_id": [1, 2, 3, 4], "family_id": [r[3] for r in rows]})
    linked.write_parquet(tmp_path / "linked.parquet")
    truth.write_csv(tmp_path / "truth.csv")
    placements = pl.DataFrame({"person_id": ["P1", "P2", "P3", "P4"], "placed_by": ["address", "address", "postcode and surname, no address", "address"]})
    now = score_linked_records(tmp_path / "linked.parquet", tmp_path / "truth.csv")["family"]
    ceiling = family_ceiling(tmp_path / "linked.parquet", tmp_path / "truth.csv", placements)
    # c joins a and b (3 true pairs of 3 found); d, placed by an address, stays where the rules put it
    assert now["recall"] == pytest.approx(1 / 3) and ceiling["recall"] == 1.0
    assert ceiling["predicted_pairs"] == 6 and ceiling["precision"] == pytest.approx(3 / 6)


def test_profiles_are_the_same_made_from_a_frame_or_where_the_warehouse_holds_the_mentions(tmp_path, monkeypatch):
    import duckdb

    from linkage import model
    from linkage.comparisons import PROFILE_FIELDS
    from linkage.model import DERIVED_FIELDS, MentionsTable, build_profiles

    def mention(key, forename, surname, dob=None, age=None, address="FLAT 2 14 MILL LANE", event=D(2026, 3, 1)):
        return {"record_key": key, "source": key.split(":")[0], "forename": forename, "preferred_forename": None, "surname": surname, "dob": dob, "sex": "F",
                "postcode": "AB1 2CD", "postcode_sector": "AB1 2", "postcode_district": "AB1", "address": address, "house_number": "14",
                "nhs_number": None, "upn": None, "nino": None, "event_date": event, "age_stated": age}

    frame = pl.DataFrame([
        mention("school:b.csv:2", "AMY", "STONE", D(2014, 5, 1)),
        mention("school:a.csv:1", "AMY", "STONE", D(2014, 5, 1)),  # the same description: one profile of two mentions
        mention("police:c.csv:7", "ZOE", "ÅBERG", age=40, address="9 HIGH STREET"),  # a birth year from a stated age
        mention("ae:d.csv:3", "AMY", "STONE", D(2014, 5, 1), address=None),
    ], schema_overrides={"dob": pl.Date, "event_date": pl.Date, "age_stated": pl.Int64})
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    con.register("frame", frame)
    con.execute("CREATE TABLE person_records AS SELECT * FROM frame")

    from_frame = build_profiles(frame)
    where_held = build_profiles(MentionsTable(con, "person_records"))
    assert all(a.equals(b) for a, b in zip(from_frame[:2], where_held[:2])) and from_frame[2].names == where_held[2].names and from_frame[2].masks.equals(where_held[2].masks)
    # mentions join their profiles on the key's text where two keys share a hash: the same profiles
    monkeypatch.setattr(model, "_mentions_joined_on", lambda con: "profile_key")
    on_text = build_profiles(MentionsTable(con, "person_records"))
    assert all(a.equals(b) for a, b in zip(on_text[:2], where_held[:2])) and on_text[2].names == where_held[2].names and on_text[2].masks.equals(where_held[2].masks)
    profiles, mapping, sources = where_held
    assert profiles.columns == ["pid", *PROFILE_FIELDS, "mentions", "forename_canonical", "surname_phonetic"]
    assert set(DERIVED_FIELDS) <= set(profiles.columns)
    assert mapping["record_key"].to_list() == sorted(frame["record_key"]), "in record_key order"
    # the two AMY STONEs at 14 Mill Lane are one profile the school mentions twice
    assert sources.names == ("ae", "police", "school")
    assert dict(zip(profiles["surname"] + profiles["address"].fill_null(""), sources.masks)) == {"STONEFLAT 2 14 MILL LANE": 0b100, "ÅBERG9 HIGH STREET": 0b010, "STONE": 0b001}
    assert profiles["pid"].to_list() == [0, 1, 2]
    by_key = dict(mapping.iter_rows())
    assert by_key["school:a.csv:1"] == by_key["school:b.csv:2"] != by_key["ae:d.csv:3"]
    amy = profiles.filter(pl.col("pid") == by_key["school:a.csv:1"]).row(0, named=True)
    assert (amy["mentions"], amy["birth_year"], amy["street"]) == (2, 2014, "MILL LANE")
    zoe = profiles.filter(pl.col("surname") == "ÅBERG").row(0, named=True)
    assert (zoe["birth_year"], zoe["street"], zoe["dob"]) == (1986, "HIGH STREET", None)
    # numbered in the order of the profiles' keys: every field as text, a missing one as "~"
    keys = profiles.select(pl.concat_str([pl.col(f).cast(pl.String).fill_null("~") for f in PROFILE_FIELDS], separator="|"))
    assert keys.to_series().is_sorted()


def test_the_profile_key_leaves_out_only_fields_a_field_before_it_determines_so_profiles_are_grouped_and_numbered_as_by_every_field():
    import duckdb

    from linkage.comparisons import PROFILE_FIELDS
    from linkage.model import DERIVED_FIELDS, DETERMINED_BY, KEY_FIELDS, MentionsTable, build_profiles

    assert set(KEY_FIELDS) | set(DETERMINED_BY) == set(PROFILE_FIELDS)
    for field, by in DETERMINED_BY.items():
        assert PROFILE_FIELDS.index(by) < PROFILE_FIELDS.index(field), f"{by} must come before {field} in the key's order"
        # its derivation reads that field alone (binding fails on any other column)
        duckdb.sql(f"SELECT {DERIVED_FIELDS[field]} FROM (SELECT CAST(NULL AS VARCHAR) AS {by})").fetchall()

    # addresses alike but for their numbers, a flat or nothing, with names and dates that tie and differ
    addresses = ["1 MILL LANE", "1A MILL LANE", "FLAT 2 1 MILL LANE", "MILL LANE", "10 MILL LANE", "1 MILL LANE EAST", None]
    rows = [
        {"record_key": f"s{i % 3}:f.csv:{i}", "source": f"s{i % 3}", "forename": ["AMY", "AMY", "ZOE"][i % 3], "preferred_forename": None,
         "surname": ["STONE", "STONE|X", "~"][i % 5 % 3], "dob": D(2014, 5, 1 + i % 2) if i % 4 else None, "sex": "F",
         "postcode": "AB1 2CD", "postcode_sector": "AB1 2", "postcode_district": "AB1", "address": addresses[i % len(addresses)],
         "house_number": None, "nhs_number": None, "upn": None, "nino": None, "event_date": D(2026, 1 + i % 9, 1), "age_stated": 40 if i % 4 == 0 else None}
        for i in range(90)
    ]
    frame = pl.DataFrame(rows, schema_overrides={"dob": pl.Date, "event_date": pl.Date, "age_stated": pl.Int64})
    profiles, mapping, _ = build_profiles(frame)
    # every mention's whole description written out, every field in order: profiles are its distinct values, in its order
    con = duckdb.connect()
    con.register("frame", frame)
    fields = ", ".join(f'{DERIVED_FIELDS[f]} AS "{f}"' if f in DERIVED_FIELDS else f'"{f}"' for f in PROFILE_FIELDS)
    written = ", ".join(f"coalesce(CAST(\"{f}\" AS VARCHAR), '~')" for f in PROFILE_FIELDS)
    whole = con.sql(f"""SELECT record_key, CAST(dense_rank() OVER (ORDER BY concat_ws('|', {written})) - 1 AS BIGINT) AS pid
                        FROM (SELECT record_key, {fields} FROM frame) ORDER BY record_key""").pl()
    assert mapping.equals(whole)
    # one street read from several addresses, so the key without it must still tell them apart
    assert profiles.filter(pl.col("street") == "MILL LANE")["address"].n_unique() == 5
    held = duckdb.connect()
    held.register("frame", frame)
    held.execute("CREATE TABLE person_records AS SELECT * FROM frame")
    assert build_profiles(MentionsTable(held, "person_records"))[1].equals(whole)


def test_groups_shared_with_a_worker_process_are_clustered_as_in_one(monkeypatch):
    import linkage.cluster as clustering

    rng = np.random.default_rng(5)
    rows, links, must, cannot = [], [], [], []
    forenames, surnames = ["AMY", "AMIE", "JACK", "OSCAR", "KAY", "LEO", "MIA"], ["REES", "LEE", "OKAFOR", "STONE"]
    for group in range(1_500):
        first = len(rows)
        surname, born = surnames[group % 4], D(1970 + group % 45, 1 + group % 12, 1 + group % 28)
        for _ in range(int(rng.integers(2, 7))):
            # twins, a parent and child of one name, typos and other numbers: links the rules refuse
            dob = born if rng.random() < 0.7 else D(born.year + int(rng.choice([0, 1, 25])), born.month, born.day)
            rows.append({
                "pid": len(rows), "forename": forenames[int(rng.integers(0, 7))], "surname": surname, "dob": dob, "birth_year": dob.year,
                "nhs_number": str(rng.integers(1, 3)) if rng.random() < 0.3 else None, "mentions": int(rng.integers(1, 4)),
            })
        members = range(first, len(rows))
        for l in members:
            for r in members:
                if l < r and rng.random() < 0.7:
                    links.append((l, r, float(rng.uniform(5, 25))))
        if group % 50 == 0:
            must.append((first, first + 1))
        if group % 40 == 7:
            cannot.append((first, len(rows) - 1))
    people = profiles(rows).with_columns(pl.col("pid").cast(pl.UInt64).alias("digest"))
    pairs = pl.DataFrame(links, schema={"l": pl.Int64, "r": pl.Int64, "match_weight": pl.Float64}, orient="row").with_columns(
        (1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability")
    )
    alone, refused_alone, groups_alone = cluster_persons(people, pairs, 0.99, must, cannot)
    monkeypatch.setattr(clustering, "SHARED_FROM_LINKS", 0)
    monkeypatch.setattr(clustering, "usable_cores", lambda: 2)  # a worker even on a one-core machine
    shared, refused_shared, groups_shared = cluster_persons(people, pairs, 0.99, must, cannot)
    assert refused_alone > 100 and alone["cluster"].n_unique() < people.height, "the rules refused links and took others"
    assert shared.equals(alone) and refused_shared == refused_alone
    assert groups_shared.groups.sort("group", "profile").equals(groups_alone.groups.sort("group", "profile"))


def test_a_group_whose_forenames_are_all_alike_is_a_person_as_the_clusterer_would_make_it(monkeypatch):
    """A group with one birth date (or none), one value of each identifier and forenames every two
    of which are alike (a typo, a nickname, an initial) skips the constrained clusterer: the
    clusterer, given every group, makes the same persons and refuses the same links. Groups of
    names that are not alike (OLIVER and OLIVIA) and of two birth dates still go through it."""
    import linkage.cluster as clustering

    rng = np.random.default_rng(11)
    rows, links = [], []
    # alike, every two (JON/JOHN a slip, JOHN/JACK a nickname, J an initial); and not (OLIVER/OLIVIA twins)
    choices = [["JOHN", "JON", "J"], ["JOHN", "JACK"], ["AMY", "AMIE"], ["OLIVER", "OLIVIA"], ["SAM", "SAMUEL", "SAMANTHA"], ["MIA", ""]]
    for group in range(600):
        first = len(rows)
        names = choices[group % len(choices)]
        born = D(1980 + group % 40, 1 + group % 12, 1 + group % 28)
        for _ in range(int(rng.integers(2, 6))):
            dob = born if group % 7 else (born if rng.random() < 0.5 else D(born.year, born.month, 1 + (born.day + 9) % 28))
            rows.append({
                "pid": len(rows), "forename": names[int(rng.integers(0, len(names)))], "surname": "REES", "dob": dob if rng.random() < 0.8 else None,
                "birth_year": dob.year, "nhs_number": "9434765919" if group % 5 == 0 and rng.random() < 0.6 else None, "mentions": int(rng.integers(1, 4)),
            })
        members = range(first, len(rows))
        links += [(l, r, float(rng.uniform(5, 25))) for l in members for r in members if l < r and rng.random() < 0.7]
    people = profiles(rows).with_columns(pl.col("pid").cast(pl.UInt64).alias("digest"))
    pairs = pl.DataFrame(links, schema={"l": pl.Int64, "r": pl.Int64, "match_weight": pl.Float64}, orient="row").with_columns(
        (1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability")
    )
    persons, refused, groups = cluster_persons(people, pairs, 0.99)
    skipped = people.height - groups.groups.height
    every_group = lambda profiles, component, must, cannot: component.group_by("component").len().filter(pl.col("len") > 1)["component"]
    monkeypatch.setattr(clustering, "_groups_that_may_contradict", every_group)
    persons_all, refused_all, groups_all = cluster_persons(people, pairs, 0.99)
    assert persons.equals(persons_all) and refused == refused_all
    assert refused > 50 and skipped > people.height // 3, "the clusterer refused links, and the groups of alike names were not given it"


def _next_month(people: pl.DataFrame, mentions: dict[int, int]) -> pl.DataFrame:
    """The same profiles a month on, some carrying more mentions (a child's monthly attendance)."""
    return people.with_columns(pl.col("pid").replace_strict(mentions, default=pl.col("mentions"), return_dtype=pl.Int64).alias("mentions"))


def test_a_group_whose_only_change_is_its_mentions_is_taken_apart_again_only_where_the_names_most_used_decided():
    """The clusterer reads a profile's count of mentions only for the name its cluster goes by
    most and for an identifier carried twice or more: a group given the same profiles and links
    with other counts is taken as the last run left it, unless a link in it was decided by which
    name was most used."""
    people = profiles([
        # one person who goes by a middle name: JOHN and OLIVER SMITH share a birth date and an
        # NHS number carried twice each, so they join; a record of OLIVER SMITH without a birth
        # date joins the person only if OLIVER is the name they go by most
        {"pid": 0, "forename": "JOHN", "surname": "SMITH", "dob": D(2011, 6, 1), "birth_year": 2011, "nhs_number": "9434765919", "mentions": 3},
        {"pid": 1, "forename": "OLIVER", "surname": "SMITH", "dob": D(2011, 6, 1), "birth_year": 2011, "nhs_number": "9434765919", "mentions": 2},
        {"pid": 2, "forename": "OLIVER", "surname": "SMITH", "mentions": 1},
        # a typo in a forename and in a birth date: whatever is used most, the names are alike
        {"pid": 3, "forename": "JON", "surname": "BROWN", "dob": D(2009, 2, 3), "birth_year": 2009, "mentions": 1},
        {"pid": 4, "forename": "JOHN", "surname": "BROWN", "dob": D(2009, 2, 4), "birth_year": 2009, "mentions": 1},
        {"pid": 5, "forename": "JOHN", "surname": "BROWN", "mentions": 1},
        # the same person's records as the SMITH ones, all with the birth date, going by OLIVER
        # most: a record of OLIVER TAYLOR born that day joins them while OLIVER is used most
        {"pid": 6, "forename": "JOHN", "surname": "TAYLOR", "dob": D(2013, 8, 9), "birth_year": 2013, "nhs_number": "4010232137", "mentions": 2},
        {"pid": 7, "forename": "OLIVER", "surname": "TAYLOR", "dob": D(2013, 8, 9), "birth_year": 2013, "nhs_number": "4010232137", "mentions": 5},
        {"pid": 8, "forename": "OLIVER", "surname": "TAYLOR", "dob": D(2013, 8, 9), "birth_year": 2013, "mentions": 1},
    ]).with_columns(pl.col("pid").cast(pl.UInt64).alias("digest"))
    pairs = pl.DataFrame({"l": [0, 0, 3, 3, 6, 6], "r": [1, 2, 4, 5, 7, 8], "match_weight": [30.0, 20, 25, 22, 30, 20]}).with_columns(
        (1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability")
    )
    clusters, _, last = cluster_persons(people, pairs, 0.99)
    person = dict(clusters.iter_rows())
    assert person[0] == person[1] != person[2] and person[3] == person[4] == person[5], "JOHN is used most: the record of OLIVER stays apart"
    assert person[6] == person[7] == person[8], "OLIVER is used most: the record of OLIVER born that day joins"
    assert last.afresh == 3 and last.groups.group_by("group").agg(pl.col("weighed").first()).sort("weighed")["weighed"].to_list() == [False, True, True]
    # a month on, OLIVER is used most, and the BROWN records are attended more
    later = _next_month(people, {1: 5, 3: 4, 4: 9})
    clusters, refused, groups = cluster_persons(later, pairs, 0.99, last=last)
    afresh_clusters, afresh_refused, afresh_groups = cluster_persons(later, pairs, 0.99)
    person = dict(clusters.iter_rows())
    assert person[0] == person[1] == person[2], "the SMITH group is taken apart again: OLIVER is the name most used now"
    assert clusters.equals(afresh_clusters) and refused == afresh_refused
    assert groups.groups.sort("group", "profile").equals(afresh_groups.groups.sort("group", "profile"))
    assert groups.afresh == 1, "the BROWN group is as it was: its names are alike whichever is used most"
    # and back: JOHN is used most, and the records of OLIVER the links took are left apart
    latest = _next_month(later, {0: 9, 6: 9})
    clusters, _, groups = cluster_persons(latest, pairs, 0.99, last=groups)
    person = dict(clusters.iter_rows())
    assert person[0] == person[1] != person[2] and person[6] == person[7] != person[8] and clusters.equals(cluster_persons(latest, pairs, 0.99)[0])
    # a count an identifier rests on (carried once, now twice) takes the group apart again
    numbered = people.with_columns(pl.when(pl.col("pid") == 3).then(pl.lit("4010232137")).otherwise(pl.col("nhs_number")).alias("nhs_number"))
    _, _, numbered_last = cluster_persons(numbered, pairs, 0.99)
    _, _, again = cluster_persons(_next_month(numbered, {3: 2}), pairs, 0.99, last=numbered_last)
    _, _, once_more = cluster_persons(_next_month(numbered, {3: 3}), pairs, 0.99, last=again)
    assert again.afresh == 1 and once_more.afresh == 0, "established once carried twice: a third mention changes nothing"


def test_groups_clustered_a_month_on_with_other_counts_of_mentions_are_those_clustered_from_nothing():
    """Random groups of profiles (twins, namesakes, typos, identifiers keyed wrongly), then the same
    with mentions added at random: reusing the last run's groups gives what clustering from
    nothing gives, and reuses some of the groups whose counts changed."""
    rng = np.random.default_rng(11)
    rows, links = [], []
    forenames, surnames = ["AMY", "AMIE", "JACK", "OSCAR", "KAY", "LEO", "MIA"], ["REES", "LEE", "OKAFOR", "STONE"]
    for group in range(600):
        first = len(rows)
        surname, born = surnames[group % 4], D(1970 + group % 45, 1 + group % 12, 1 + group % 28)
        for _ in range(int(rng.integers(2, 6))):
            dob = born if rng.random() < 0.7 else (None if rng.random() < 0.5 else D(born.year + int(rng.choice([0, 1, 25])), born.month, born.day))
            rows.append({
                "pid": len(rows), "forename": forenames[int(rng.integers(0, 7))], "surname": surname, "dob": dob, "birth_year": dob.year if dob else None,
                "nhs_number": str(rng.integers(1, 3)) if rng.random() < 0.3 else None, "mentions": int(rng.integers(1, 4)),
            })
        for l in range(first, len(rows)):
            for r in range(l + 1, len(rows)):
                if rng.random() < 0.7:
                    links.append((l, r, float(rng.uniform(5, 25))))
    people = profiles(rows).with_columns(pl.col("pid").cast(pl.UInt64).alias("digest"))
    pairs = pl.DataFrame(links, schema={"l": pl.Int64, "r": pl.Int64, "match_weight": pl.Float64}, orient="row").with_columns(
        (1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability")
    )
    _, _, last = cluster_persons(people, pairs, 0.99)
    later = _next_month(people, {pid: int(rng.integers(1, 8)) for pid in range(len(rows)) if rng.random() < 0.4})
    clusters, refused, groups = cluster_persons(later, pairs, 0.99, last=last)
    afresh_clusters, afresh_refused, afresh_groups = cluster_persons(later, pairs, 0.99)
    assert clusters.equals(afresh_clusters) and refused == afresh_refused
    assert groups.groups.sort("group", "profile").equals(afresh_groups.groups.sort("group", "profile"))
    changed = groups.groups.join(last.groups.select("group").unique(), on="group", how="anti")["plain"].n_unique()
    assert 0 < groups.afresh < changed, "of the groups whose counts changed, some were reused and some taken apart again"


def test_the_prior_counts_the_candidates_that_meet_the_deterministic_rule(monkeypatch):
    """A candidate pair is sure (`SURE_SQL`, worked out as its levels are) when its names and birth
    date are the same, or an NHS number, UPN or NI number is; the fitted prior is the sure pairs
    over the recall the rule is given, among every two profiles. An unknown value is no agreement."""
    import linkage.model
    from linkage.model import DETERMINISTIC_RECALL, compare_into, fit

    con = scratch()
    n = 12
    blank = {c: [None] * n for c in ("preferred_forename", "birth_year", "postcode", "postcode_sector", "postcode_district", "address", "house_number", "street", "sex")}
    born = D(2014, 4, 4)
    profiles = pl.DataFrame(
        {
            "pid": list(range(1, n + 1)),
            "forename": ["ANN", "ANN", "BO", "CY", "DI", "ED", "FAY", "GUS", "GUS", "HAL", "IDA", "JO"],
            "surname": ["LEE"] * n,
            "dob": [born, born, None, None, None, None, None, None, None, born, D(2015, 5, 5), None],
            "nhs_number": [None, None, "9434765919", None, None, None, None, None, None, None, None, None],
            "upn": [None, None, None, "A123", "A123", None, None, None, None, None, None, None],
            "nino": [None, None, None, None, None, "QQ123456C", "QQ123456C", None, None, None, None, None],
            **blank,
        },
        schema_overrides={"dob": pl.Date, "birth_year": pl.Int32, **{c: pl.String for c in blank if c != "birth_year"}},
    )
    # the A&E record of ANN carries the NHS number BO's does: 1-3 agree on it, as 1-2 on names and date
    profiles = profiles.with_columns(pl.when(pl.col("pid") == 1).then(pl.lit("9434765919")).otherwise(pl.col("nhs_number")).alias("nhs_number"))
    con.register("profiles", profiles)
    # sure: 1-2 (names and date), 1-3 (NHS number), 4-5 (UPN), 6-7 (NI number); not: 8-9 (names, no
    # date either side), 2-10 and 10-11 (a date each, names not the same), 11-12 (nothing shared)
    con.register("pairs", pl.DataFrame({"l": [1, 1, 4, 6, 8, 10, 11, 2], "r": [2, 3, 5, 7, 9, 11, 12, 10]}))
    compare_into(con, "pairs", "candidate_levels", sure=True)
    sure = con.sql("SELECT l, r FROM candidate_levels WHERE sure ORDER BY l, r").fetchall()
    assert sure == [(1, 2), (1, 3), (4, 5), (6, 7)]
    monkeypatch.setattr(linkage.model, "TRAINING_RULES", ())  # no EM session: only u and the prior are fitted
    con.register("random_pairs", pl.DataFrame({"l": [1, 4], "r": [12, 9]}))
    compare_into(con, "random_pairs", "random_levels")
    model = fit(con, con.sql("SELECT * FROM random_levels").pl(), n)
    assert model.pairs == 8
    assert model.prior == pytest.approx(len(sure) / DETERMINISTIC_RECALL / (n * (n - 1) / 2))


def test_the_clusterer_holds_off_the_cycle_collector_only_while_it_runs(monkeypatch):
    """The cyclic collector is held off inside the clusterer's loop (it walked the clusters' sets
    and dicts again and again) and is as it was after: on where it was on, off where the caller
    had turned it off."""
    import gc

    import linkage.cluster as cluster

    seen = []
    link = cluster.ConstrainedClusterer.link
    monkeypatch.setattr(cluster.ConstrainedClusterer, "link", lambda self, *a, **k: seen.append(gc.isenabled()) or link(self, *a, **k))
    # twins, each seen twice: the links within each are taken, the one between them refused
    people = profiles([
        {"pid": p, "forename": f, "surname": "REES", "dob": D(2015, 1, 1), "birth_year": 2015}
        for p, f in enumerate(["JACK", "OSCAR", "JACK", "OSCAR"])
    ])
    pairs = pl.DataFrame({"l": [0, 1, 0], "r": [2, 3, 1], "match_weight": [18.0, 18, 17]}).with_columns(
        (1 / (1 + 2 ** -pl.col("match_weight"))).alias("match_probability")
    )
    was = gc.isenabled()
    try:
        gc.enable()
        clusters, refused, _ = cluster_persons(people, pairs, 0.99)
        assert seen and not any(seen), "links are taken with the collector held off"
        assert gc.isenabled(), "the collector runs again after"
        assert dict(clusters.iter_rows()) == {0: 0, 1: 1, 2: 0, 3: 1} and refused == 1
        gc.disable()
        cluster_persons(people, pairs, 0.99)
        assert not gc.isenabled(), "a caller's choice to hold it off stands"
    finally:
        (gc.enable if was else gc.disable)()


def test_a_groups_digest_changes_with_what_the_clusterer_is_given_and_nothing_else():
    """`_group_digests`, by which a month reuses a group taken apart last month: the same for the
    same profiles, links in the same order and decisions, whatever the frames' row order; another
    for another profile count, link order, decision inside the group or rules. `plain` reads a
    profile's mentions only as far as its identifiers count them."""
    from linkage.cluster import ESTABLISHED_BY, _group_digests

    careful = pl.DataFrame({"pid": [0, 1, 2, 3, 4], "component": [7, 7, 7, 9, 9]}, schema={"pid": pl.Int64, "component": pl.Int32})
    profiles = pl.DataFrame({
        "pid": [0, 1, 2, 3, 4], "digest": [11, 12, 13, 14, 15], "mentions": [1, 2, 1, 3, 1],
        "nhs_number": [None, "9434765919", None, None, None], "upn": [None] * 5, "nino": [None] * 5,
    }, schema_overrides={"digest": pl.UInt64, "upn": pl.String, "nino": pl.String})
    links = pl.DataFrame({"l": [0, 1, 3], "r": [1, 2, 4]})

    def digests(careful=careful, profiles=profiles, links=links, decisions=(), rules="rules"):
        out = _group_digests(careful, profiles, links, list(decisions), rules)
        return {c: (g, p) for c, g, p in out.iter_rows()}

    base = digests()
    assert set(base) == {7, 9} and base[7] != base[9]
    assert digests(careful=careful.reverse(), profiles=profiles.reverse()) == base
    # a mention more on a profile with no identifier: the group's digest moves, its plain one not
    more = digests(profiles=profiles.with_columns(pl.when(pl.col("pid") == 2).then(5).otherwise(pl.col("mentions")).alias("mentions")))
    assert more[7][0] != base[7][0] and more[7][1] == base[7][1] and more[9] == base[9]
    # on a profile with an NHS number: plain moves only where the count crosses ESTABLISHED_BY
    beyond = digests(profiles=profiles.with_columns(pl.when(pl.col("pid") == 1).then(ESTABLISHED_BY + 1).otherwise(pl.col("mentions")).alias("mentions")))
    assert beyond[7][0] != base[7][0] and beyond[7][1] == base[7][1]
    below = digests(profiles=profiles.with_columns(pl.when(pl.col("pid") == 1).then(ESTABLISHED_BY - 1).otherwise(pl.col("mentions")).alias("mentions")))
    assert below[7][0] != base[7][0] and below[7][1] != base[7][1]
    # links taken in another order, a reviewer's decision inside a group, other rules
    swapped = digests(links=links[[1, 0, 2]])
    assert swapped[7][0] != base[7][0] and swapped[7][1] != base[7][1] and swapped[9] == base[9]
    decided = digests(decisions=[(3, 4, "NON_MATCH")])
    assert decided[9] != base[9] and decided[7] == base[7]
    assert digests(decisions=[(0, 3, "NON_MATCH")]) == base  # across groups: neither's
    assert all(a != b for a, b in zip(digests(rules="other").values(), base.values()))


def test_the_groups_that_may_contradict_are_found_alike_whatever_order_their_components_come_in():
    """`_groups_that_may_contradict` takes each profile's component as it stands where the components
    come in the profiles' order (as clustering gives them), and joins them otherwise: the same groups."""
    from linkage.cluster import _components, _groups_that_may_contradict

    people = profiles([
        {"pid": 0, "forename": "AMY", "surname": "COLE", "dob": D(2010, 1, 2), "birth_year": 2010},
        {"pid": 1, "forename": "AMY", "surname": "COLE", "dob": D(2011, 5, 9), "birth_year": 2011},  # two birth dates
        {"pid": 2, "forename": "BEN", "surname": "HALL", "dob": D(2008, 3, 4), "birth_year": 2008},
        {"pid": 3, "forename": "BEN", "surname": "HALL", "dob": D(2008, 3, 4), "birth_year": 2008},  # one person as it stands
        {"pid": 4, "forename": "CAL", "surname": "WEST", "dob": D(2001, 7, 7), "birth_year": 2001},  # alone
    ])
    component = _components(people["pid"], pl.DataFrame({"l": [0, 2], "r": [1, 3]}), [])
    found = _groups_that_may_contradict(people, component, [], [])
    assert found.to_list() == component.filter(pl.col("pid") == 0)["component"].to_list()
    for reordered in (component.reverse(), component.sample(fraction=1.0, shuffle=True, seed=3)):
        assert _groups_that_may_contradict(people, reordered, [], []).to_list() == found.to_list()


def test_mentions_join_their_links_on_position_only_while_the_files_keep_their_places(september, tmp_path):
    """A run's person_links holds each mention's record_position, and later steps join mentions to
    their links on it (`mention_join`), as on the key. Once person_records is made again with a file
    gone (a step run alone after the oldest file expired), the files after it move up and the
    links' positions are no longer their mentions': the join goes by key again, giving what the
    key gives."""
    import duckdb

    from data_contracts import load_contracts
    from linkage.person_records import mention_join, write_person_records
    from warehouse import MENTION_KEY_JOIN, linked_mentions

    _, out = september
    shutil.copy(out / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    columns = "pr.record_key, pr.source, pr.file, pr.row, pl.person_id, pl.match_probability"

    def linked(con, on):
        return con.sql(f"{linked_mentions(columns, on)} ORDER BY pr.record_key").pl()

    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        on = mention_join(con)
        assert on != MENTION_KEY_JOIN, "a run's links are joined on their mentions' positions"
        assert linked(con, on).equals(linked(con, MENTION_KEY_JOIN)) and linked(con, on).height == con.sql("SELECT count(*) FROM person_records").fetchall()[0][0]
        # the oldest school attendance file gone, and person_records made again from what is left
        oldest = con.sql("SELECT min(_file) FROM raw_school_attendance").fetchall()[0][0]
        assert con.sql("SELECT count(DISTINCT _file) FROM raw_school_attendance").fetchall()[0][0] > 1
        con.execute("DELETE FROM raw_school_attendance WHERE _file = ?", [oldest])
        write_person_records(con, list(load_contracts().values()))
        moved = con.sql(f"""SELECT count(*) FROM person_records pr JOIN person_links pl ON pl.record_position = pr.record_position
                            WHERE pl.record_key <> pr.record_key""").fetchall()[0][0]
        assert moved > 0, "the files after the one gone moved up: the links' positions now name other mentions"
        assert mention_join(con) == MENTION_KEY_JOIN
        assert linked(con, mention_join(con)).equals(linked(con, MENTION_KEY_JOIN))


def test_links_made_from_records_of_an_earlier_version_are_joined_by_key(september, tmp_path):
    """person_records made by a version that recorded no file places (before `first_position`):
    person_links made from it records none either, rather than failing, and is joined by key."""
    import duckdb

    from linkage.person_records import PERSON_LINKS_MADE, mention_join, store_links_made
    from warehouse import MENTION_KEY_JOIN, table_exists

    _, out = september
    shutil.copy(out / "warehouse.duckdb", tmp_path / "warehouse.duckdb")
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as con:
        con.execute("ALTER TABLE person_records_made DROP COLUMN first_position")
        assert mention_join(con) == MENTION_KEY_JOIN
        store_links_made(con)
        assert not table_exists(con, PERSON_LINKS_MADE)
        assert mention_join(con) == MENTION_KEY_JOIN
