"""`compare-models`: the parent flow. Orchestration only; the tasks are in `tasks/`, the
logic in the `compare_models` library. Tasks pass S3 keys and small dicts, never arrays
or Keras models.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from compare_models.config import RunParams
from compare_models.jobs import plan_jobs
from compare_models.publish import new_run_id
from tasks.data import prepare_data, preflight
from tasks.evaluation import evaluate_all
from tasks.reporting import manifest, report
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
    run_id = _run_id(params)
    get_run_logger().info("run %s: models %s, data %s, split %s", run_id, list(params.models), params.data,
                          params.split.protocol)

    weights_key = preflight(params, run_id)
    dataset = prepare_data(params)
    trained = train_all(plan_jobs(params, run_id, dataset, weights_key), params.execution)
    metrics = evaluate_all(run_id, trained, dataset)
    report_keys = report(run_id, params, dataset, trained, metrics)
    summary = manifest(run_id, params, dataset, trained, metrics, report_keys, weights_key)

    get_run_logger().info("run %s complete: report %s", run_id, summary["report"])
    return summary
