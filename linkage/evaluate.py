"""Score a linkage against truth: pairwise precision, recall and F1 over records.

A pair of records is predicted linked when both are in one predicted cluster,
and truly linked when both belong to one true person (or family). Counts come
from cluster intersection sizes, never from listing pairs, so a county of a
million records is scored in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl

from ingestion.engine import scratch


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


def _pairs(counts: pl.Series) -> int:
    return int((counts.cast(pl.Int64) * (counts.cast(pl.Int64) - 1) // 2).sum())


def pairwise_score(frame: pl.DataFrame, predicted: str, truth: str, level: str) -> PairwiseScore:
    """frame: one row per record with a predicted and a true cluster id."""
    frame = frame.filter(pl.col(predicted).is_not_null() & pl.col(truth).is_not_null())
    both = frame.group_by(predicted, truth).len()["len"]
    return PairwiseScore(
        level=level,
        records=frame.height,
        predicted_clusters=frame[predicted].n_unique(),
        true_clusters=frame[truth].n_unique(),
        true_positive_pairs=_pairs(both),
        predicted_pairs=_pairs(frame.group_by(predicted).len()["len"]),
        true_pairs=_pairs(frame.group_by(truth).len()["len"]),
    )


def score_linked_records(linked_path, truth_path) -> dict[str, dict]:
    """Person and family scores of a run's `linked_records.parquet` against a synthetic county's
    `truth.csv`, joined on provenance (source, file, row). DuckDB does the join and the counts:
    at a county's millions of records its parallel grouping is several times Polars' here."""
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
        scores = {}
        for level, predicted, truth in (("person", "person_id", "true_person"), ("family", "family_id", "true_family")):
            con.execute(f"CREATE OR REPLACE TEMP VIEW level AS SELECT * FROM scored WHERE {predicted} IS NOT NULL AND {truth} IS NOT NULL")
            records, predicted_clusters, true_clusters = con.execute(f"SELECT count(*), count(DISTINCT {predicted}), count(DISTINCT {truth}) FROM level").fetchone()

            def pairs(columns: str) -> int:
                return int(con.execute(f"SELECT coalesce(sum(n * (n - 1) // 2), 0) FROM (SELECT count(*) AS n FROM level GROUP BY {columns})").fetchone()[0])

            scores[level] = PairwiseScore(
                level=level, records=records, predicted_clusters=predicted_clusters, true_clusters=true_clusters,
                true_positive_pairs=pairs(f"{predicted}, {truth}"), predicted_pairs=pairs(predicted), true_pairs=pairs(truth),
            ).as_dict()
    finally:
        con.close()
    return scores


def read_truth(path) -> pl.DataFrame:
    return pl.read_csv(path, schema_overrides={"source": pl.String, "file": pl.String, "row": pl.Int64, "person_id": pl.Int64, "family_id": pl.Int64})
