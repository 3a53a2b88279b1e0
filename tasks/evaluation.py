"""Evaluation tasks: per-model metrics from the stored test predictions."""

from __future__ import annotations

from prefect import get_run_logger, task

from compare_models.evaluation import evaluate_predictions
from compare_models.run_record import ModelMetrics, RunRecord
from tasks._store import open_artifacts


@task(name="evaluate", task_run_name="evaluate-{model}")
def evaluate(record: RunRecord, model: str) -> ModelMetrics:
    """scikit-learn metrics of one model on the test split, stored as JSON and CSV."""
    _, artifacts = open_artifacts(record)
    probs = artifacts.model_predictions({model: record.models[model]})[model]
    metrics = evaluate_predictions(artifacts.test_labels(), probs, record.dataset.class_names)
    artifacts.save_metrics(model, metrics)
    get_run_logger().info(
        "%s: test accuracy %.4f, F1 (macro) %.4f, ROC AUC (macro) %s",
        model,
        metrics["accuracy"],
        metrics["f1_macro"],
        metrics["roc_auc_macro"],
    )
    return ModelMetrics.model_validate(metrics)


def evaluate_all(record: RunRecord) -> dict[str, ModelMetrics]:
    """Evaluates every trained model concurrently."""
    futures = {m: evaluate.submit(record, m) for m in record.models}
    return {m: f.result() for m, f in futures.items()}
