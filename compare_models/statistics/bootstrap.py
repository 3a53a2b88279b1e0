"""The paired percentile bootstrap over test images: every resample draws one set of image
indices and scores every model on it, in chunks that bound memory whatever n is. The index sets
depend only on ``(n, n_resamples, seed)``, so every model and every pair get the same resamples.
Used by `compare_models.statistics.paired`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, recall_score

from compare_models.statistics.records import Interval

# About one million gathered indices per bootstrap chunk (~16 MB for the index array plus the
# gathered codes). Chunks of this size were faster than larger ones (they stay in cache; see
# docs/benchmarks.md) and bound memory regardless of n.
_CHUNK_ELEMENTS = 1_000_000


@dataclass(frozen=True)
class Replicates:
    """Per-resample confusion counts for several models on the same resampled images.

    Attributes:
        n: Number of test images (each resample also has n images).
        support: ``(R, k)`` images of each class in each resample.
        predicted: ``(M, R, k)`` images predicted as each class, per model.
        hits: ``(M, R, k)`` correctly predicted images of each class (true positives).
    """

    n: int
    support: np.ndarray
    predicted: np.ndarray
    hits: np.ndarray

    def accuracy(self, model: int) -> np.ndarray:
        return self.hits[model].sum(axis=1) / self.n

    def f1_macro(self, model: int) -> np.ndarray:
        return macro_f1_from_counts(self.support, self.predicted[model], self.hits[model])

    def recall(self, model: int) -> np.ndarray:
        """Per-class recall, NaN where a resample holds no image of the class."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.support > 0, self.hits[model] / self.support, np.nan)


def macro_f1_from_counts(
    support: np.ndarray, predicted: np.ndarray, hits: np.ndarray
) -> np.ndarray:
    """Macro-F1 over the last axis from per-class counts.

    Computed by hand because it runs on thousands of resamples at once, which sklearn's
    ``f1_score`` cannot do without a Python loop. F1 = 2 TP / (2 TP + FP + FN)
    = 2 TP / (support + predicted), and 0 for a class neither present nor predicted, which
    is ``f1_score(average="macro", labels=range(k), zero_division=0)`` (tested).
    """
    denominator = support + predicted
    f1 = np.divide(2.0 * hits, denominator, out=np.zeros(hits.shape), where=denominator > 0)
    return f1.mean(axis=-1)


def bootstrap(
    y_true: np.ndarray, preds: Sequence[np.ndarray], n_classes: int, n_resamples: int, seed: int
) -> Replicates:
    """Paired bootstrap over test images, vectorised over resamples.

    Resampling is done by hand rather than with ``scipy.stats.bootstrap`` because every model,
    every pair and every per-class recall must be evaluated on the *same* index sets, and
    that has to take well under a second for n = 10,000 and 2,000 resamples.

    Each image is reduced to the code of its outcome pattern (true label, each model's
    prediction); there are at most ``min(n, k**(M+1))`` distinct patterns and usually a few
    hundred. Index chunks of shape ``(chunk, n)`` drawn with ``numpy.random.default_rng(seed)``
    are mapped to pattern codes and counted with one ``np.bincount`` over
    ``resample * n_patterns + code``; a small matrix product of those counts with the
    patterns' indicator columns gives every model's per-class counts in every resample.
    """
    n = y_true.size
    n_models = len(preds)
    patterns, code = np.unique(np.column_stack([y_true, *preds]), axis=0, return_inverse=True)
    code = code.reshape(-1)
    n_patterns = patterns.shape[0]
    eye = np.eye(n_classes)
    truth = eye[patterns[:, 0]]
    columns = [truth]
    columns += [eye[patterns[:, 1 + j]] for j in range(n_models)]
    columns += [truth * (patterns[:, [1 + j]] == patterns[:, [0]]) for j in range(n_models)]
    indicators = np.hstack(columns)  # (n_patterns, k * (1 + 2M))

    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // n))
    counts = np.empty((n_resamples, indicators.shape[1]))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        idx = rng.integers(0, n, size=(size, n))
        flat = code[idx]
        flat += (np.arange(size) * n_patterns)[:, None]
        per_pattern = np.bincount(flat.ravel(), minlength=size * n_patterns)
        counts[start : start + size] = per_pattern.reshape(size, n_patterns) @ indicators

    k = n_classes
    support = counts[:, :k]
    predicted = counts[:, k : k * (1 + n_models)].reshape(n_resamples, n_models, k)
    hits = counts[:, k * (1 + n_models) :].reshape(n_resamples, n_models, k)
    return Replicates(
        n=n,
        support=support,
        predicted=predicted.transpose(1, 0, 2),
        hits=hits.transpose(1, 0, 2),
    )


def quantiles(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0, ignoring NaN (undefined) resamples.

    A column with no defined resample (a class absent from the test set) gets ``(0, 0)``.
    """
    tail = (1.0 - confidence) / 2.0
    probs = [tail, 1.0 - tail]
    if not np.isnan(values).any():
        low, high = np.quantile(values, probs, axis=0)
        return low, high
    low = np.zeros(values.shape[1:])
    high = np.zeros(values.shape[1:])
    defined = ~np.isnan(values).all(axis=0)
    if defined.any():
        low[defined], high[defined] = np.nanquantile(values[:, defined], probs, axis=0)
    return low, high


def interval(estimate: float, replicates: np.ndarray, confidence: float) -> Interval:
    low, high = quantiles(replicates, confidence)
    return Interval(estimate=float(estimate), ci_low=float(low), ci_high=float(high))


def point_estimates(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    labels = list(range(n_classes))
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(
            f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)
        ),
        "recall": recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0),
    }
