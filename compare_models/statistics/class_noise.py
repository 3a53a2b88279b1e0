"""How far a class's recall moves between two runs of a recipe, estimated from one run's own
test predictions, for the nights when the track's history is too short to measure it.

A weak model's recalls swing between seeds further than its accuracy does: it predicts a few
classes much more often than the others, and which ones changes with the seed. Two things move
a class's recall from one run to the next, and one run shows both:

* **its images near the boundary**: each test image's predicted probabilities say how often
  another run would call it otherwise. A draw predicts every image by sampling its class from
  the run's probabilities (Gumbel-max), so a class of few or uncertain images moves further;
* **the model's bias towards some classes**: the spread tau, across classes, of
  ln(how often the run predicts the class / how often it occurs in the test set). A draw adds a
  random offset ~ N(0, tau^2) to each class's log-probability for every image at once, so a
  run that favours some classes strongly gets draws that favour others. The assumption: another
  seed's bias lands as far from the data's class balance as this run's did, in a random
  direction.

Pairs of such draws give the distribution of the difference of two runs' recalls for each
class; the band is its `coverage` quantile of the absolute difference. `benchmarks/studies/
growing_data.py` sets it beside the band that seed replicas give (docs/benchmarks.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Pairs of simulated runs behind each class's band.
PAIRS = 400


def bias_spread(probs: np.ndarray, y_true: np.ndarray) -> float:
    """tau: the standard deviation, across classes, of ln(predicted share / true share)."""
    k = probs.shape[1]
    predicted = np.bincount(probs.argmax(axis=1), minlength=k) + 0.5
    actual = np.bincount(y_true, minlength=k) + 0.5
    ratio = np.log(predicted / predicted.sum()) - np.log(actual / actual.sum())
    return float(ratio.std(ddof=1)) if k > 1 else 0.0


@dataclass(frozen=True)
class ClassBands:
    """Each class's band (a fraction) and the bias spread tau the draws used."""

    widths: dict[str, float]
    tau: float


def class_recall_bands(
    probs: np.ndarray,
    y_true: np.ndarray,
    class_names: Sequence[str],
    *,
    coverage: float,
    seed: int = 0,
    pairs: int = PAIRS,
) -> ClassBands:
    """Each class's band for the difference of two runs' recalls (a fraction), from the
    run's test probabilities `probs` (images x classes) and labels `y_true`."""
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    n, k = probs.shape
    if k != len(class_names) or len(y_true) != n:
        raise ValueError(
            f"{n} test images with {k} class probabilities, {len(y_true)} labels and "
            f"{len(class_names)} class names do not match"
        )
    rng = np.random.default_rng(seed)
    log_p = np.log(np.clip(probs, 1e-12, 1.0))
    tau = bias_spread(probs, y_true)
    counts = np.maximum(np.bincount(y_true, minlength=k), 1)
    differences = np.empty((pairs, k))
    for i in range(pairs):
        recalls = []
        for _ in range(2):
            offset = rng.normal(0.0, tau, size=k)
            gumbel = rng.gumbel(size=(n, k))
            predicted = (log_p + offset + gumbel).argmax(axis=1)
            hits = np.bincount(y_true[predicted == y_true], minlength=k)
            recalls.append(hits / counts)
        differences[i] = recalls[0] - recalls[1]
    widths = np.quantile(np.abs(differences), coverage, axis=0)
    return ClassBands(
        widths={name: float(w) for name, w in zip(class_names, widths, strict=True)}, tau=tau
    )
