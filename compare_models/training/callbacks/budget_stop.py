"""`BudgetStop`: a training stopped by the run's time budget (`TrainingJob.deadline`)."""

from __future__ import annotations

import time

import keras

from compare_models.training.jobs import Logger


class BudgetStop(keras.callbacks.Callback):
    """Stops `fit` at the end of the epoch in which the run's deadline passed (after the
    epoch's checkpoint, which `S3Checkpoint` stored just before: callbacks run in order)."""

    def __init__(self, deadline: float, logger: Logger, model_name: str, epochs: int):
        super().__init__()
        self.deadline, self.logger, self.model_name, self.epochs = (
            deadline,
            logger,
            model_name,
            epochs,
        )
        self.stopped_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if time.time() >= self.deadline and epoch + 1 < self.epochs:
            self.stopped_after = epoch + 1
            self.model.stop_training = True
            self.logger.warning(
                "%s: the run's time budget is spent: stopping after epoch %d of %d (checkpoint kept; "
                "re-run with the same run id to continue)",
                self.model_name,
                epoch + 1,
                self.epochs,
            )
