"""Evaluation tasks: per-model metrics from the stored test predictions, for every replica."""

from __future__ import annotations

from typing import NamedTuple

from prefect import get_run_logger, task

from compare_models.evaluation.metrics import evaluate_predictions, model_metrics
from compare_models.evaluation.records import ModelMetrics
from compare_models.runs.record import RunRecord
from compare_models.training.jobs import TrainingResult
from tasks._store import open_artifacts


class Evaluation(NamedTuple):
    """What `evaluate_all` hands back: the record's `metrics` (per model, of the replica the
    run keeps) and `replica_metrics` (per model with two or more replicas, every replica's,
    in replica order; empty when every model trained once)."""

    metrics: dict[str, ModelMetrics]
    replica_metrics: dict[str, list[ModelMetrics]]


def _trainings(record: RunRecord, model: str) -> list[TrainingResult]:
    """Every training of `model` in the run, in replica order (the kept one alone with one)."""
    return record.replicas.get(model) or [record.models[model]]


def _training(record: RunRecord, name: str) -> TrainingResult:
    for model in record.models:
        for training in _trainings(record, model):
            if training.name == name:
                return training
    raise KeyError(f"run {record.run_id} has no training named {name!r}")


@task(name="evaluate", task_run_name="evaluate-{name}")
def evaluate(record: RunRecord, name: str) -> ModelMetrics:
    """scikit-learn metrics of one training (`name`: the model's, or `<model>.r<k>` for a
    replica) on the test split, stored under its name as JSON and CSV."""
    _, artifacts = open_artifacts(record)
    training = _training(record, name)
    probs = artifacts.model_predictions({name: training})[name]
    evaluation = evaluate_predictions(artifacts.test_labels(), probs, record.dataset.class_names)
    artifacts.save_metrics(name, evaluation)
    get_run_logger().info(
        "%s: test accuracy %.4f, F1 (macro) %.4f, ROC AUC (macro) %s",
        training.label,
        evaluation.accuracy,
        evaluation.f1_macro,
        evaluation.roc_auc_macro,
    )
    return model_metrics(evaluation)


def evaluate_all(record: RunRecord) -> Evaluation:
    """Evaluates every trained model, every replica of it, concurrently."""
    futures = {
        t.name: evaluate.submit(record, t.name)
        for m in record.models
        for t in _trainings(record, m)
    }
    by_name = {name: f.result() for name, f in futures.items()}
    return Evaluation(
        metrics={m: by_name[t.name] for m, t in record.models.items()},
        replica_metrics={
            m: [by_name[t.name] for t in trainings] for m, trainings in record.replicas.items()
        },
    )
