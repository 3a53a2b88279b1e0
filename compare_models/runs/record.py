"""`RunRecord`: the typed record of one run, and the schema of its `manifest.json`.

The parent flow builds the record step by step: each task takes the record (or the typed part
it needs) and returns a typed part (`TrainingResult`s, `ModelMetrics`, a `ComparisonStep`, the
gate's `GateDecision`s, the `ReportFiles`); the manifest step completes it and writes it last.
Everything that reads a run back (the CLI, the history, the trends, the champions, a replay)
reads it through `RunRecord.model_validate_json`, so a field is named in one place.

Versions: `schema_version` counts the record's shape. A manifest without one was written
before the record existed (version 0): it is read by filling in what it did not store, never
by guessing a value (`_from_version_0`). A manifest from a newer version is refused with a
message saying to upgrade.

The statistics' records (`Comparison`, `PairComparison`, `Interval`, ...) are the statistics
stage's own results (`compare_models.statistics.records`): the record stores what the library
returns.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef
from compare_models.evaluation.records import ModelMetrics
from compare_models.runs.decision import GateDecision
from compare_models.statistics.records import (
    Comparison,
    Interval,
    PairComparison,
)
from compare_models.storage import layout
from compare_models.storage.schema import stored_version
from compare_models.tracking.records import Tracked
from compare_models.training.jobs import TrainingResult

#: The record's shape; bump it when a field changes meaning or a required field is added.
SCHEMA_VERSION = 1


class _Part(BaseModel):
    """A part of the record: fields it does not know (a newer writer's additions) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


# ── metrics, replay, gate, report ────────────────────────────────────────────────────


class ReplayOfModel(_Part):
    identical_predictions: str
    bitwise_identical_probabilities: bool
    max_abs_probability_difference: float
    pair: PairComparison


class FingerprintChange(_Part):
    entry: str
    original: Any
    replay: Any


class Replay(_Part):
    """`metrics/replay.json`: how far a replay landed from its original run."""

    original_run_id: str
    run_id: str
    models: dict[str, ReplayOfModel]
    fingerprint_changes: list[FingerprintChange]
    summary: str


class Fingerprint(_Part):
    """What the run depended on (`compare_models.runs.fingerprint.run_fingerprint`). The hosts and
    devices are free-form facts of the machines, compared entry by entry for a replay."""

    orchestrator: dict[str, Any]
    trainings: dict[str, dict[str, Any]]
    data: dict[str, Any]
    seeds: dict[str, int | None]
    params: dict[str, Any]

    @property
    def sha256(self) -> str:
        """The SHA-256 of the fingerprint as sorted JSON: one value that names it (model cards,
        MLflow's tags)."""
        return hashlib.sha256(
            json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        ).hexdigest()

    @property
    def commit(self) -> str | None:
        """The code's commit where the run was orchestrated (None: not known)."""
        git = self.orchestrator.get("git") or {}
        return git.get("commit") if isinstance(git, dict) else None


class ComparisonStep(_Part):
    """What the comparison task hands on: the statistics, the fingerprint and a replay's distance."""

    comparison: Comparison
    fingerprint: Fingerprint
    replay: Replay | None = None


class ReportFiles(_Part):
    """Where the run's report is: its index page and every file, by name."""

    index: str
    files: dict[str, str]


class StoredObject(_Part):
    key: str
    bytes: int = Field(ge=0)


class Budget(_Part):
    minutes: float | None
    stopped: dict[str, str]


# ── the record ───────────────────────────────────────────────────────────────────────


class ClassDelta(_Part):
    """Images (by content) of one class added and removed since an earlier version."""

    added: int = 0
    removed: int = 0


class SkippedFile(_Part):
    key: str
    reason: str


class DataChanges(_Part):
    """What changed in a folder source's data: per class, the images added and removed since
    the champion's version and since the track's previous run, the class balance, and the
    files skipped (the first `MAX_SKIPPED_LISTED`, with the total)."""

    version_id: str
    champion_version_id: str | None = None
    previous_version_id: str | None = None
    previous_run_id: str | None = None
    since_champion: dict[str, ClassDelta] = Field(default_factory=dict)
    since_previous: dict[str, ClassDelta] = Field(default_factory=dict)
    counts: dict[str, dict[str, int]] = Field(description="per class, images per split")
    duplicates: int = 0
    skipped_total: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)


