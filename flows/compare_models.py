"""`compare-models`: the parent flow. Orchestration only; the logic lives in `tasks/`.

    preflight ─ check S3 (endpoint, credentials, bucket), the run prefix, ResNet weights
    prepare-data ─ fetch → verify → decode → normalise → split (cached in S3 by content hash)
    ├─ train(cnn)       ┐ each in its own process (a `train-model` flow run),
    ├─ train(resnet50)  ┘ concurrently
    ├─ evaluate (per model: stored test predictions → scikit-learn metrics)
    └─ report (figures, HTML, Prefect artifacts) → manifest.json, written last

Tasks pass S3 keys and small dicts, never arrays or Keras models.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.deployments import run_deployment
from prefect.runtime import flow_run, task_run
from prefect.settings import PREFECT_API_URL

from tasks.config import ExecutionParams, RunParams, Settings
from tasks.data import DatasetRef, prepare_dataset
from tasks.publish import (
    evaluate_model, guard_run_prefix, move_latest, new_run_id, publish_report, test_labels, write_manifest,
)
from tasks.report import ModelResult, markdown_summary, per_class_table_rows
from tasks.store import ArtifactStore, run_prefix
from tasks.training import TrainingJob, stored_result
from tasks.weights import resolve_resnet_weights


class TrainingFailed(RuntimeError):
    pass


def _store() -> tuple[Settings, ArtifactStore]:
    settings = Settings()
    return settings, ArtifactStore.from_settings(settings)


def _run_id(params: RunParams) -> str:
    return params.run_id or new_run_id(flow_run.scheduled_start_time, flow_run.id or "local")


def _flow_run_name() -> str:
    params = flow_run.parameters.get("params") or {}
    params = params if isinstance(params, RunParams) else RunParams.model_validate(params)
    return f"{_run_id(params)} [{'+'.join(params.models)}]"


# ── tasks ──────────────────────────────────────────────────────────────────


@task(name="preflight")
def preflight(params: RunParams, run_id: str) -> str | None:
    """Everything that can fail cheaply fails here, before data or training work."""
    settings, store = _store()
    store.check()
    guard_run_prefix(store, run_id)
    if "resnet50" in params.models:
        return resolve_resnet_weights(params.resnet_weights, store, settings.cache_dir)
    return None


@task(name="prepare-data", retries=1, retry_delay_seconds=5)
def prepare_data(params: RunParams) -> DatasetRef:
    settings, store = _store()
    ref = prepare_dataset(params.data, params.split, store, settings.cache_dir, expected_sha256=params.data_sha256)
    get_run_logger().info(
        "data %s%s: %s, %s (%.1f s)", ref.name, " [SYNTHETIC]" if ref.synthetic else "", ref.sizes,
        "reused from the store" if ref.reused else "prepared and stored", ref.seconds,
    )
    return ref


def _worth_retrying(task, task_run, state) -> bool:
    """Retry crashes and transient faults; a diverged training would only diverge again."""
    return "TrainingDiverged" not in str(state.message or "")


def _attempt_job(job: TrainingJob) -> TrainingJob:
    """The job with this task run's attempt number (retries resume from the checkpoint)."""
    return job.model_copy(update={"attempt": task_run.run_count or 1})


def _trained(job: TrainingJob) -> dict[str, Any]:
    """The child's published result, read back from S3 (children persist no Prefect results)."""
    _, store = _store()
    result = stored_result(store, job.run_id, job.model)
    if result is None:
        raise TrainingFailed(f"{job.model}: the training finished but published no result")
    get_run_logger().info("%s: %d epoch(s), %.1f s in fit (resumed from epoch %d), peak memory %.0f MiB", job.model,
                          result.epochs, result.fit_seconds, result.resumed_from_epoch, result.peak_rss_mb)
    return dict(result.__dict__)


@task(name="train", task_run_name="train-{job.model}", retry_condition_fn=_worth_retrying)
def train_in_subprocess(job: TrainingJob) -> dict[str, Any]:
    """Run the `train-model` flow in a fresh Python process (the `local` trainer)."""
    job = _attempt_job(job)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    with tempfile.TemporaryDirectory(prefix=f"job-{job.model}-") as tmp:
        job_path, result_path, log_path = Path(tmp) / "job.json", Path(tmp) / "result.json", Path(tmp) / "output.log"
        job_path.write_text(job.model_dump_json())
        get_run_logger().info("%s: attempt %d in a separate process (%d thread(s))", job.model, job.attempt, job.threads)
        with log_path.open("wb") as log:
            code = subprocess.call([sys.executable, "-m", "flows.train_model", str(job_path), str(result_path)],
                                   env=env, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent)
        if code != 0:
            outcome = json.loads(result_path.read_text()) if result_path.exists() else {}
            tail = log_path.read_text(errors="replace")[-3000:]
            raise TrainingFailed(f"{job.model} training failed (exit {code}): {outcome.get('error') or tail}")
    return _trained(job)


