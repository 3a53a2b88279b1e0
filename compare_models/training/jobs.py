"""What a training is asked to do and what it hands back, without TensorFlow.

The parent flow imports this module (never `compare_models.training.fit`, which loads Keras):
it builds a `TrainingJob` per model and replica (`plan_jobs`), starts each in its own process,
reads the `TrainingResult` the training published to S3 (`history.json` is written last), and
keeps one replica of each model (`select_replicas`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compare_models.config import (
    IMAGE_SIZE,
    RUN_ID_PATTERN,
    ExecutionParams,
    RunParams,
    TrainParams,
)
from compare_models.data.dataset import DatasetRef
from compare_models.device import available_cpus
from compare_models.models import registry
from compare_models.models.registry import NAME as MODEL_NAME
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore

#: Where a training's log lines go: a `logging.Logger` or Prefect's run logger.
Logger = logging.Logger | Any


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing is published for this model."""


class TrainingFailed(RuntimeError):
    """A training's process or flow run failed, ran past its time or published no result."""


class TrainingJob(BaseModel):
    """Everything one training process needs (small and JSON-serialisable).

    It is also the `train-model` deployments' parameter, so anyone who reaches the
    Prefect API can send one: `run_id` and `model` are validated as strictly as
    `RunParams` validates them, since both become S3 keys and flow-run names.

    With `train.replicas` > 1 a model trains several times, replica k with seed `seed + k`
    (`plan_jobs`): every S3 key and flow-run name of a training is built from its `name`
    (`cnn`, `cnn.r1`, ...), the registry and the builder take its `model`.
    """

    model_config = ConfigDict(extra="forbid")

    run_id: str
    model: str
    track: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="The run's track (gate.track): whose MLflow experiment its epochs are logged "
        "to when MLflow is on",
    )
    replica: int = Field(
        default=0,
        ge=0,
        le=15,
        description="Which training of the model this is (train.replicas > 1): 0 is the first",
    )
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
    store_outage_minutes: float = Field(
        default=15,
        gt=0,
        le=24 * 60,
        description="The run's execution.store_outage_minutes: how long the training waits out an "
        "unreachable object store before its final model counts as unpublishable",
    )

    @property
    def name(self) -> str:
        """This training's name in S3 keys and flow-run names: the model's for replica 0,
        `<model>.r<k>` for replica k (`layout.training_name`)."""
        return layout.training_name(self.model, self.replica)

    @property
    def label(self) -> str:
        """This training in log lines and messages: "cnn", or "cnn (replica 1)"."""
        return self.model if self.replica == 0 else f"{self.model} (replica {self.replica})"

    def recipe(self) -> str:
        """What makes two trainings of this model interchangeable: the data (archive, split
        indices), the training parameters (the replica's own seed among them) and the
        backbone weights. A re-run reuses a stored model or checkpoint only if its recipe
        matches (SHA-256 of these, as JSON). How many replicas the run trains is not part of
        it: it changes nothing in one training."""
        recipe = {
            "model": self.model,
            "archive_sha256": self.dataset.archive_sha256,
            "split_key": self.dataset.split_key,
            "split_indices_sha256": self.dataset.split_indices_sha256,
            "train": self.train.model_dump(mode="json", exclude={"replicas"}),
            "weights_key": self.weights_key,
        }
        # settings added later enter the recipe only where they are set, so that a recipe
        # from before them keeps its hash (and its stored models and checkpoints are reused)
        if self.train.input_size is None:
            del recipe["train"]["input_size"]
        if self.dataset.image_size != IMAGE_SIZE:
            recipe["image_size"] = self.dataset.image_size
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
    replica: int = Field(default=0, ge=0, description="TrainingJob.replica of the job that made it")
    seed: int | None = Field(
        default=None,
        description="the training's seed (train.seed + replica); None in older records",
    )
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
    def name(self) -> str:
        """The training's name in the run's keys (`TrainingJob.name`)."""
        return layout.training_name(self.model, self.replica)

    @property
    def label(self) -> str:
        """The training in log lines: "cnn", or "cnn (replica 1)" (`TrainingJob.label`)."""
        return self.model if self.replica == 0 else f"{self.model} (replica {self.replica})"

    @property
    def final_val_accuracy(self) -> float | None:
        """The validation accuracy after the last epoch, or None when the history has none
        (or it is not a finite number)."""
        values = self.history.get("val_accuracy") or []
        return values[-1] if values and math.isfinite(values[-1]) else None

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


