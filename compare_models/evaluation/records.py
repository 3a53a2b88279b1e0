"""The typed result of the evaluation stage that the run's record stores: a model's headline
test metrics (`metrics.model_metrics` builds it from `metrics.evaluate_predictions`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    """Fields a newer writer added are ignored on reading."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ModelMetrics(_Part):
    """A model's scalar test metrics (`compare_models.evaluation.metrics.SCALAR_METRICS`)."""

    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    roc_auc_macro: float | None
    roc_auc_micro: float | None
    recall_per_class: list[float] | None = Field(
        default=None, description="recall of each class, in class order (None in older records)"
    )
