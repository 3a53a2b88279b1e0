"""`MlflowEpochs`: each epoch's metrics to the training's nested MLflow run as the epoch ends
(`compare_models.tracking.live`), when MLflow is on. It never fails a training: what MLflow does
not take is noted there, and logged at the end of the run from the stored history."""

from __future__ import annotations

import keras

from compare_models.tracking.live import TrainingLog


class MlflowEpochs(keras.callbacks.Callback):
    def __init__(self, log: TrainingLog):
        super().__init__()
        self.log = log

    def on_epoch_end(self, epoch, logs=None):
        self.log.epoch(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})
