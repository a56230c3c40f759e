"""The scorecard's estimator: logistic regression whose coefficients cannot be negative.

Its own module because it is a scikit-learn estimator, and scikit-learn (with the parts of
SciPy and pandas it loads) added 1.3 s to importing the pipeline: `models.scorecard` imports this
only when a model is trained, so a run that neither orders its lists by the model nor asks for
it never loads them.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin


def weighted_patterns(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Families with the same indicators as one row: (patterns, families, escalated among them).
    The likelihood summed over a pattern's families is the pattern's, weighted: a county's
    100,000 family-months become a few thousand rows to fit."""
    # indicators: a row's pattern is one integer (0/1 tested by comparison: np.isin sorts, 2.5x slower)
    if X.shape[1] < 63 and ((X == 0.0) | (X == 1.0)).all():
        _, first, inverse = np.unique(X @ (2.0 ** np.arange(X.shape[1])), return_index=True, return_inverse=True)
        patterns = X[first]
    else:
        patterns, inverse = np.unique(X, axis=0, return_inverse=True)
    return patterns, np.bincount(inverse.ravel()).astype(float), np.bincount(inverse.ravel(), weights=y)


class NonNegativeLogistic(ClassifierMixin, BaseEstimator):
    """Logistic regression, penalised as scikit-learn's (C), whose coefficients cannot be
    negative: a need can raise a family's place or leave it, never lower it. scikit-learn's
    LogisticRegression has no bound on coefficients, so this fits with scipy's L-BFGS-B."""

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        self.classes_ = np.array([0, 1])
        n_features = X.shape[1]
        patterns, families, escalated = weighted_patterns(X, y)

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:n_features], theta[n_features]
            z = patterns @ w + b
            residual = families * expit(z) - escalated
            value = float((families * np.logaddexp(0.0, z) - escalated * z).sum() + 0.5 / self.C * w @ w)
            return value, np.append(patterns.T @ residual + w / self.C, residual.sum())

        bounds = [(0.0, None)] * n_features + [(None, None)]
        fitted = minimize(loss, np.zeros(n_features + 1), jac=True, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-12, "gtol": 1e-7, "maxiter": 1000})
        self.coef_, self.intercept_ = fitted.x[None, :n_features], fitted.x[n_features:]
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=float) @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X) -> np.ndarray:
        p = expit(self.decision_function(X))
        return np.column_stack([1 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)
