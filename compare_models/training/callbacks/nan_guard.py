"""`FailOnNaN`: Keras' `TerminateOnNaN` that remembers where the loss went bad."""

from __future__ import annotations

import math

import keras


class FailOnNaN(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN` that remembers where the loss went bad, so we can fail loudly."""

    def __init__(self):
        super().__init__()
        self.nan_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.nan_at is None:
            self.nan_at = (self._epoch + 1, batch + 1)
        super().on_batch_end(batch, logs)
