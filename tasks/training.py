"""The two trainers, one signature: `trainer(job, execution) -> TrainingResult`.

* `train_in_subprocess` (execution.trainer = "local"): the `train-model` flow in a fresh
  Python process beside this one (`compare_models.training.process.train_in_own_process`).
* `train_on_worker` (execution.trainer = "deployment"): a `train-model/gpu` flow run on
  the GPU work pool, awaited with a start deadline.

Either way the training publishes its result to S3 and the task reads it back: children
persist no Prefect results. A retry resumes from the last checkpoint. Every replica of a model
(`train.replicas`) is a job, and a task run, of its own, named by `TrainingJob.name`.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from prefect import get_run_logger, task
from prefect.deployments import run_deployment
from prefect.futures import PrefectFuture
from prefect.runtime import task_run
from prefect.settings import PREFECT_API_URL
from prefect.tasks import exponential_backoff

from compare_models.config import ExecutionParams
from compare_models.device import training_backend
from compare_models.models import registry
from compare_models.training.jobs import (
    TrainingFailed,
    TrainingJob,
    TrainingResult,
    resolve_schedule,
    stored_result,
)
from compare_models.training.process import train_in_own_process
from compare_models.training.zygote import WarmStart
from tasks._store import open_store
from tasks.child_runs import cancel_earlier_attempts, wait_until_final

#: The deployment of the train-model flow on the GPU pool (prefect.yaml); one for every model.
TRAIN_DEPLOYMENT = "train-model/gpu"


def _worth_retrying(task, task_run, state) -> bool:
    """Retry crashes and transient faults; a diverged training would only diverge again, and a
    run holding another recipe's model or checkpoint would only refuse again."""
    message = str(state.message or "")
    return "TrainingDiverged" not in message and "RecipeMismatch" not in message


def _attempt_job(job: TrainingJob) -> TrainingJob:
    """The job with this task run's attempt number (retries resume from the checkpoint)."""
    return job.model_copy(update={"attempt": task_run.run_count or 1})


def _trained(job: TrainingJob) -> TrainingResult:
    """The child's published result, read back from S3."""
    _, store = open_store(job.store_outage_minutes)
    result = stored_result(store, job.run_id, job.name)
    if result is None:
        raise TrainingFailed(f"{job.label}: the training finished but published no result")
    get_run_logger().info(
        "%s: %d epoch(s), %.1f s in fit (resumed from epoch %d), peak memory %.0f MiB",
        job.label,
        result.epochs,
        result.fit_seconds,
        result.resumed_from_epoch,
        result.peak_rss_mb,
    )
    return result


def api_outage_env(execution: ExecutionParams) -> dict[str, str]:
    """The training process's Prefect client settings for `execution.api_outage_minutes`; a
    value the user set in the environment wins."""
    if "PREFECT_CLIENT_MAX_RETRIES" in os.environ:
        return {}
    return {"PREFECT_CLIENT_MAX_RETRIES": str(execution.prefect_client_retries())}


def retry_options(execution: ExecutionParams) -> dict[str, Any]:
    """A training's Prefect task retries: `execution.retries`, the first after
    `retry_delay_seconds`, each later one twice as long (`exponential_backoff`), each spread
    by up to `retry_jitter_factor` of itself."""
    return {
        "retries": execution.retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=execution.retry_delay_seconds),
        "retry_jitter_factor": execution.retry_jitter_factor or None,
    }


#: The training process's entry point: `python -m flows.train_model JOB.json RESULT.json`.
TRAINING_ENTRY = "flows.train_model"
#: What a warm training process has imported before it forks (`training.zygote`).
TRAINING_PRELOAD = (TRAINING_ENTRY, "compare_models.training.fit")


def _process_env(execution: ExecutionParams) -> dict[str, str]:
    """The training process's environment: this one's, unbuffered, with this run's Prefect API
    and client retries."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **api_outage_env(execution)}
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return env


@task(name="train", task_run_name="train-{job.name}", retry_condition_fn=_worth_retrying)
def train_in_subprocess(job: TrainingJob, execution: ExecutionParams) -> TrainingResult:
    """Run the `train-model` flow in a fresh Python process (the `local` trainer)."""
    job = _attempt_job(job)
    get_run_logger().info(
        "%s: attempt %d in a separate process (%d thread(s))",
        job.label,
        job.attempt,
        job.threads,
    )
    env = _process_env(execution)
    train_in_own_process(
        job,
        entry=TRAINING_ENTRY,
        timeout_minutes=execution.training_timeout_minutes,
        env=env,
        warm=WarmStart(
            backend=training_backend(registry.get(job.model).cpu_backend, env),
            preload=TRAINING_PRELOAD,
        ),
    )
    return _trained(job)


# Children are created one at a time, then awaited concurrently: created at the same moment,
# they met write-lock stalls on a SQLite-backed server that delayed one training's start
# (measured by `benchmarks/speed/orchestration.py`; see docs/benchmarks.md).
_CREATING_CHILD = threading.Lock()


@task(name="train", task_run_name="train-{job.name}", retry_condition_fn=_worth_retrying)
def train_on_worker(job: TrainingJob, execution: ExecutionParams) -> TrainingResult:
    """Run `train-model/gpu` for this job on the GPU work pool and wait for it (the `deployment` trainer).

    `run_deployment` does not raise when the child fails, so its final state is checked
    here; the idempotency key holds the training's name (one child per replica) and the
    attempt number, so a retry starts a new child.
    """
    job = _attempt_job(job)
    with _CREATING_CHILD:
        child = run_deployment(
            name=TRAIN_DEPLOYMENT,
            parameters={"job": job.model_dump(mode="json")},
            timeout=0,
            as_subflow=True,
            idempotency_key=f"{job.run_id}-{job.name}-attempt-{job.attempt}",
            flow_run_name=f"{job.run_id}-{job.name}",
        )
    if job.attempt > 1:
        cancel_earlier_attempts(child, get_run_logger())
    child = wait_until_final(
        child,
        execution.poll_seconds,
        execution.start_timeout_seconds,
        run_timeout_seconds=60 * execution.training_timeout_minutes,
    )
    if not child.state or not child.state.is_completed():
        state = child.state.name if child.state else "unknown"
        raise TrainingFailed(
            f"{job.label}: train-model flow run {child.name} ended {state}: "
            f"{child.state.message if child.state else ''}"
        )
    return _trained(job)


TRAINERS = {"local": train_in_subprocess, "deployment": train_on_worker}


def train_all(jobs: list[TrainingJob], execution: ExecutionParams) -> dict[str, TrainingResult]:
    """Starts every training at once with the run's trainer (one after the other on a shared
    CPU host with the sequential schedule), waits for all, and fails the run (naming each
    failed training) if any failed: nothing is published then. Returns the results by
    training name (`TrainingJob.name`: the model's, or `<model>.r<k>` for its replica k);
    `select_replicas` picks the one of each model the run keeps."""
    trainer = TRAINERS[execution.trainer].with_options(**retry_options(execution))
    futures: dict[str, PrefectFuture] = {}
    for job in jobs:  # at once, or one after the other (each with all cores) on a shared CPU host
        futures[job.name] = trainer.submit(job, execution)
        if resolve_schedule(execution) == "sequential":
            futures[job.name].wait()
    for future in futures.values():
        future.wait()
    failed = {m: f.state for m, f in futures.items() if not f.state.is_completed()}
    if failed:
        errors = "; ".join(str(state.message or state.name) for state in failed.values())
        raise TrainingFailed(
            f"training failed for {', '.join(failed)}: {errors}. Nothing was published for this run."
        )
    return {m: f.result() for m, f in futures.items()}
