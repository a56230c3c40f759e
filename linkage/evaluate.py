"""Score a linkage against truth: pairwise precision, recall and F1 over records.

A pair of records is predicted linked when both are in one predicted cluster,
and truly linked when both belong to one true person (or family). Counts come
from cluster intersection sizes, never from listing pairs, so a county of a
million records is scored in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl

from linkage.model import ProfileSources
from rules import LINKAGE_AGE_BANDS, age_band
from warehouse import register, scratch, sql_literal


@dataclass(frozen=True)
class PairwiseScore:
    level: str
    records: int
    predicted_clusters: int
    true_clusters: int
    true_positive_pairs: int
    predicted_pairs: int
    true_pairs: int

    @property
    def precision(self) -> float:
        return self.true_positive_pairs / self.predicted_pairs if self.predicted_pairs else 1.0

    @property
    def recall(self) -> float:
        return self.true_positive_pairs / self.true_pairs if self.true_pairs else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "precision": round(self.precision, 6), "recall": round(self.recall, 6), "f1": round(self.f1, 6)}


def pairwise_score(frame: pl.DataFrame, predicted: str, truth: str, level: str) -> PairwiseScore:
    """frame: one row per record with a predicted and a true cluster id."""
    con = scratch()
    try:
        register(con, "scored", frame)
        return _score(con, "scored", predicted, truth, level)
    finally:
        con.close()


def score_linked_records(linked_path, truth_path) -> dict[str, dict]:
    """Person and family scores of a run's `linked_records.parquet` against a synthetic county's
    `truth.csv`, joined on provenance (source, file, row), in DuckDB: at a county's millions of
    records its parallel join and grouping are several times Polars' here."""
    con = scratch()
    try:
        con.execute(
            """CREATE TEMP TABLE scored AS
               SELECT l.person_id, l.family_id, t.person_id AS true_person, t.family_id AS true_family
               FROM read_parquet($linked) l
               JOIN read_csv($truth, header = true, types = {'source': 'VARCHAR', 'file': 'VARCHAR', 'row': 'BIGINT',
                                                           'person_id': 'BIGINT', 'family_id': 'BIGINT'}) t
               USING (source, file, row)""",
            {"linked": str(linked_path), "truth": str(truth_path)},
        )
        return {
            level: _score(con, "scored", predicted, truth, level).as_dict()
            for level, predicted, truth in (("person", "person_id", "true_person"), ("family", "family_id", "true_family"))
        }
    finally:
        con.close()


#: Placements no record supports: a person known only by postcode (A&E, the front door) whom no
#: one of their surname, no pupil's contact and no notification ties to a household there.
UNPLACEABLE = ("postcode and surname, no address", "alone")


def family_ceiling(linked_path, truth_path, placements: pl.DataFrame) -> dict:
    """Family precision, recall and F1 were every person whose placement no record supports
    (UNPLACEABLE; placements: person_id, placed_by, as family_members) put with the largest part
    of their true family: the most that rules using only the records could reach, so a
    shortfall is read as the records' limit rather than the linker's."""
    con = scratch()
    try:
        register(con, "placements", placements.select("person_id", "placed_by"))
        con.execute(
            """CREATE TEMP TABLE scored AS
               SELECT l.person_id, l.family_id, t.family_id AS true_family, p.placed_by IN $unplaceable AS unplaceable
               FROM read_parquet($linked) l
               JOIN read_csv($truth, header = true, types = {'source': 'VARCHAR', 'file': 'VARCHAR', 'row': 'BIGINT',
                                                           'person_id': 'BIGINT', 'family_id': 'BIGINT'}) t
               USING (source, file, row)
               LEFT JOIN placements p ON p.person_id = l.person_id""",
            {"linked": str(linked_path), "truth": str(truth_path), "unplaceable": list(UNPLACEABLE)},
        )
        con.execute(
            """CREATE TEMP TABLE placed_right AS
               WITH largest AS (
                   SELECT true_family, arg_max(family_id, n ORDER BY family_id DESC) AS family_id FROM (
                       SELECT true_family, family_id, count(*) AS n FROM scored WHERE NOT coalesce(unplaceable, false) GROUP BY ALL
                   ) GROUP BY true_family
               )
               SELECT s.person_id, CASE WHEN s.unplaceable AND g.family_id IS NOT NULL THEN g.family_id ELSE s.family_id END AS family_id, s.true_family
               FROM scored s LEFT JOIN largest g USING (true_family)"""
        )
        return _score(con, "placed_right", "family_id", "true_family", "family").as_dict()
    finally:
        con.close()


#: The groups linkage quality is reported by (ONS publishes its Census-PDS linkage by the same).
GROUPS = ("name_tradition", "age_band", "sex", "mover")