def stored_result(store: ArtifactStore, run_id: str, name: str) -> TrainingResult | None:
    """The published result of a finished training (`name`: `TrainingJob.name`), or None."""
    key = layout.history_key(run_id, name)
    if not store.exists(key):
        return None
    stored = store.get_json(key)
    return TrainingResult.model_validate({**stored["result"], "history": stored["history"]})


def check_recipe(job: TrainingJob, recipe: str | None, what: str) -> None:
    """Refuses to reuse `what` (a finished model, a checkpoint) made from another recipe."""
    if recipe != job.recipe():
        raise RecipeMismatch(
            f"{job.label}: run {job.run_id} already holds {what} made from other data or training parameters than this "
            "attempt's; it is not reused and not overwritten. Re-run with the run's original parameters to resume it, "
            "or leave run_id unset for a fresh run."
        )


#: What `execution.schedule: auto` means on a CPU host: the schedule that trained both models
#: in the shortest span, measured by `benchmarks/speed/schedule.py` (see docs/benchmarks.md).
AUTO_SCHEDULE = "weighted"


def resolve_schedule(execution: ExecutionParams) -> str:
    """The schedule the trainings of a run follow; `auto` is the measured best. Deployment
    trainings run at once, each in its own process (one per GPU): a CPU worker splits its
    cores between them by cost ("weighted") unless `parallel` (an even split) is asked."""
    if execution.trainer == "deployment":
        return "parallel" if execution.schedule == "parallel" else "weighted"
    return AUTO_SCHEDULE if execution.schedule == "auto" else execution.schedule


def trainings(
    models: Iterable[str], replicas: int | Mapping[str, int] = 1
) -> dict[str, tuple[str, int]]:
    """Every training of a run by name (`layout.training_name`): its (model, replica), model
    by model and in replica order; `replicas` is a count for every model or one per model."""
    return {
        layout.training_name(m, r): (m, r)
        for m in models
        for r in range(replicas.get(m, 1) if isinstance(replicas, Mapping) else replicas)
    }


def cpu_shares(
    models: tuple[str, ...], schedule: str, replicas: int | Mapping[str, int] = 1
) -> dict[str, float]:
    """Each training's share of the host's cores, by training name (`TrainingJob.name`: the
    model's name when it trains once): all of them when they run one after the other, an even
    split when they run at once, or a split by each model's cost per image. A model's replicas
    are that many trainings of the same cost: each has the share of one training."""
    runs = trainings(models, replicas)
    if schedule == "sequential" or len(runs) == 1:
        return {name: 1.0 for name in runs}
    if schedule == "weighted":
        costs = {name: registry.get(m).relative_cost for name, (m, _) in runs.items()}
        return {name: cost / sum(costs.values()) for name, cost in costs.items()}
    return {name: 1 / len(runs) for name in runs}


def threads_from_share(share: float, cpus: int) -> int:
    """TensorFlow threads for a training with `share` of `cpus` cores (at least one)."""
    return max(1, round(cpus * share))


