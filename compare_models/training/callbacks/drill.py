"""The drills inside a training (`compare_models.training.drills`): `rig`, the one hook the
training calls, and `Drill`, the callback that injects their faults into `fit`."""

from __future__ import annotations

import time

import keras
import numpy as np

from compare_models.training.drills import DRILLS_ENV, Drills, InjectedFault, shuffle_labels
from compare_models.training.jobs import Logger, TrainingJob


class Drill(keras.callbacks.Callback):
    """Makes every epoch last `drills.epoch_pause_seconds` longer, and fails the first attempt
    (`attempt` 1) right after epoch `drills.fail_after_epoch` completed and was checkpointed
    (`fit` passes it last: callbacks run in order)."""

    def __init__(self, drills: Drills, attempt: int):
        super().__init__()
        self.drills, self.attempt = drills, attempt

    def on_epoch_end(self, epoch, logs=None):
        if self.drills.epoch_pause_seconds is not None:
            time.sleep(self.drills.epoch_pause_seconds)
        if self.attempt == 1 and epoch + 1 == self.drills.fail_after_epoch:
            raise InjectedFault(
                f"injected fault after epoch {epoch + 1} ({DRILLS_ENV}: fail_after_epoch)"
            )


def rig(
    job: TrainingJob, data: dict[str, tuple[np.ndarray, np.ndarray]], logger: Logger
) -> list[keras.callbacks.Callback]:
    """Puts this process's drills (`Drills.from_environment`) in place for `job`: shuffles the
    training labels in `data` (replacing `data["train"]`, with a warning in the log) and returns
    the callbacks `fit` adds after its own (none without drills)."""
    drills = Drills.from_environment()
    if drills.shuffle_labels is not None:
        x, y = data["train"]
        data["train"] = (x, shuffle_labels(y, drills.shuffle_labels, job.train.seed))
        logger.warning(
            "%s: fault injection: %.0f%% of the training labels shuffled (%s: shuffle_labels)",
            job.label,
            100 * drills.shuffle_labels,
            DRILLS_ENV,
        )
    if drills.fail_after_epoch is None and drills.epoch_pause_seconds is None:
        return []
    return [Drill(drills, job.attempt)]