class RunRecord(_Part):
    """One run: what it was asked, what it trained, how the models scored and compared, what
    the gate decided, where its report is; complete once the manifest step has written it."""

    schema_version: int = SCHEMA_VERSION
    run_id: str
    flow_run_id: str | None = None
    params: RunParams
    dataset: DatasetRef
    resnet_weights_key: str | None = None
    models: dict[str, TrainingResult] = Field(
        default_factory=dict, description="per model, the training the run keeps"
    )
    replicas: dict[str, list[TrainingResult]] = Field(
        default_factory=dict,
        description="with train.replicas > 1: per model, every replica's training, in seed order",
    )
    metrics: dict[str, ModelMetrics] = Field(default_factory=dict)
    replica_metrics: dict[str, list[ModelMetrics]] = Field(
        default_factory=dict, description="per model, every replica's metrics, as `replicas`"
    )
    comparison: Comparison | None = None
    fingerprint: Fingerprint | None = None
    replay: Replay | None = None
    gate: dict[str, GateDecision] = Field(default_factory=dict)
    data_changes: DataChanges | None = None
    report: ReportFiles | None = None
    mlflow: Tracked | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="what the run logged to MLflow, and what not (None: MLflow was off)",
    )
    status: Literal["in-progress", "complete"] = "in-progress"
    completed_at: datetime | None = None
    objects: list[StoredObject] = Field(default_factory=list)

    # Derived, and written for the people and scripts that read manifest.json.
    @computed_field
    @property
    def synthetic_data(self) -> bool:
        return self.dataset.synthetic

    @computed_field
    @property
    def budget(self) -> Budget:
        return Budget(
            minutes=self.params.execution.time_budget_minutes,
            stopped={t.name: t.budget_note for t in self.trainings() if t.budget_note},
        )

    @computed_field
    @property
    def stopped_by_budget(self) -> bool:
        """Any training of the run (a replica too) stopped early: a re-run continues it."""
        return any(t.stopped_by_budget for t in self.trainings())

    def trainings(self) -> list[TrainingResult]:
        """Every training of the run: each model's replicas, or the one training it kept."""
        return [t for m, kept in self.models.items() for t in self.replicas.get(m, [kept])]

    @computed_field
    @property
    def scale(self) -> str | None:
        """For the small presets, a plain sentence that this is no result of the report's protocol."""
        if self.params.preset not in ("demo", "smoke"):
            return None
        return (
            f"a small {self.params.preset} run ({self.dataset.sizes.get('train', 0):,} training "
            f"images, {self.params.epochs_text()} epoch(s)): not the report's protocol; run it "
            "with `--preset seed` (16,250 images, 10 epochs)"
        )

    @property
    def track(self) -> str:
        return self.params.gate.track

    @property
    def confidence(self) -> float:
        """The confidence level of the run's intervals."""
        return self.params.comparison.confidence

    def accuracy_interval(self, model: str) -> Interval | None:
        """The model's test accuracy with its interval (None for a run without statistics)."""
        if self.comparison is None or model not in self.comparison.models:
            return None
        return self.comparison.models[model].accuracy

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        version = stored_version(data, newest=SCHEMA_VERSION, what="manifest")
        return _from_version_0(data) if version == 0 else data

    @model_validator(mode="after")
    def _complete(self) -> RunRecord:
        if self.status == "complete" and (self.completed_at is None or self.report is None):
            raise ValueError("a complete run record needs completed_at and report")
        return self


def _from_version_0(data: dict[str, Any]) -> dict[str, Any]:
    """A manifest from before the record (no `schema_version`). Its `models` kept a subset of
    each training's result: the model's name comes from its key; what was not stored (the
    per-epoch history, which is in `history.json`, the resumed-from epoch and the fit's start
    time) stays unset."""
    models = {
        name: {
            "history": {},
            "resumed_from_epoch": None,
            "fit_started_at": None,
            **entry,
            "model": name,
        }
        for name, entry in (data.get("models") or {}).items()
        if isinstance(entry, dict)
    }
    return {**data, "models": models, "schema_version": SCHEMA_VERSION}


def json_schema() -> dict[str, Any]:
    """The JSON schema of `manifest.json` (what the manifest step writes)."""
    return RunRecord.model_json_schema(mode="serialization")


class RunSummary(_Part):
    """What the parent flow returns, and `compare-models run --json` prints: where the run's
    report, manifest and models are, with its headline results."""

    run_id: str
    prefix: str
    report: str
    manifest: str
    synthetic_data: bool
    metrics: dict[str, ModelMetrics]
    scale: str | None
    comparison: Comparison | None
    replay: Replay | None
    gate: dict[str, GateDecision]
    models: dict[str, str]
    data: dict[str, Any]

    @classmethod
    def of(cls, record: RunRecord, manifest_uri: str, uri: Callable[[str], str]) -> RunSummary:
        """The summary of a completed record; `uri(key)` names an object of the store."""
        dataset = record.dataset
        return cls(
            run_id=record.run_id,
            prefix=uri(layout.run_prefix(record.run_id)),
            report=record.report.index,
            manifest=manifest_uri,
            synthetic_data=record.synthetic_data,
            metrics=record.metrics,
            scale=record.scale,
            comparison=record.comparison,
            replay=record.replay,
            gate=record.gate,
            models={m: uri(t.model_key) for m, t in record.models.items()},
            data={
                "name": dataset.name,
                "synthetic": dataset.synthetic,
                "prefix": uri(dataset.prefix),
                "reused": dataset.reused,
                "sizes": dataset.sizes,
                **(
                    {
                        "version_id": dataset.version_id,
                        "skipped": dataset.skipped,
                        "duplicates": dataset.duplicates,
                        "leaked": dataset.leaked,
                    }
                    if dataset.version_id
                    else {}
                ),
            },
        )


class SkippedRun(_Part):
    """What the parent flow returns when `skip_if_unchanged` skipped the run: the data has not
    changed since every model's champion was trained."""

    run_id: str
    skipped: Literal[True] = True
    reason: str
    version_id: str
    champions: dict[str, str]


if (
    __name__ == "__main__"
):  # python -m compare_models.runs.record > docs/reference/manifest.schema.json
    import json

    print(json.dumps(json_schema(), indent=2, sort_keys=True))