def score_by_group(linked_path, truth_path, people_path) -> pl.DataFrame:
    """Person and family precision, recall and F1 among the records of each group of true
    persons (`people_path`: person_id and the GROUPS columns, as a synthetic county's
    truth_people.csv): pairs within the group, so a group linked less well shows even where the
    county as a whole looks fine. One row per group, value and level."""
    con = scratch()
    try:
        con.execute(
            """CREATE TEMP TABLE grouped AS
               SELECT l.person_id, l.family_id, t.person_id AS true_person, t.family_id AS true_family, p.* EXCLUDE (person_id, family_id)
               FROM read_parquet($linked) l
               JOIN read_csv($truth, header = true, types = {'source': 'VARCHAR', 'file': 'VARCHAR', 'row': 'BIGINT',
                                                           'person_id': 'BIGINT', 'family_id': 'BIGINT'}) t
               USING (source, file, row)
               JOIN read_csv($people, header = true, all_varchar = true) p ON CAST(p.person_id AS BIGINT) = t.person_id""",
            {"linked": str(linked_path), "truth": str(truth_path), "people": str(people_path)},
        )
        rows = []
        for group in GROUPS:
            for (value,) in con.execute(f'SELECT DISTINCT "{group}" FROM grouped ORDER BY 1').fetchall():
                # a view cannot take a parameter
                con.execute(f'CREATE OR REPLACE TEMP VIEW in_group AS SELECT * FROM grouped WHERE "{group}" = {sql_literal(str(value))}')
                persons = con.execute("SELECT count(DISTINCT true_person) FROM in_group").fetchone()[0]
                for level, predicted, truth in (("person", "person_id", "true_person"), ("family", "family_id", "true_family")):
                    score = _score(con, "in_group", predicted, truth, level)
                    rows.append({"group": group, "value": value, "level": level, "persons": persons, "records": score.records,
                                 "precision": score.precision, "recall": score.recall, "f1": score.f1})
        return pl.DataFrame(rows)
    finally:
        con.close()


def _score(con, table: str, predicted: str, truth: str, level: str) -> PairwiseScore:
    """Pairwise counts from cluster sizes: a cluster of n records holds n(n-1)/2 pairs. The three
    groupings (predicted and true together, each alone) in one pass over the records: at 3.7M
    records, persons and families 0.50-0.58 rather than 1.27-1.37 s (three each, alternating)."""
    p, t = f'"{predicted}"', f'"{truth}"'
    sizes = con.execute(f"""
        SELECT no_predicted, no_truth, count(*) AS clusters, sum(n) AS records, sum(n * (n - 1) // 2) AS pairs
        FROM (SELECT GROUPING({p}) AS no_predicted, GROUPING({t}) AS no_truth, count(*) AS n FROM {table}
              WHERE {p} IS NOT NULL AND {t} IS NOT NULL GROUP BY GROUPING SETS (({p}, {t}), ({p}), ({t})))
        GROUP BY ALL""").fetchall()
    by_grouping = {(no_p, no_t): (clusters, int(records), int(pairs)) for no_p, no_t, clusters, records, pairs in sizes}
    both, predicted_only, truth_only = (by_grouping.get(g, (0, 0, 0)) for g in ((0, 0), (0, 1), (1, 0)))
    return PairwiseScore(
        level=level, records=both[1], predicted_clusters=predicted_only[0], true_clusters=truth_only[0],
        true_positive_pairs=both[2], predicted_pairs=predicted_only[2], true_pairs=truth_only[2],
    )


def read_truth(path) -> pl.DataFrame:
    return pl.read_csv(path, schema_overrides={"source": pl.String, "file": pl.String, "row": pl.Int64, "person_id": pl.Int64, "family_id": pl.Int64})


#: The groups a run without truth can see in its own records (a name tradition it cannot).
OBSERVABLE_GROUPS = ("age_band", "sex", "postcodes")


