"""What a training is asked to do and what it hands back, without TensorFlow.

The parent flow imports this module (never `compare_models.training`, which loads Keras):
it builds a `TrainingJob` per model, starts each in its own process, and reads the
`TrainingResult` the training published to S3 (`history.json` is written last).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compare_models import layout, registry
from compare_models.config import RUN_ID_PATTERN, ExecutionParams, RunParams, TrainParams
from compare_models.data.dataset import DatasetRef
from compare_models.device import available_cpus
from compare_models.registry import NAME as MODEL_NAME
from compare_models.store import ArtifactStore


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing is published for this model."""


class TrainingJob(BaseModel):
    """Everything one training process needs (small and JSON-serialisable).

    It is also the `train-model` deployments' parameter, so anyone who reaches the
    Prefect API can send one: `run_id` and `model` are validated as strictly as
    `RunParams` validates them, since both become S3 keys and flow-run names.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    model: str
    dataset: DatasetRef
    train: TrainParams
    weights_key: str | None = Field(
        default=None, description="S3 key of the backbone weights file, if the model takes one"
    )
    threads: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="TF threads; 0 = this host's cores / COMPARE_MODELS_WORKER_SLOTS",
    )
    cpu_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="With threads 0: this training's share of the worker host's cores (the run's "
        "schedule, e.g. by model cost); unset = the cores / COMPARE_MODELS_WORKER_SLOTS",
    )
    checkpoint: bool = True
    attempt: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="1 for the first try; retries resume from the checkpoint",
    )
    deadline: float | None = Field(
        default=None, description="UNIX time after which training stops at the end of an epoch"
    )

    def recipe(self) -> str:
        """What makes two trainings of this model interchangeable: the data (archive, split
        indices), the training parameters and the backbone weights. A re-run reuses a stored
        model or checkpoint only if its recipe matches (SHA-256 of these, as JSON)."""
        recipe = {
            "model": self.model,
            "archive_sha256": self.dataset.archive_sha256,
            "split_key": self.dataset.split_key,
            "split_indices_sha256": self.dataset.split_indices_sha256,
            "train": self.train.model_dump(mode="json"),
            "weights_key": self.weights_key,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        if not re.fullmatch(RUN_ID_PATTERN, value):
            raise ValueError(
                "run_id may hold only letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not MODEL_NAME.fullmatch(value):
            raise ValueError(
                "model must be a registered model name: 1-32 lowercase letters, digits, '_' or '-'"
            )
        return value


class TrainingResult(BaseModel):
    """What one training published (`history.json`), read back by the parent and kept, per
    model, in the run's record. None marks what a record from before schema 1 did not store."""

    model_config = ConfigDict(extra="ignore")

    model: str
    model_key: str
    history_key: str
    predictions_key: str
    history: dict[str, list[float]] = Field(
        default_factory=dict, description="per-epoch metrics (also in history.json)"
    )
    epochs: int
    resumed_from_epoch: int | None
    fit_seconds: float
    fit_started_at: float | None = Field(description="UNIX time, for overlap/overhead accounting")
    train_images_per_second: float
    parameters: int
    peak_rss_mb: float
    device: dict[str, Any]
    recipe: str | None = Field(
        default=None, description="TrainingJob.recipe() of the job that made it"
    )
    planned_epochs: int | None = None
    stopped_by_budget: bool = Field(
        default=False,
        description="fewer epochs than planned: the checkpoint is kept to continue from",
    )

    @property
    def budget_note(self) -> str | None:
        """ "stopped by budget after N of M epochs", or None for a finished training."""
        return (
            f"stopped by budget after {self.epochs} of {self.planned_epochs} epochs"
            if self.stopped_by_budget
            else None
        )


def publish_result(store: ArtifactStore, result: TrainingResult) -> None:
    """Writes `history.json`, the sign that this model's training is finished."""
    stored = result.model_dump(mode="json", exclude={"history"})
    store.put_json(
        {"history": result.history, "result": stored}, result.history_key, overwrite=True
    )


class RecipeMismatch(RuntimeError):
    """A stored model or checkpoint of this run was made from other data or parameters."""


