"""The typed results of the evaluation stage: a model's full evaluation (`Evaluation`, what
`metrics.evaluate_predictions` returns and the run stores as `metrics/<model>.json`) and its
headline test metrics (`ModelMetrics`, which the run's record keeps; `metrics.model_metrics`
builds it from the evaluation)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    """Fields a newer writer added are ignored on reading."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Scalars(_Part):
    """The headline test metrics, shared by `ModelMetrics` and `Evaluation`."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    roc_auc_macro: float | None
    roc_auc_micro: float | None

    def scalar(self, name: str) -> float | None:
        """The headline metric `name` (one of `SCALAR_METRICS`), e.g. for a table's columns."""
        if name not in SCALAR_METRICS:
            raise KeyError(f"{name!r} is not a scalar metric; expected one of {SCALAR_METRICS}")
        return getattr(self, name)


#: Headline metrics, in the order they appear in summaries and comparisons.
SCALAR_METRICS: tuple[str, ...] = tuple(_Scalars.model_fields)


class ModelMetrics(_Scalars):
    """A model's scalar test metrics (`compare_models.evaluation.records.SCALAR_METRICS`)."""

    recall_per_class: list[float] | None = Field(
        default=None, description="recall of each class, in class order (None in older records)"
    )
    support_per_class: list[int] | None = Field(
        default=None,
        description="test images of each class, in class order (None in older records): the "
        "count behind each recall, whose sampling noise the learning curve separates",
    )


class ClassMetrics(_Part):
    """One class's row of the per-class table (stored under the key `class`)."""

    class_name: str = Field(alias="class")
    precision: float
    recall: float
    f1: float
    support: int = Field(description="test samples of the class")
    auc: float | None = Field(
        description="one-vs-rest ROC AUC; None when the test labels lack the class (or are all it)"
    )


class RocCurve(_Part):
    """A one-vs-rest ROC curve, thinned to at most `metrics.MAX_ROC_POINTS` real points."""

    fpr: list[float]
    tpr: list[float]


class Evaluation(_Scalars):
    """A model's full test-set evaluation (`metrics.evaluate_predictions`): the scalars of
    `SCALAR_METRICS`, the per-class table, the ROC curves, the confusion matrix and
    scikit-learn's classification report. Stored as JSON by `model_dump(mode="json",
    by_alias=True)`; files written before this record existed read as it."""

    n_samples: int
    class_names: list[str]
    per_class: list[ClassMetrics] = Field(description="one row per class, in class order")
    roc_curves: dict[str, RocCurve] = Field(
        description="per class with a defined AUC (by name), and `micro`"
    )
    confusion_matrix: list[list[int]] = Field(description="counts: rows true, columns predicted")
    confusion_matrix_normalized: list[list[float]] = Field(
        description="each row divided by its true class's count (a row of 0 for an absent class)"
    )
    classification_report: str
