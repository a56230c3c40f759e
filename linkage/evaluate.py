"""Score a linkage against truth: pairwise precision, recall and F1 over records.

A pair of records is predicted linked when both are in one predicted cluster,
and truly linked when both belong to one true person (or family). Counts come
from cluster intersection sizes, never from listing pairs, so a county of a
million records is scored in a second.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import polars as pl


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


def read_truth(path) -> pl.DataFrame:
    return pl.read_csv(path, schema_overrides={"source": pl.String, "file": pl.String, "row": pl.Int64, "person_id": pl.Int64, "family_id": pl.Int64})
