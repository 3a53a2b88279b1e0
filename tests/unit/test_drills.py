"""The drills: one typed record, handed to a training process as one environment variable, put
in place by one hook (`callbacks.drill.rig`)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from compare_models.training.drills import DRILLS_ENV, Drills, InjectedFault


def test_the_drills_travel_as_one_variable_and_read_back():
    drills = Drills(fail_after_epoch=2, epoch_pause_seconds=0.5, shuffle_labels=0.25)
    env = drills.environment()
    assert list(env) == [DRILLS_ENV] == ["COMPARE_MODELS_DRILLS"]
    assert Drills.from_environment(env) == drills
    assert Drills(fail_after_epoch=3).environment() == {DRILLS_ENV: '{"fail_after_epoch":3}'}


def test_no_variable_no_drills():
    assert Drills.from_environment({}) == Drills() == Drills.from_environment({DRILLS_ENV: " "})
    assert Drills() == Drills(fail_after_epoch=None, epoch_pause_seconds=None, shuffle_labels=None)


@pytest.mark.parametrize(
    "value",
    [
        "2",  # the old variables' plain values are not a record
        '{"fail_after_epoch": 0}',
        '{"shuffle_labels": 1.5}',
        '{"epoch_pause_seconds": -1}',
        '{"fail_after": 2}',  # a misspelt drill is refused, not ignored
    ],
)
def test_a_malformed_drill_is_refused_by_name(value):
    with pytest.raises(ValueError, match="COMPARE_MODELS_DRILLS=.* is not a drill record"):
        Drills.from_environment({DRILLS_ENV: value})


def _job(attempt: int = 1):
    from compare_models.config import TrainParams
    from compare_models.training.jobs import TrainingJob
    from tests.support.runs import placeholder_dataset

    return TrainingJob(
        run_id="r1",
        model="cnn",
        dataset=placeholder_dataset(),
        train=TrainParams(epochs=3, seed=7),
        attempt=attempt,
    )


def test_the_hook_shuffles_the_labels_and_adds_the_fault_last(monkeypatch, caplog):
    """`rig` (the training's one hook, real Keras callbacks, no fit): labels shuffled as
    `shuffle_labels` shuffles them, and the fault raised after the asked epoch of attempt 1."""
    pytest.importorskip("keras")
    from compare_models.training.callbacks.drill import Drill, rig
    from compare_models.training.drills import shuffle_labels

    y = np.arange(300) % 10
    x = np.zeros((300, 2))
    data = {"train": (x, y), "val": (x, y), "test": (x, y)}
    logger = logging.getLogger("test-drills")
    monkeypatch.delenv(DRILLS_ENV, raising=False)
    assert rig(_job(), data, logger) == [] and data["train"][1] is y  # normal operation

    monkeypatch.setenv(DRILLS_ENV, Drills(fail_after_epoch=2, shuffle_labels=0.5).model_dump_json())
    with caplog.at_level(logging.WARNING, logger="test-drills"):
        callbacks = rig(_job(), data, logger)
    assert np.array_equal(data["train"][1], shuffle_labels(y, 0.5, seed=7))
    assert "50% of the training labels shuffled" in caplog.text
    [drill] = callbacks
    assert isinstance(drill, Drill)
    drill.on_epoch_end(0)  # epoch 1: goes on
    with pytest.raises(InjectedFault, match="injected fault after epoch 2"):
        drill.on_epoch_end(1)
    retry = rig(_job(attempt=2), dict(data), logger)[0]
    retry.on_epoch_end(1)  # a retry is not failed again


def test_the_pause_drill_slows_every_epoch(monkeypatch):
    pytest.importorskip("keras")
    import time

    from compare_models.training.callbacks.drill import rig

    monkeypatch.setenv(DRILLS_ENV, Drills(epoch_pause_seconds=0.2).model_dump_json())
    data = {"train": (np.zeros((4, 1)), np.zeros(4))}
    [drill] = rig(_job(attempt=2), data, logging.getLogger("test-drills"))
    started = time.monotonic()
    drill.on_epoch_end(0)
    assert time.monotonic() - started >= 0.2
