"""Turn a model's predicted probabilities into a JSON-ready metrics record.

Evaluation is kept apart from training and orchestration on purpose: this
module takes plain NumPy arrays and returns a typed record
(:class:`~compare_models.evaluation.records.Evaluation`), so it can be
unit-tested without Prefect, TensorFlow or S3, and the same record can be
written to JSON, rendered into a report and compared across models.

Every number comes from scikit-learn. The only arithmetic done here is
bookkeeping: choosing the predicted class (``argmax``), picking which columns
have a defined ROC AUC and thinning ROC curves so the JSON stays small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from sklearn.preprocessing import label_binarize

from compare_models.evaluation.records import (
    SCALAR_METRICS,
    ClassMetrics,
    Evaluation,
    ModelMetrics,
    RocCurve,
)
from compare_models.evaluation.validation import (
    check_class_names,
    check_labels,
    check_probabilities,
)

#: Most points kept per ROC curve. A 10 000-sample test set can produce a
#: curve with thousands of points per class; 200 draws the same picture.
MAX_ROC_POINTS = 200

#: Columns of the per-class table, in order.
PER_CLASS_COLUMNS: tuple[str, ...] = ("class", "precision", "recall", "f1", "support", "auc")


# --------------------------------------------------------------------------
# Small helpers that keep evaluate_predictions readable.
# --------------------------------------------------------------------------


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One-vs-rest indicator matrix of shape (n, n_classes).

    label_binarize collapses the two-class case to a single column; the
    other column is restored so that column j always means "is class j".
    """
    binarized = label_binarize(labels, classes=list(range(n_classes)))
    if n_classes == 2:
        binarized = np.hstack([1 - binarized, binarized])
    return binarized


def _has_both_outcomes(column: np.ndarray) -> bool:
    """ROC AUC for a class needs at least one positive and one negative."""
    return bool(column.min() == 0 and column.max() == 1)


def _thin_curve(fpr: np.ndarray, tpr: np.ndarray, max_points: int = MAX_ROC_POINTS) -> RocCurve:
    """Keep at most max_points evenly spaced points, always the first and last.

    Points are selected, not interpolated, so every kept point is a real
    operating point of the classifier and the curve still starts at (0, 0)
    and ends at (1, 1).
    """
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return RocCurve(fpr=[float(x) for x in fpr], tpr=[float(x) for x in tpr])


