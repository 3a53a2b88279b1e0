"""`compare-models`: the parent flow. Orchestration only; the tasks are in `tasks/`, the
logic in the `compare_models` library. The run's state is one typed record
(`compare_models.runs.record.RunRecord`): each task takes it and hands back a typed part of
it; tasks pass records and S3 keys, never arrays or Keras models.

    preflight → prepare-data → train (every model, every replica of it, at once, each in its
    own process) → keep one replica per model (by validation accuracy) → evaluate (every
    replica) → compare (paired statistics, fingerprint, replay) → gate (vs the champions)
    → hand over the champions → MLflow (when on) → report → manifest (last) → alert (an event per regression)
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from compare_models.config import RunParams
from compare_models.runs.claim import new_run_id
from compare_models.runs.record import RunRecord, RunSummary
from compare_models.training.jobs import plan_jobs, select_replicas
from tasks._store import open_store
from tasks.comparison import compare
from tasks.data import describe_data, preflight, prepare_data, skip_unchanged
from tasks.evaluation import evaluate_all
from tasks.gate import alert, gate, hand_over_champions
from tasks.reporting import manifest, report
from tasks.tracking import open_tracking, track
from tasks.training import train_all


def _run_id(params: RunParams) -> str:
    return params.run_id or new_run_id(flow_run.scheduled_start_time, flow_run.id or "local")


def _flow_run_name() -> str:
    params = flow_run.parameters.get("params") or {}
    params = params if isinstance(params, RunParams) else RunParams.model_validate(params)
    return f"{_run_id(params)} [{'+'.join(params.models)}]"


@flow(name="compare-models", flow_run_name=_flow_run_name, persist_result=False)
def compare_models(params: RunParams = RunParams()) -> dict[str, Any]:
    """Train, evaluate and compare the models on CIFAR-10; publish everything to S3."""
    run_id, started_at = _run_id(params), time.time()
    get_run_logger().info(
        "run %s: models %s, data %s, split %s",
        run_id,
        list(params.models),
        params.data,
        params.split.protocol,
    )

    weights_key = preflight(params, run_id)
    run = RunRecord(
        run_id=run_id, params=params, dataset=prepare_data(params), resnet_weights_key=weights_key
    )
    skipped = skip_unchanged(params, run_id, run.dataset)
    if skipped is not None:
        return skipped.model_dump(mode="json")
    open_tracking(run)
    jobs = plan_jobs(params, run_id, run.dataset, weights_key, started_at=started_at)
    kept, replicas = select_replicas(train_all(jobs, params.execution), params.models)
    run = run.model_copy(update={"models": kept, "replicas": replicas})
    for model, trainings in replicas.items():
        get_run_logger().info(
            "%s: keeping replica %d (seed %s), the highest validation accuracy of %d replicas",
            model,
            kept[model].replica,
            kept[model].seed,
            len(trainings),
        )
    evaluation = evaluate_all(run)
    run = run.model_copy(
        update={"metrics": evaluation.metrics, "replica_metrics": evaluation.replica_metrics}
    )
    run = run.model_copy(update=dict(compare(run)))
    run = run.model_copy(update={"data_changes": describe_data(run)})
    run = run.model_copy(update={"gate": gate(run)})
    run = run.model_copy(update={"gate": hand_over_champions(run)})
    run = run.model_copy(update={"mlflow": track(run)})
    run = run.model_copy(update={"report": report(run)})
    run, manifest_uri = manifest(run)
    alert(run, manifest_uri)

    get_run_logger().info("run %s complete: report %s", run_id, run.report.index)
    _, store = open_store()
    return RunSummary.of(run, manifest_uri, store.uri).model_dump(mode="json", by_alias=True)
