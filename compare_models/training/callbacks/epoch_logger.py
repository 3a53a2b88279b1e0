"""`EpochLogger`: one log line per epoch (metrics, seconds, images/s) and the progress callback.

`compare-models run`'s live progress (`compare_models.cli.progress.EpochLine`) reads these lines
back, so their shape is part of the interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import keras

from compare_models.training.jobs import Logger


class EpochLogger(keras.callbacks.Callback):
    """Logs one line per epoch (metrics, seconds, images/s) and reports progress."""

    def __init__(
        self,
        logger: Logger,
        model_name: str,
        epochs: int,
        n_train: int,
        on_epoch: Callable[[int, int, dict], None] | None = None,
    ):
        super().__init__()
        self.logger, self.model_name, self.epochs, self.n_train, self.on_epoch = (
            logger,
            model_name,
            epochs,
            n_train,
            on_epoch,
        )
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        logs = {k: float(v) for k, v in (logs or {}).items()}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        self.logger.info(
            "%s epoch %d/%d %s (%.1f s, %.0f images/s)",
            self.model_name,
            epoch + 1,
            self.epochs,
            shown,
            seconds,
            self.n_train / seconds,
        )
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.epochs, logs)