def thread_plan(
    models: tuple[str, ...], schedule: str, cpus: int, replicas: int | Mapping[str, int] = 1
) -> dict[str, int]:
    """TensorFlow threads per training on a shared host (`cpu_shares` of `cpus`), by
    training name."""
    if schedule == "parallel":
        runs = trainings(models, replicas)
        return {name: max(1, cpus // len(runs)) for name in runs}
    return {
        name: threads_from_share(share, cpus)
        for name, share in cpu_shares(models, schedule, replicas).items()
    }


#: The largest training seed (`TrainParams.seed`).
MAX_SEED = 2**32 - 1


def replica_params(train: TrainParams, replica: int) -> TrainParams:
    """The training parameters of replica `replica`: `train` with the seed `train.seed +
    replica` (replica 0 is `train` itself)."""
    if replica == 0:
        return train
    seed = train.seed + replica
    if seed > MAX_SEED:
        raise ValueError(
            f"replica {replica} would train with seed {seed}, above the largest seed ({MAX_SEED}): "
            "lower train.seed or train.replicas"
        )
    return train.model_copy(update={"seed": seed})


def plan_jobs(
    params: RunParams,
    run_id: str,
    dataset: DatasetRef,
    weights_key: str | None,
    *,
    started_at: float,
) -> list[TrainingJob]:
    """One job per model of the run and replica (`train.replicas`), with that model's training
    parameters (`RunParams.train_for`); replica k trains with the seed `train.seed + k`
    (`replica_params`). Local trainings share this machine's cores as the run's schedule says
    (`thread_plan`: replicas are more trainings of the same cost, each with all cores one
    after the other when sequential, sharing them when at once); on workers, threads 0 and a
    `cpu_share` let each worker size them from its own host. With a time budget, every job
    gets the run's deadline (`started_at` plus the budget)."""
    budget = params.execution.time_budget_minutes
    deadline = started_at + 60 * budget if budget else None
    local = params.execution.trainer == "local"
    schedule = resolve_schedule(params.execution)
    counts = {m: params.train_for(m).replicas for m in params.models}
    plan = thread_plan(params.models, schedule, available_cpus(), counts)
    shares = cpu_shares(params.models, schedule, counts)
    jobs = []
    for name, (m, replica) in trainings(params.models, counts).items():
        train = replica_params(params.train_for(m), replica)
        jobs.append(
            TrainingJob(
                run_id=run_id,
                model=m,
                track=params.gate.track,
                replica=replica,
                dataset=dataset,
                train=train,
                threads=train.threads or (plan[name] if local else 0),
                cpu_share=None if local else shares[name],
                weights_key=weights_key if registry.get(m).takes_weights else None,
                deadline=deadline,
                store_outage_minutes=params.execution.store_outage_minutes,
            )
        )
    return jobs


def _validation_rank(result: TrainingResult) -> tuple[bool, float, int]:
    """Larger is kept: having a validation accuracy, then its value, then a lower replica."""
    accuracy = result.final_val_accuracy
    return (accuracy is not None, accuracy or 0.0, -result.replica)


def select_replicas(
    results: Mapping[str, TrainingResult], models: Iterable[str]
) -> tuple[dict[str, TrainingResult], dict[str, list[TrainingResult]]]:
    """Which replica of each model the run keeps, and every replica of it.

    `results` are the run's trainings by name (`train_all`). The rule uses validation data
    only, never the test set (whose metrics would then no longer be an unbiased estimate
    of the kept model's): the run keeps the replica with the highest validation accuracy
    after its last epoch (`history["val_accuracy"][-1]`); a tie goes to the lowest replica
    index; a replica without a (finite) validation accuracy is never preferred over one with
    it, and when none has one the first replica is kept.

    Returns (per model the kept replica, per model with two or more replicas the list of all
    of them in replica order); with one replica per model the second is empty.
    """
    kept: dict[str, TrainingResult] = {}
    replicas: dict[str, list[TrainingResult]] = {}
    for model in models:
        mine = sorted((r for r in results.values() if r.model == model), key=lambda r: r.replica)
        if not mine:
            raise ValueError(f"no training result of model {model!r}")
        if len({r.replica for r in mine}) != len(mine):
            raise ValueError(f"{model}: two training results of the same replica")
        kept[model] = max(mine, key=_validation_rank)
        if len(mine) > 1:
            replicas[model] = mine
    return kept, replicas