def stored_result(store: ArtifactStore, run_id: str, model: str) -> TrainingResult | None:
    """The published result of a finished training, or None."""
    key = layout.history_key(run_id, model)
    if not store.exists(key):
        return None
    stored = store.get_json(key)
    return TrainingResult.model_validate({**stored["result"], "history": stored["history"]})


def check_recipe(job: TrainingJob, recipe: str | None, what: str) -> None:
    """Refuses to reuse `what` (a finished model, a checkpoint) made from another recipe."""
    if recipe != job.recipe():
        raise RecipeMismatch(
            f"{job.model}: run {job.run_id} already holds {what} made from other data or training parameters than this "
            "attempt's; it is not reused and not overwritten. Re-run with the run's original parameters to resume it, "
            "or leave run_id unset for a fresh run."
        )


#: Fault injection for resume tests and drills: the first attempt of every training fails
#: right after this epoch's checkpoint is stored. Unset in normal operation.
FAIL_AFTER_EPOCH_ENV = "COMPARE_MODELS_FAIL_AFTER_EPOCH"

#: What `execution.schedule: auto` means on a CPU host: the schedule that trained both models
#: in the shortest span, measured by `benchmarks/schedule.py` (see docs/benchmarks.md).
AUTO_SCHEDULE = "weighted"


def resolve_schedule(execution: ExecutionParams) -> str:
    """The schedule the trainings of a run follow; `auto` is the measured best. Deployment
    trainings run at once, each in its own process (one per GPU): a CPU worker splits its
    cores between them by cost ("weighted") unless `parallel` (an even split) is asked."""
    if execution.trainer == "deployment":
        return "parallel" if execution.schedule == "parallel" else "weighted"
    return AUTO_SCHEDULE if execution.schedule == "auto" else execution.schedule


def cpu_shares(models: tuple[str, ...], schedule: str) -> dict[str, float]:
    """Each training's share of the host's cores: all of them when they run one after the
    other, an even split when they run at once, or a split by each model's cost per image."""
    if schedule == "sequential" or len(models) == 1:
        return {m: 1.0 for m in models}
    if schedule == "weighted":
        costs = {m: registry.get(m).relative_cost for m in models}
        return {m: cost / sum(costs.values()) for m, cost in costs.items()}
    return {m: 1 / len(models) for m in models}


def threads_from_share(share: float, cpus: int) -> int:
    """TensorFlow threads for a training with `share` of `cpus` cores (at least one)."""
    return max(1, round(cpus * share))


def thread_plan(models: tuple[str, ...], schedule: str, cpus: int) -> dict[str, int]:
    """TensorFlow threads per training on a shared host (`cpu_shares` of `cpus`)."""
    if schedule == "parallel":
        return {m: max(1, cpus // len(models)) for m in models}
    return {m: threads_from_share(share, cpus) for m, share in cpu_shares(models, schedule).items()}


def plan_jobs(
    params: RunParams,
    run_id: str,
    dataset: DatasetRef,
    weights_key: str | None,
    *,
    started_at: float,
) -> list[TrainingJob]:
    """One job per model of the run, with that model's training parameters
    (`RunParams.train_for`). Local trainings share this machine's cores as the run's schedule
    says (`thread_plan`); on workers, threads 0 and a `cpu_share` let each worker size them
    from its own host. With a time budget, every job gets the run's deadline (`started_at`
    plus the budget)."""
    budget = params.execution.time_budget_minutes
    deadline = started_at + 60 * budget if budget else None
    local = params.execution.trainer == "local"
    schedule = resolve_schedule(params.execution)
    plan = thread_plan(params.models, schedule, available_cpus())
    shares = cpu_shares(params.models, schedule)
    jobs = []
    for m in params.models:
        train = params.train_for(m)
        jobs.append(
            TrainingJob(
                run_id=run_id,
                model=m,
                dataset=dataset,
                train=train,
                threads=train.threads or (plan[m] if local else 0),
                cpu_share=None if local else shares[m],
                weights_key=weights_key if registry.get(m).takes_weights else None,
                deadline=deadline,
            )
        )
    return jobs
