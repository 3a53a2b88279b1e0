"""Checks for labels, probabilities and class names, done once at the boundary.

Every metric, comparison and diagnostic calls these first (the role of scikit-learn's
private ``_check_targets``), so the same input is accepted or refused everywhere, with the
same message saying what was wrong and what was expected. Each check returns a clean array
(``int64`` labels, ``float64`` probabilities) so callers never re-check.

Decisions on cases that earlier copies of these checks treated differently:

* Boolean labels are refused: a bool is not a class index, and NumPy silently treats
  ``True`` as class 1.
* Integer-valued float labels (``3.0``) are accepted and converted to ``int64``, as
  scikit-learn's ``type_of_target`` treats them as multiclass; non-integer floats, NaN and
  infinity are refused.
* Class names: at least 2 (a classifier needs two or more classes), a sequence (not one
  string), each a non-empty string, all unique.
* Probabilities must be integer or float (not bool, complex or text), of shape ``(n, k)``
  and finite. They need not sum to one (ranking metrics only need an order and arg-max
  ignores scaling); the ``[0, 1]`` range is checked only where it matters (calibration),
  with ``unit_interval=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def check_class_names(class_names: Sequence[str]) -> list[str]:
    """Return the class names as a list, refusing anything that is not 2+ unique names.

    Names become dict keys and table labels, so a duplicate would silently merge two
    classes and an empty name would be an invisible row.

    Raises:
        ValueError: If class_names is a single string or not a sequence, has fewer than 2
            entries, or holds a non-string, empty or duplicate name.
    """
    if isinstance(class_names, str) or not isinstance(class_names, Sequence | np.ndarray):
        raise ValueError(
            "class_names must be a sequence of names (one string per class), "
            f"got {type(class_names).__name__}"
        )
    names = list(class_names)
    if len(names) < 2:
        raise ValueError(f"class_names must name at least 2 classes, got {len(names)}")
    bad = [name for name in names if not isinstance(name, str) or not name.strip()]
    if bad:
        raise ValueError(f"class_names must be non-empty strings, got {bad[:10]}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"class_names must be unique, got duplicates {duplicates}")
    return [str(name) for name in names]


def check_labels(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    """Return y_true as a 1-D ``int64`` array of class indices in ``0..n_classes-1``.

    Raises:
        ValueError: If y_true is not 1-D, is empty, is boolean, holds non-integer, NaN or
            infinite values, has a non-numeric dtype, or a label is out of range.
    """
    labels = np.asarray(y_true)
    if labels.ndim != 1:
        raise ValueError(
            f"y_true must be 1-D with shape (n,), got shape {labels.shape}; "
            "flatten column vectors with y_true.ravel()"
        )
    if labels.size == 0:
        raise ValueError("y_true is empty; expected at least 1 sample")
    kind = labels.dtype.kind
    if kind == "b":
        raise ValueError(
            "y_true has dtype bool; expected integer class indices 0..k-1 "
            "(a bool is not a class index: True would silently count as class 1)"
        )
    if kind == "f":
        if not np.isfinite(labels).all():
            raise ValueError("y_true contains NaN or infinity; expected integer class indices")
        fractional = labels[labels != np.round(labels)]
        if fractional.size:
            raise ValueError(
                f"y_true has non-integer values {fractional[:5].tolist()}; "
                "expected integer class indices 0..k-1"
            )
    elif kind not in "iu":
        raise ValueError(f"y_true must hold integer class indices, got dtype {labels.dtype}")
    # Range is checked before the cast so a huge float cannot wrap around into range.
    out_of_range = labels[(labels < 0) | (labels >= n_classes)]
    if out_of_range.size:
        raise ValueError(
            f"y_true labels must lie in range 0..{n_classes - 1} (one per class name), "
            f"got out-of-range values {sorted(set(out_of_range.tolist()))[:10]}"
        )
    return labels.astype(np.int64)


def check_probabilities(
    y_prob: np.ndarray,
    n_samples: int,
    n_classes: int,
    *,
    name: str = "y_prob",
    unit_interval: bool = False,
) -> np.ndarray:
    """Return y_prob as a finite ``float64`` array of shape ``(n_samples, n_classes)``.

    Args:
        y_prob: Predicted probabilities (or scores), one row per sample.
        n_samples: Expected number of rows (``len(y_true)``).
        n_classes: Expected number of columns (``len(class_names)``).
        name: How messages name the input, e.g. ``"y_prob"`` or ``"probs['cnn']"``.
        unit_interval: Also require every value to lie in ``[0, 1]`` (calibration needs
            probabilities, not logits).

    Raises:
        ValueError: If the dtype is not integer or float, the shape is not
            ``(n_samples, n_classes)``, a value is NaN or infinite, or (with
            unit_interval) outside ``[0, 1]``.
    """
    probs = np.asarray(y_prob)
    if probs.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric (integer or float), got dtype {probs.dtype}")
    if probs.ndim != 2:
        raise ValueError(f"{name} must be 2-D with shape (n, k), got shape {probs.shape}")
    if probs.shape != (n_samples, n_classes):
        raise ValueError(
            f"{name} has shape {probs.shape}; expected (n, k) = ({n_samples}, {n_classes}) "
            "to match len(y_true) and len(class_names)"
        )
    probs = probs.astype(np.float64, copy=False)
    finite = np.isfinite(probs)
    if not finite.all():
        raise ValueError(
            f"{name} contains NaN or infinite values in {int((~finite).any(axis=1).sum())} "
            "row(s); "
            "expected finite probabilities"
        )
    if unit_interval and (probs.min() < 0.0 or probs.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1], got range {probs.min():.3g}..{probs.max():.3g} "
            "(pass softmax outputs, not logits)"
        )
    return probs


def check_predictions(
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    n_classes: int,
    *,
    min_models: int = 1,
    unit_interval: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check labels and every model's probabilities on the same test samples.

    Args:
        y_true: True labels, shape ``(n,)`` (see :func:`check_labels`).
        probs: Model name -> probabilities of shape ``(n, n_classes)``.
        n_classes: Number of classes ``k`` (the length of the class-name list).
        min_models: Smallest acceptable number of models.
        unit_interval: Passed to :func:`check_probabilities`.

    Returns:
        ``(labels, probs)``: ``int64`` labels and a dict of ``float64`` arrays in the given
        model order.

    Raises:
        ValueError: On bad labels or probabilities, if probs is not a mapping, has fewer
            than min_models models, or a model name is not a non-empty string.
    """
    labels = check_labels(y_true, n_classes)
    if not isinstance(probs, Mapping):
        raise ValueError(
            "probs must be a mapping of model name -> (n, k) probabilities, "
            f"got {type(probs).__name__}"
        )
    if len(probs) < min_models:
        raise ValueError(
            f"need at least {min_models} model(s) to compare, got {len(probs)}: {list(probs)}"
        )
    clean: dict[str, np.ndarray] = {}
    for model, prob in probs.items():
        if not isinstance(model, str) or not model:
            raise ValueError(f"model names must be non-empty strings, got {model!r}")
        clean[model] = check_probabilities(
            prob, labels.size, n_classes, name=f"probs[{model!r}]", unit_interval=unit_interval
        )
    return labels, clean


def check_correct(correct: np.ndarray, name: str) -> np.ndarray:
    """Return a 1-D per-sample "was the model right" vector as bool.

    Here booleans are the expected input (unlike labels); 0/1 integers or floats are
    accepted and converted.

    Raises:
        ValueError: If the vector is not 1-D or holds anything but booleans or 0/1.
    """
    c = np.asarray(correct)
    if c.ndim != 1:
        raise ValueError(f"{name} must be 1-D of shape (n,), got shape {c.shape}")
    if c.dtype != np.bool_:
        if c.dtype.kind not in "iuf" or not np.isin(c, (0, 1)).all():
            raise ValueError(f"{name} must be booleans (or 0/1), got dtype {c.dtype}")
        c = c.astype(bool)
    return c


__all__ = [
    "check_class_names",
    "check_correct",
    "check_labels",
    "check_predictions",
    "check_probabilities",
]
