"""What a report says about its run before any result: the title and the run's settings, and
each model's result as the report renders it. Read from the run's record."""

from __future__ import annotations

import json
from typing import Any

from compare_models.evaluation.records import Evaluation
from compare_models.models import registry
from compare_models.report.render import ModelResult
from compare_models.runs.record import RunRecord


def report_title(record: RunRecord) -> str:
    return f"compare-models {record.run_id}" + (
        " (SYNTHETIC DATA)" if record.dataset.synthetic else ""
    )


def run_info(record: RunRecord) -> dict[str, Any]:
    """The settings a report shows (plain values, escaped by the renderer)."""
    params, dataset = record.params, record.dataset
    storage = dataset.storage()
    weights = [m for m in params.models if registry.get(m).takes_weights]
    return {
        "run_id": record.run_id,
        "data_source": dataset.source,
        "data_source_kind": "synthetic" if dataset.synthetic else "archive",
        "dataset": dataset.name,
        "archive_sha256": dataset.archive_sha256,
        "split_sizes": json.dumps(dataset.sizes),
        "image_size": f"{dataset.image_size}x{dataset.image_size}",
        "stored_as": f"{storage['stored as']}, {storage['stored MiB']} MiB",
        "repaired": "; ".join(f"{k}: {why}" for k, why in dataset.repaired.items()) or "-",
        "input_size": f"{params.train.input_size}x{params.train.input_size}"
        if params.train.input_size
        else "the image size",
        "epochs": params.epochs_text(),
        "batch_size": params.train.batch_size,
        "optimizer": params.train.optimizer,
        "learning_rate": params.train.learning_rate,
        "lr_schedule": params.train.lr_schedule,
        "augment": params.train.augment,
        "per_model_training": params.per_model_training() or "-",
        "resnet_weights": params.resnet_weights if weights else "-",
        "preset": params.preset or "-",
        "scale": record.scale or "-",
        "time_budget": f"{params.execution.time_budget_minutes:g} min"
        if params.execution.time_budget_minutes
        else "-",
        "stopped_by_budget": "; ".join(f"{m}: {note}" for m, note in record.budget.stopped.items())
        or "-",
        "mlflow": record.mlflow.describe() if record.mlflow else "off",
    }


def model_results(record: RunRecord, metrics: dict[str, Evaluation]) -> list[ModelResult]:
    """Each model's result for the renderer; `metrics` are the full evaluation metrics (with
    the per-class table, confusion matrix and ROC curves the record does not repeat)."""
    return [
        ModelResult(
            name=m,
            history=record.models[m].history,
            metrics=metrics[m],
            train_seconds=record.models[m].fit_seconds,
            parameters=record.models[m].parameters,
        )
        for m in record.params.models
    ]