@dataclass(frozen=True)
class LinkedPersons:
    """What a run can say of the persons it linked without truth, counts only."""

    persons: pl.DataFrame  # person_id, mentions, sources, postcodes_seen, in_review, dob, sex; in no order a reader may rely on
    source_rates: pl.DataFrame  # source, source_other, len (persons both mention), persons (the source mentions), rate

    @classmethod
    def of(cls, profiles: pl.DataFrame, clusters: pl.Series, person_ids: pl.DataFrame, reviewed: pl.Series, sources: ProfileSources) -> LinkedPersons:
        """Per linked person: the mentions, the sources and postcodes they come from, whether one
        is in a review-queue pair, and the date of birth and sex recorded on most of them (ties to
        the least value, so a rerun gives the same); and for each two sources, how many of the
        persons one mentions the other mentions too. Made from the profiles, as `build_profiles`
        made them (a profile's mentions share its fields, so a field is counted `mentions` times),
        with each profile's cluster in pid order (`clusters`: numbered by one of their pids, as the
        clusterer numbers them), each cluster's person_id (`person_ids`), the pids in the review
        queue's pairs (`reviewed`) and the sources mentioning each profile (`sources`). Persons
        are in their clusters' order. Counted by cluster number, not person_id: grouping 1.9M
        profiles on their persons' ids took longer than all the rest at 1.2M residents."""
        cluster = clusters.to_numpy()
        if len(cluster) and (cluster.min() < 0 or cluster.max() >= len(cluster)):
            raise ValueError("LinkedPersons: clusters are numbered by one of their profiles' pids")
        # each cluster's place among the clusters, by a table of every pid (np.unique sorted them in 0.4 s)
        numbered = np.zeros(len(cluster), bool)
        numbered[cluster] = True
        uniq = np.flatnonzero(numbered)
        code = (np.cumsum(numbered) - 1)[cluster]
        n = len(uniq)
        mentions = np.bincount(code, weights=profiles["mentions"].to_numpy(), minlength=n).astype(np.int64)
        masks = np.zeros(n, np.uint64)
        np.bitwise_or.at(masks, code, sources.masks.to_numpy())
        in_review = np.zeros(n, bool)
        in_review[code[reviewed.to_numpy()]] = True
        fields = profiles.select(pl.Series("code", code), "mentions", "postcode", "dob", "sex")
        postcodes = np.bincount(fields.select("code", "postcode").drop_nulls().unique()["code"].to_numpy(), minlength=n)
        persons = pl.DataFrame({
            "cluster": uniq, "mentions": mentions, "sources": np.bitwise_count(masks).astype(np.int64), "postcodes_seen": postcodes.astype(np.int64),
            "in_review": in_review,
        }).with_row_index("code")
        for field, kept in (("dob", pl.col("dob").is_not_null()), ("sex", pl.col("sex").is_in(["M", "F"]))):
            most = (
                fields.filter(kept).group_by("code", field).agg(pl.col("mentions").sum())
                .sort("code", "mentions", field, descending=[False, True, False]).unique("code", keep="first")
            )
            persons = persons.join(most.select(pl.col("code").cast(pl.UInt32), field), on="code", how="left", maintain_order="left")
        persons = persons.join(person_ids.select("cluster", "person_id"), on="cluster", how="left", maintain_order="left")
        has = {name: (masks >> np.uint64(i)) & np.uint64(1) == 1 for i, name in enumerate(sources.names)}
        rates = [
            (source, other, int((has[source] & has[other]).sum()), int(has[source].sum()))
            for source in sorted(has) for other in sorted(has) if other != source and (has[source] & has[other]).any()
        ]
        source_rates = pl.DataFrame(rates, schema={"source": pl.String, "source_other": pl.String, "len": pl.Int64, "persons": pl.Int64}, orient="row")
        return cls(
            persons.select("person_id", "mentions", "sources", "postcodes_seen", "in_review", "dob", "sex"),
            source_rates.with_columns((pl.col("len") / pl.col("persons")).alias("rate")),
        )


def group_link_rates(persons: pl.DataFrame, reference) -> pl.DataFrame:
    """How well each observable group of persons is linked, in a run with no truth: of the
    persons in a group, the share whose mentions come from more than one source (linked across
    partners), and the share with a mention in a review-queue pair (left uncertain). A group far
    below the others is one whose families may be split (ONS finds young adults, men, ethnic
    minorities and movers linked less well). Groups: age band on `reference`, sex as recorded
    most often, and whether the person was recorded at one postcode or more (movers).
    persons: `LinkedPersons.persons`."""
    years = pl.lit(reference.year) - pl.col("dob").dt.year() - ((pl.lit(reference.month) < pl.col("dob").dt.month()) | ((pl.lit(reference.month) == pl.col("dob").dt.month()) & (pl.lit(reference.day) < pl.col("dob").dt.day()))).cast(pl.Int32)
    persons = persons.with_columns(
        age_band(years).fill_null("not known").alias("age_band"),
        pl.col("sex").fill_null("not stated"),
        pl.when(pl.col("postcodes_seen") > 1).then(pl.lit("two or more postcodes")).otherwise(pl.lit("one postcode")).alias("postcodes"),
    )
    frame = pl.concat([
        persons.group_by(pl.col(group).alias("value")).agg(
            pl.len().alias("persons"), (pl.col("sources") > 1).mean().alias("linked_across_sources"), pl.col("in_review").mean().alias("in_review_queue"),
        ).with_columns(pl.lit(group).alias("group"))
        for group in OBSERVABLE_GROUPS
    ])
    order = {label: i for i, (_, _, label) in enumerate(LINKAGE_AGE_BANDS)}
    return frame.with_columns(pl.col("value").replace_strict(order, default=len(order), return_dtype=pl.Int32).alias("_order")).sort(
        "group", "_order", "value"
    ).select("group", "value", "persons", "linked_across_sources", "in_review_queue")
