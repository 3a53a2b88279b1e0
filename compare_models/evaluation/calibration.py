"""Top-label calibration of one model's probabilities: the expected calibration error (the
comparison's `Calibration`) and the per-bin accuracy and confidence the report's reliability
diagram draws. From arrays, with scikit-learn's `calibration_curve`."""

from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve

from compare_models.evaluation.validation import check_labels, check_probabilities


def calibration_bins(correct: np.ndarray, confidence: np.ndarray, n_bins: int) -> tuple:
    """Per-bin accuracy and mean confidence (non-empty bins), counts of all bins, and ECE."""
    accuracy, mean_conf = calibration_curve(
        correct.astype(int), confidence, n_bins=n_bins, strategy="uniform"
    )
    # Bin counts on the same uniform edges. np.histogram would put a confidence lying exactly
    # on an inner edge into the bin to its right, while calibration_curve's searchsorted puts
    # it into the bin to its left, so counts are taken with calibration_curve's own rule to
    # keep the bins aligned.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], confidence), minlength=n_bins)
    weights = counts[counts > 0] / confidence.size
    ece = float(np.sum(weights * np.abs(accuracy - mean_conf)))
    return accuracy, mean_conf, counts, ece


def expected_calibration_error(
    y_true: np.ndarray, y_prob: np.ndarray, *, n_bins: int = 15
) -> float:
    """Top-label expected calibration error with uniform bins.

    ECE = sum over non-empty bins of ``count / n * |accuracy - mean confidence|``, where the
    confidence of an image is its largest predicted probability and "accuracy" is whether the
    arg-max is the true label. Per-bin accuracy and confidence come from
    ``sklearn.calibration.calibration_curve(strategy="uniform")``.

    Args:
        y_true: True labels, shape ``(n,)``, integers ``0..k-1``.
        y_prob: Predicted probabilities, shape ``(n, k)``, in ``[0, 1]``.
        n_bins: Number of equal-width confidence bins on ``[0, 1]``.

    Returns:
        The ECE, between 0 (perfectly calibrated) and 1.

    Raises:
        ValueError: On invalid shapes, labels, non-finite or out-of-range probabilities, or
            ``n_bins < 1``.
    """
    check_bins(n_bins)
    prob = np.asarray(y_prob)
    k = prob.shape[1] if prob.ndim == 2 else 0
    if k == 0:
        raise ValueError(f"y_prob must have shape (n, k), got shape {prob.shape}")
    labels = check_labels(y_true, k)
    p = check_probabilities(prob, labels.size, k, unit_interval=True)
    correct = p.argmax(axis=1) == labels
    return calibration_bins(correct, p.max(axis=1), n_bins)[3]


def check_bins(n_bins: int) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
