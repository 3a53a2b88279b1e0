"""Evaluation tasks: per-model metrics from the stored test predictions."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from compare_models.data.dataset import DatasetRef
from compare_models.publish import evaluate_model, test_labels
from tasks._store import open_store


@task(name="evaluate", task_run_name="evaluate-{model}")
def evaluate(run_id: str, model: str, predictions_key: str, dataset: DatasetRef) -> dict[str, Any]:
    """scikit-learn metrics of one model on the test split, stored as JSON and CSV."""
    settings, store = open_store()
    y_true = test_labels(store, dataset, settings.cache_dir)
    metrics = evaluate_model(store, run_id, model, predictions_key, y_true, dataset.class_names)
    get_run_logger().info(
        "%s: test accuracy %.4f, F1 (macro) %.4f, ROC AUC (macro) %s",
        model,
        metrics["accuracy"],
        metrics["f1_macro"],
        metrics["roc_auc_macro"],
    )
    return metrics


def evaluate_all(
    run_id: str, trained: dict[str, dict], dataset: DatasetRef
) -> dict[str, dict[str, Any]]:
    """Evaluates every model concurrently."""
    futures = {
        m: evaluate.submit(run_id, m, t["predictions_key"], dataset) for m, t in trained.items()
    }
    return {m: f.result() for m, f in futures.items()}
