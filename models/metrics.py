"""Ranking metrics that a bootstrap can afford, and intervals for rates.

A ranking is judged on families weighted by how often a bootstrap replicate drew them (all
ones for the figures themselves). Families are grouped by their distinct ranking values
first, so every metric is a pass over those values rather than a sort per replicate: a
county's test month of 150,000 families has a few hundred distinct scores.

Ties are never broken in a ranking's favour: a list that must cut through families with
the same value takes each of them with the same chance, so its expected hits are counted.
With unit weights the AUCs equal scikit-learn's `roc_auc_score` and
`average_precision_score` (tests say so).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ranked:
    """A ranking's families grouped by distinct value, highest first."""

    value_index: np.ndarray  # per family: the position of its value among the distinct values, highest first
    values: int  # how many distinct values

    @classmethod
    def of(cls, ranking: np.ndarray) -> Ranked:
        distinct, inverse = np.unique(-np.asarray(ranking, dtype=float), return_inverse=True)
        return cls(inverse.ravel(), len(distinct))


def ranking_metrics(ranked: Ranked, escalated: np.ndarray, weights: np.ndarray, list_size: float) -> tuple[float, float, float, float]:
    """(ROC AUC, PR AUC, precision at the list size, recall at the list size) of a ranking."""
    positives = np.bincount(ranked.value_index, weights=weights * escalated, minlength=ranked.values)
    everyone = np.bincount(ranked.value_index, weights=weights, minlength=ranked.values)
    negatives = everyone - positives
    total_pos, total_neg = positives.sum(), negatives.sum()
    nan = float("nan")
    below = total_neg - np.cumsum(negatives)
    roc = float((positives * (below + 0.5 * negatives)).sum() / (total_pos * total_neg)) if total_pos and total_neg else nan
    taken = np.cumsum(everyone)
    precision_at = np.divide(np.cumsum(positives), taken, out=np.zeros_like(taken), where=taken > 0)
    pr = float((positives * precision_at).sum() / total_pos) if total_pos else nan
    hits = float((positives * _share_taken(everyone, list_size)).sum())
    return roc, pr, hits / list_size if list_size else nan, hits / total_pos if total_pos else nan


def _share_taken(everyone: np.ndarray, list_size: float) -> np.ndarray:
    """Per distinct value, the share of its families a list of `list_size` takes."""
    before = np.cumsum(everyone) - everyone
    return np.clip(np.divide(list_size - before, everyone, out=np.zeros_like(everyone), where=everyone > 0), 0.0, 1.0)


def selected_share(ranked: Ranked, list_size: float) -> np.ndarray:
    """Per family, the chance a list of `list_size` from the top of the ranking takes it."""
    everyone = np.bincount(ranked.value_index, minlength=ranked.values).astype(float)
    return _share_taken(everyone, list_size)[ranked.value_index]


def wilson(successes: np.ndarray | float, trials: np.ndarray | float, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of a rate: honest for small groups and rates near 0 or 1."""
    successes, trials = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    safe = np.where(trials > 0, trials, 1.0)
    rate = successes / safe
    centre = (rate + z * z / (2 * safe)) / (1 + z * z / safe)
    half = z * np.sqrt(rate * (1 - rate) / safe + z * z / (4 * safe * safe)) / (1 + z * z / safe)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(trials > 0, low, np.nan), np.where(trials > 0, high, np.nan)
