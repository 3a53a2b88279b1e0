"""`train.replicas`: the names of a model's replicas in the run's keys, and which replica the
run keeps (`select_replicas`: by validation accuracy, never by the test set)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from compare_models.config import TrainParams
from compare_models.storage import layout
from compare_models.training.jobs import TrainingJob, TrainingResult, select_replicas
from tests.support.runs import placeholder_dataset, training_result


def result(
    model: str, replica: int, val_accuracy: list[float] | None, *, accuracy: float = 0.5
) -> TrainingResult:
    """A training result made by hand: `val_accuracy` per epoch (None: not in the history),
    `accuracy` the training accuracy of its last epoch."""
    history = {"loss": [1.0, 0.5], "accuracy": [0.4, accuracy]}
    if val_accuracy is not None:
        history["val_accuracy"] = val_accuracy
    return training_result(
        "r1",
        model,
        replica,
        seed=42 + replica,
        history=history,
        epochs=2,
        device={"device": "cpu"},
        planned_epochs=2,
    )


def by_name(*results: TrainingResult) -> dict[str, TrainingResult]:
    return {r.name: r for r in results}


def test_replica_names():
    assert [layout.training_name("cnn", r) for r in range(3)] == ["cnn", "cnn.r1", "cnn.r2"]
    assert layout.TRAINING_NAME.fullmatch("resnet50.r15")
    for bad in ("cnn.r0", "cnn.r01", "cnn.", "Cnn", "cnn.x1", "cnn/r1", "../cnn"):
        assert not layout.TRAINING_NAME.fullmatch(bad), bad
    with pytest.raises(ValueError):
        layout.training_name("cnn", -1)
    with pytest.raises(ValueError):
        layout.training_name("a.b", 1)
    assert layout.model_key("r1", "cnn.r1") == "runs/r1/models/cnn.r1.keras"
    assert layout.history_key("r1", "cnn.r1") == "runs/r1/training/cnn.r1/history.json"
    assert layout.checkpoint_prefix("r1", "cnn.r1") == "runs/r1/checkpoints/cnn.r1/"
    assert layout.metrics_key("r1", "cnn.r1") == "runs/r1/metrics/cnn.r1.json"
    # replica 0's keys are the model's, as before replicas existed
    assert layout.model_key("r1", layout.training_name("cnn")) == layout.model_key("r1", "cnn")


def test_a_job_names_its_replica_and_validates_it():
    job = TrainingJob(run_id="r1", model="cnn", dataset=placeholder_dataset(), train=TrainParams())
    assert (job.replica, job.name, job.label) == (0, "cnn", "cnn")
    second = job.model_copy(update={"replica": 2})
    assert (second.name, second.label) == ("cnn.r2", "cnn (replica 2)")
    for bad in (-1, 16):
        with pytest.raises(ValueError, match="replica"):
            TrainingJob.model_validate({**job.model_dump(), "replica": bad})
    with pytest.raises(ValueError, match="registered model name"):
        TrainingJob.model_validate({**job.model_dump(), "model": "cnn.r1"})
    # a job from before replicas (no `replica`) is replica 0
    assert TrainingJob.model_validate(job.model_dump(exclude={"replica"})).name == "cnn"


def test_the_replica_with_the_best_validation_accuracy_is_kept_not_the_best_on_test():
    results = by_name(
        result("cnn", 0, [0.5, 0.60]),
        result("cnn", 1, [0.5, 0.65]),
        result("cnn", 2, [0.5, 0.58], accuracy=0.99),  # best on training data too
    )
    # what the test set says of them (their evaluation): replica 2 would win there
    test_accuracy = {"cnn": 0.70, "cnn.r1": 0.55, "cnn.r2": 0.90}
    assert max(test_accuracy, key=test_accuracy.get) == "cnn.r2"
    kept, replicas = select_replicas(results, ["cnn"])
    assert kept["cnn"].replica == 1 and kept["cnn"].name == "cnn.r1"
    assert [r.replica for r in replicas["cnn"]] == [0, 1, 2]
    assert [r.seed for r in replicas["cnn"]] == [42, 43, 44]
    assert kept["cnn"] is replicas["cnn"][1]


def test_only_the_final_epochs_validation_accuracy_counts():
    results = by_name(result("cnn", 0, [0.9, 0.6]), result("cnn", 1, [0.1, 0.7]))
    assert select_replicas(results, ["cnn"])[0]["cnn"].replica == 1


def test_a_tie_goes_to_the_lowest_replica():
    results = by_name(result("cnn", 2, [0.7]), result("cnn", 0, [0.6]), result("cnn", 1, [0.7]))
    kept, replicas = select_replicas(results, ["cnn"])
    assert kept["cnn"].replica == 1
    assert [r.replica for r in replicas["cnn"]] == [
        0,
        1,
        2,
    ]  # in replica order, whatever came first


def test_a_replica_without_validation_accuracy_is_never_preferred():
    results = by_name(result("cnn", 0, None), result("cnn", 1, [0.0]))
    assert select_replicas(results, ["cnn"])[0]["cnn"].replica == 1
    results = by_name(result("cnn", 0, [math.nan]), result("cnn", 1, [0.1]))
    assert select_replicas(results, ["cnn"])[0]["cnn"].replica == 1
    results = by_name(result("cnn", 0, []), result("cnn", 1, None))
    assert select_replicas(results, ["cnn"])[0]["cnn"].replica == 0  # none has one: the first


def test_one_replica_keeps_the_record_as_before():
    results = by_name(result("cnn", 0, [0.5]), result("resnet50", 0, [0.4]))
    kept, replicas = select_replicas(results, ["cnn", "resnet50"])
    assert list(kept) == ["cnn", "resnet50"] and replicas == {}
    assert kept["cnn"] is results["cnn"] and kept["resnet50"] is results["resnet50"]


def test_models_are_selected_each_on_their_own():
    results = by_name(
        result("cnn", 0, [0.5]),
        result("cnn", 1, [0.6]),
        result("resnet50", 0, [0.8]),
        result("resnet50", 1, [0.7]),
    )
    kept, replicas = select_replicas(results, ["cnn", "resnet50"])
    assert {m: t.name for m, t in kept.items()} == {"cnn": "cnn.r1", "resnet50": "resnet50"}
    assert {m: [t.name for t in ts] for m, ts in replicas.items()} == {
        "cnn": ["cnn", "cnn.r1"],
        "resnet50": ["resnet50", "resnet50.r1"],
    }
    with pytest.raises(ValueError, match="no training result of model 'tiny'"):
        select_replicas(results, ["tiny"])


def test_a_result_from_before_replicas_reads_as_replica_0():
    stored = result("cnn", 0, [0.5]).model_dump(mode="json", exclude={"replica", "seed"})
    old = TrainingResult.model_validate(stored)
    assert (old.replica, old.seed, old.name) == (0, None, "cnn")


def test_the_label_shuffling_drill_breaks_the_asked_fraction_and_keeps_the_class_counts():
    from compare_models.training.drills import shuffle_labels

    y = np.arange(3000) % 10
    broken = shuffle_labels(y, 1 / 3, seed=7)
    assert np.array_equal(np.bincount(broken), np.bincount(y))  # shuffled among themselves
    changed = np.count_nonzero(broken != y)
    assert 0.8 * 1000 < changed <= 1000  # a third chosen; some keep their label by chance
    assert np.array_equal(shuffle_labels(y, 1 / 3, seed=7), broken)  # seeded
    assert np.array_equal(shuffle_labels(y, 0.0, seed=7), y)
    with pytest.raises(
        ValueError, match="COMPARE_MODELS_DRILLS's shuffle_labels must be a fraction"
    ):
        shuffle_labels(y, 1.5, seed=7)