_CREATING_CHILD = threading.Lock()


def _wait_until_final(child, poll_seconds: float, start_timeout_seconds: float):
    """The child flow run once it reached a final state (`run_deployment`'s own wait, unlocked).

    A child that no worker has started within `start_timeout_seconds` (no worker on the
    pool, or one that died after claiming it: such a run sends no heartbeats) is cancelled
    and the attempt fails, instead of the parent waiting forever.
    """
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    deadline = time.monotonic() + start_timeout_seconds
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(child.id)
            state = flow_run.state
            if state and state.is_final():
                return flow_run
            waiting = state is None or state.is_scheduled() or state.is_pending()
            if waiting and time.monotonic() > deadline:
                message = (f"no worker of the {flow_run.work_pool_name!r} work pool started {flow_run.name} within "
                           f"{start_timeout_seconds:g} s")
                client.set_flow_run_state(child.id, Cancelled(message=message), force=True)
                raise TrainingFailed(f"{message}. Start one (`compare-models up --workers` locally, or `prefect worker "
                                     f"start --pool {flow_run.work_pool_name}`), or raise execution.start_timeout_seconds.")
            time.sleep(poll_seconds)


def _cancel_earlier_attempts(child) -> None:
    """Cancels unfinished children of earlier attempts (their parent lost track of them, e.g.
    over an API outage), so two attempts never train the same model of a run at once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterId, FlowRunFilterName, FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        for stale in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(not_any_=[child.id]), name=FlowRunFilterName(any_=[child.name]),
                                          state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[child.deployment_id])),
        ):
            get_run_logger().warning("cancelling %s (%s), left over from an earlier attempt", stale.name, stale.id)
            client.set_flow_run_state(stale.id, Cancelling(message="superseded by a newer attempt"), force=True)


@task(name="train", task_run_name="train-{job.model}", retry_condition_fn=_worth_retrying)
def train_on_worker(job: TrainingJob, execution: ExecutionParams) -> dict[str, Any]:
    """Run `train-model/<model>` on the GPU work pool and wait for it (the `deployment` trainer).

    `run_deployment` does not raise when the child fails, so its final state is checked
    here; the idempotency key holds the attempt number so a retry starts a new child.
    """
    job = _attempt_job(job)
    # Children are created one at a time (~0.1 s each), then awaited concurrently: created
    # at the same moment, they met ~2 s write-lock stalls on a SQLite-backed server, which
    # delayed one training's start by that much.
    with _CREATING_CHILD:
        child = run_deployment(
            name=f"train-model/{job.model}", parameters={"job": job.model_dump(mode="json")}, timeout=0,
            as_subflow=True, idempotency_key=f"{job.run_id}-{job.model}-attempt-{job.attempt}",
            flow_run_name=f"{job.run_id}-{job.model}",
        )
    if job.attempt > 1:
        _cancel_earlier_attempts(child)
    child = _wait_until_final(child, execution.poll_seconds, execution.start_timeout_seconds)
    if not child.state or not child.state.is_completed():
        state = child.state.name if child.state else "unknown"
        raise TrainingFailed(f"{job.model}: train-model flow run {child.name} ended {state}: "
                             f"{child.state.message if child.state else ''}")
    return _trained(job)


@task(name="evaluate", task_run_name="evaluate-{model}")
def evaluate(run_id: str, model: str, predictions_key: str, dataset: DatasetRef) -> dict[str, Any]:
    settings, store = _store()
    y_true = test_labels(store, dataset, settings.cache_dir)
    metrics = evaluate_model(store, run_id, model, predictions_key, y_true, dataset.class_names)
    get_run_logger().info("%s: test accuracy %.4f, F1 (macro) %.4f, ROC AUC (macro) %s", model, metrics["accuracy"],
                          metrics["f1_macro"], metrics["roc_auc_macro"])
    return metrics


@task(name="report")
def report(run_id: str, params: RunParams, dataset: DatasetRef, trained: dict[str, dict], metrics: dict[str, dict],
           weights_key: str | None) -> dict[str, Any]:
    settings, store = _store()
    results = [
        ModelResult(name=m, history=trained[m]["history"], metrics=metrics[m], train_seconds=trained[m]["fit_seconds"],
                    parameters=trained[m]["parameters"])
        for m in params.models
    ]
    title = f"compare-models {run_id}" + (" (SYNTHETIC DATA)" if dataset.synthetic else "")
    run_info = {
        "run_id": run_id, "data_source": dataset.source, "data_source_kind": "synthetic" if dataset.synthetic else "archive",
        "dataset": dataset.name, "archive_sha256": dataset.archive_sha256, "split_sizes": json.dumps(dataset.sizes),
        "epochs": params.train.epochs, "batch_size": params.train.batch_size, "optimizer": params.train.optimizer,
        "learning_rate": params.train.learning_rate, "lr_schedule": params.train.lr_schedule,
        "augment": params.train.augment, "resnet_weights": params.resnet_weights if "resnet50" in params.models else "-",
        "preset": params.preset or "-",
    }
    keys = publish_report(store, run_id, results, title=title, run_info=run_info)

    # Prefect artifacts: what the UI shows on the flow run's Artifacts tab.
    create_markdown_artifact(markdown_summary(results, title=title, run_info=run_info), key="compare-models-summary",
                             description=f"Model comparison of run {run_id}")
    create_table_artifact(per_class_table_rows(results), key="compare-models-per-class",
                          description=f"Per-class test metrics of run {run_id}")
    seconds = settings.presign_seconds
    create_link_artifact(store.presign(keys["index.html"], seconds), link_text=f"HTML report of {run_id}",
                         key="compare-models-report", description=f"Presigned link, expires after {seconds // 3600} h")
    for m in params.models:
        create_link_artifact(store.presign(trained[m]["model_key"], seconds), link_text=f"{m}.keras of {run_id}",
                             key=f"compare-models-model-{m}", description=f"Presigned link, expires after {seconds // 3600} h")

    manifest = {
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "params": params.model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json", exclude={"reused", "seconds"}),
        "synthetic_data": dataset.synthetic,
        "resnet_weights_key": weights_key,
        "models": {m: {k: trained[m][k] for k in ("model_key", "history_key", "predictions_key", "epochs", "fit_seconds",
                                                  "train_images_per_second", "parameters", "peak_rss_mb", "device")}
                   for m in params.models},
        "metrics": {m: {k: metrics[m][k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro",
                                                   "precision_weighted", "recall_weighted", "f1_weighted",
                                                   "roc_auc_macro", "roc_auc_micro")} for m in params.models},
        "report": {"index": store.uri(keys["index.html"]), "files": keys},
    }
    manifest_uri = write_manifest(store, run_id, manifest)
    move_latest(store, run_id, manifest_uri)
    return {"run_id": run_id, "prefix": store.uri(run_prefix(run_id)), "report": store.uri(keys["index.html"]),
            "manifest": manifest_uri, "synthetic_data": dataset.synthetic, "metrics": manifest["metrics"],
            "models": {m: store.uri(trained[m]["model_key"]) for m in params.models},
            "data": {"name": dataset.name, "synthetic": dataset.synthetic, "prefix": store.uri(dataset.prefix),
                     "reused": dataset.reused, "sizes": dataset.sizes}}


# ── the flow ───────────────────────────────────────────────────────────────


@flow(name="compare-models", flow_run_name=_flow_run_name, persist_result=False)
def compare_models(params: RunParams = RunParams()) -> dict[str, Any]:
    """Train, evaluate and compare the report's CNN and ResNet50 on CIFAR-10; publish to S3."""
    run_id = _run_id(params)
    logger = get_run_logger()
    logger.info("run %s: models %s, data %s, split %s", run_id, list(params.models), params.data, params.split.protocol)

    weights_key = preflight(params, run_id)
    dataset = prepare_data(params)

    # Local trainings share this machine's cores; on workers, 0 lets each worker decide.
    local = params.execution.trainer == "local"
    threads = params.train.threads or (max(1, (os.cpu_count() or 1) // len(params.models)) if local else 0)
    jobs = [TrainingJob(run_id=run_id, model=m, dataset=dataset, train=params.train, threads=threads,
                        resnet_weights_key=weights_key) for m in params.models]
    execution = params.execution
    trainer = train_on_worker if execution.trainer == "deployment" else train_in_subprocess
    trainer = trainer.with_options(retries=execution.retries, retry_delay_seconds=execution.retry_delay_seconds)
    extra = {"execution": execution} if execution.trainer == "deployment" else {}
    futures = {job.model: trainer.submit(job, **extra) for job in jobs}
    for future in futures.values():
        future.wait()
    failed = [m for m, f in futures.items() if not f.state.is_completed()]
    if failed:
        errors = "; ".join(str(futures[m].state.message or futures[m].state.name) for m in failed)
        raise TrainingFailed(f"training failed for {', '.join(failed)}: {errors}. Nothing was published for this run.")
    trained = {m: futures[m].result() for m in params.models}

    evaluations = {m: evaluate.submit(run_id, m, trained[m]["predictions_key"], dataset) for m in params.models}
    metrics = {m: f.result() for m, f in evaluations.items()}
    summary = report(run_id, params, dataset, trained, metrics, weights_key)
    logger.info("run %s complete: report %s", run_id, summary["report"])
    return summary
