"""What the report is made from: each model's result and the run's optional sections, the
typed records of the run (no Prefect, TensorFlow or S3), shared by the figures, the HTML page
and the markdown summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from compare_models.evaluation.records import Evaluation
from compare_models.runs.decision import GateDecision
from compare_models.runs.record import DataChanges, Replay
from compare_models.statistics.records import Comparison


@dataclass(frozen=True)
class ModelResult:
    """Everything the report needs to know about one trained model.

    Attributes:
        name: short model identifier, e.g. "cnn" or "resnet50"; used in
            titles, table rows and file names.
        history: Keras ``History.history``: metric name -> one value per epoch
            (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        metrics: the model's ``Evaluation`` (``evaluation.metrics.evaluate_predictions``).
        train_seconds: wall-clock training time.
        parameters: number of model parameters.
    """

    name: str
    history: dict
    metrics: Evaluation
    train_seconds: float
    parameters: int


@dataclass(frozen=True)
class ReplicaRow:
    """One replica of a model in the report's replicas section; `kept` marks the one the run
    keeps (best on validation data)."""

    replica: int
    seed: int | None
    val_accuracy: float | None
    test_accuracy: float | None
    kept: bool


@dataclass(frozen=True)
class Sections:
    """The report's optional sections, beyond the per-model metrics.

    Attributes:
        comparison: ``compare_models.statistics.paired.compare_all``'s ``Comparison`` (verdicts,
            intervals, paired tables, per-class tests), with ``calibration`` added and, with
            replicas, ``recipes`` (``statistics.records.RecipeComparison``: each model's test
            accuracy per seed, its mean and std, and each pair's Welch test over seeds).
        disagreement: figures already written into the report folder (gallery, confident
            mistakes, reliability diagram) with their captions.
        replay: how far a replay landed from its original run.
        gate: each model's ``GateDecision`` against its champion, with its noise ``band``
            (``runs.decision.NoiseBand``) where the gate used one.
        gate_figures: the champion section's figures (accuracy trend, recall changes).
        replicas: with ``train.replicas`` > 1, per model, every replica (``ReplicaRow``) in
            seed order.
        data: for a folder source, what changed in the data (``runs.record.DataChanges``);
            ``data_figures``: its class-balance figure.
    """

    comparison: Comparison | None = None
    disagreement: Sequence[tuple[Path, str]] = ()
    replay: Replay | None = None
    gate: Mapping[str, GateDecision] | None = None
    gate_figures: Sequence[tuple[Path, str]] = ()
    replicas: Mapping[str, Sequence[ReplicaRow]] | None = None
    data: DataChanges | None = None
    data_figures: Sequence[tuple[Path, str]] = ()

    @property
    def figures(self) -> list[tuple[Path, str]]:
        return [*self.disagreement, *self.gate_figures, *self.data_figures]
