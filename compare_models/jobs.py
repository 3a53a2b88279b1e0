"""What a training is asked to do and what it hands back, without TensorFlow.

The parent flow imports this module (never `compare_models.training`, which loads Keras):
it builds a `TrainingJob` per model, starts each in its own process, and reads the
`TrainingResult` the training published to S3 (`history.json` is written last).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compare_models import layout, registry
from compare_models.config import RUN_ID_PATTERN, RunParams, TrainParams
from compare_models.data import DatasetRef
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
    weights_key: str | None = Field(default=None, description="S3 key of the backbone weights file, if the model takes one")
    threads: int = Field(default=0, ge=0, le=1024, description="TF threads; 0 = this host's cores / COMPARE_MODELS_WORKER_SLOTS")
    checkpoint: bool = True
    attempt: int = Field(default=1, ge=1, le=1000, description="1 for the first try; retries resume from the checkpoint")

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str) -> str:
        if not re.fullmatch(RUN_ID_PATTERN, value):
            raise ValueError("run_id may hold only letters, digits, '.', '_' and '-' (at most 128), starting with a letter or digit")
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if not MODEL_NAME.fullmatch(value):
            raise ValueError("model must be a registered model name: 1-32 lowercase letters, digits, '_' or '-'")
        return value


@dataclass
class TrainingResult:
    """What one training published (read back by the parent from `history.json`)."""

    model: str
    model_key: str
    history_key: str
    predictions_key: str
    history: dict[str, list[float]]
    epochs: int
    resumed_from_epoch: int
    fit_seconds: float
    fit_started_at: float  # UNIX time, for overlap / overhead accounting
    train_images_per_second: float
    parameters: int
    peak_rss_mb: float
    device: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def publish_result(store: ArtifactStore, result: TrainingResult) -> None:
    """Writes `history.json`, the sign that this model's training is finished."""
    stored = {k: v for k, v in result.as_dict().items() if k != "history"}
    store.put_json({"history": result.history, "result": stored}, result.history_key, overwrite=True)


def stored_result(store: ArtifactStore, run_id: str, model: str) -> TrainingResult | None:
    """The published result of a finished training, or None."""
    key = layout.history_key(run_id, model)
    if not store.exists(key):
        return None
    stored = store.get_json(key)
    return TrainingResult(**stored["result"], history=stored["history"])


def plan_jobs(params: RunParams, run_id: str, dataset: DatasetRef, weights_key: str | None) -> list[TrainingJob]:
    """One job per model of the run. Local trainings share this machine's cores evenly;
    on workers, threads 0 lets each worker decide from its own host."""
    local = params.execution.trainer == "local"
    threads = params.train.threads or (max(1, (os.cpu_count() or 1) // len(params.models)) if local else 0)
    return [
        TrainingJob(run_id=run_id, model=m, dataset=dataset, train=params.train, threads=threads,
                    weights_key=weights_key if registry.get(m).takes_weights else None)
        for m in params.models
    ]