def _optional_float(value: Any) -> float | None:
    """float() that keeps None, so undefined metrics stay JSON null."""
    return None if value is None else float(value)


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def evaluate_predictions(
    y_true: np.ndarray, y_prob: np.ndarray, class_names: Sequence[str]
) -> Evaluation:
    """Compute classification metrics from true labels and class probabilities.

    Args:
        y_true: integer labels, shape (n,), values in 0..k-1.
        y_prob: predicted scores/probabilities, shape (n, k).
        class_names: k unique names; position j names label j.

    Returns:
        An :class:`~compare_models.evaluation.records.Evaluation`:
        ``n_samples``, ``class_names``, the scalars in :data:`SCALAR_METRICS`,
        ``per_class``, ``roc_curves``, ``confusion_matrix``,
        ``confusion_matrix_normalized`` and ``classification_report``
        (``model_dump(mode="json", by_alias=True)`` is its stored JSON).

        ROC AUC is undefined for a class that is absent from y_true (or is
        every sample); such a class gets ``auc`` None, is left out of
        ``roc_auc_macro`` and has no entry in ``roc_curves``. If no class has
        a defined AUC, ``roc_auc_macro`` is None. ``roc_auc_micro`` pools all
        one-vs-rest decisions and is always defined. Precision/recall/F1
        averages, by contrast, follow scikit-learn with ``labels=range(k)``:
        an absent class scores 0 and still counts in the macro average, so a
        test set missing a class is visibly penalised rather than hidden.

    Raises:
        ValueError: on empty input, mismatched shapes, labels outside 0..k-1 (or
            boolean/non-integer), NaN/infinite scores or bad class names; see
            :mod:`compare_models.evaluation.validation`.
    """
    names = check_class_names(class_names)
    n_classes = len(names)
    labels = check_labels(y_true, n_classes)
    probs = check_probabilities(y_prob, len(labels), n_classes)

    class_ids = list(range(n_classes))
    y_pred = probs.argmax(axis=1)
    indicator = _one_hot(labels, n_classes)

    # Threshold metrics: sklearn computes the averages, zero_division=0 keeps
    # classes that are never predicted (or absent) from producing warnings.
    averaged: dict[str, float] = {}
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, y_pred, labels=class_ids, average=average, zero_division=0
        )
        averaged[f"precision_{average}"] = float(precision)
        averaged[f"recall_{average}"] = float(recall)
        averaged[f"f1_{average}"] = float(f1)

    # Ranking metrics: one-vs-rest AUC only for classes where it is defined.
    defined = [j for j in class_ids if _has_both_outcomes(indicator[:, j])]
    per_class_auc: list[float | None] = [None] * n_classes
    roc_auc_macro: float | None = None
    if defined:
        aucs = roc_auc_score(indicator[:, defined], probs[:, defined], average=None)
        for j, auc in zip(defined, np.atleast_1d(aucs), strict=True):
            per_class_auc[j] = float(auc)
        roc_auc_macro = float(
            roc_auc_score(indicator[:, defined], probs[:, defined], average="macro")
        )
    roc_auc_micro = float(roc_auc_score(indicator, probs, average="micro"))

    roc_curves: dict[str, RocCurve] = {}
    for j in defined:
        fpr, tpr, _ = roc_curve(indicator[:, j], probs[:, j])
        roc_curves[names[j]] = _thin_curve(fpr, tpr)
    fpr, tpr, _ = roc_curve(indicator.ravel(), probs.ravel())
    roc_curves["micro"] = _thin_curve(fpr, tpr)

    report_kwargs = dict(labels=class_ids, target_names=names, zero_division=0)
    report_dict = classification_report(labels, y_pred, output_dict=True, **report_kwargs)
    per_class = [
        ClassMetrics(
            class_name=name,
            precision=float(report_dict[name]["precision"]),
            recall=float(report_dict[name]["recall"]),
            f1=float(report_dict[name]["f1-score"]),
            support=int(report_dict[name]["support"]),
            auc=per_class_auc[j],
        )
        for j, name in enumerate(names)
    ]

    counts = confusion_matrix(labels, y_pred, labels=class_ids)
    normalized = confusion_matrix(labels, y_pred, labels=class_ids, normalize="true")

    return Evaluation(
        n_samples=int(len(labels)),
        class_names=names,
        accuracy=float(accuracy_score(labels, y_pred)),
        **averaged,
        roc_auc_macro=roc_auc_macro,
        roc_auc_micro=roc_auc_micro,
        per_class=per_class,
        roc_curves=roc_curves,
        confusion_matrix=counts.astype(int).tolist(),
        confusion_matrix_normalized=normalized.astype(float).tolist(),
        classification_report=classification_report(labels, y_pred, digits=4, **report_kwargs),
    )


def _scalars(evaluation: Evaluation) -> dict[str, float | None]:
    """The evaluation's headline metrics by name, in :data:`SCALAR_METRICS` order."""
    return {key: evaluation.scalar(key) for key in SCALAR_METRICS}


def model_metrics(evaluation: Evaluation) -> ModelMetrics:
    """The headline metrics the run's record keeps, from an :func:`evaluate_predictions`
    record: the scalars of :data:`SCALAR_METRICS` and each class's recall and test count, in class
    order."""
    return ModelMetrics(
        **_scalars(evaluation),
        recall_per_class=[row.recall for row in evaluation.per_class],
        support_per_class=[row.support for row in evaluation.per_class],
    )


def metrics_tables(evaluation: Evaluation) -> dict[str, pd.DataFrame]:
    """Flatten an evaluation into tables that are natural to write as CSV.

    Returns:
        ``summary``: one row with ``n_samples`` and the scalar metrics;
        ``per_class``: one row per class (class, precision, recall, f1,
        support, auc); ``confusion_matrix``: counts with class names as
        index ("true") and columns ("predicted").
    """
    summary = pd.DataFrame([{"n_samples": evaluation.n_samples, **_scalars(evaluation)}])
    per_class = pd.DataFrame(
        [row.model_dump(by_alias=True) for row in evaluation.per_class],
        columns=list(PER_CLASS_COLUMNS),
    )
    names = list(evaluation.class_names)
    matrix = pd.DataFrame(
        evaluation.confusion_matrix,
        index=pd.Index(names, name="true"),
        columns=pd.Index(names, name="predicted"),
    )
    return {"summary": summary, "per_class": per_class, "confusion_matrix": matrix}


def comparison_table(metrics_by_model: Mapping[str, Evaluation]) -> pd.DataFrame:
    """One row per model, one column per headline metric, for side-by-side reading.

    Row order follows the mapping's order so the caller controls it.
    """
    rows = {
        model: {key: _optional_float(value) for key, value in _scalars(evaluation).items()}
        for model, evaluation in metrics_by_model.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(SCALAR_METRICS))
    table.index.name = "model"
    return table.astype(float)
