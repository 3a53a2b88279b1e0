"""The live progress of `compare-models run`: the trainings' epoch lines, read back as the
bars show them."""

from __future__ import annotations

import io
import logging

from rich.console import Console
from rich.progress import Progress

from compare_models.cli.progress import EpochLine, TrainingProgress, _RunIdFromLogs


def _logged_line(label: str, epoch: int, epochs: int, logs: dict) -> str:
    """The line `EpochLogger` logs for this epoch (the real callback, no Keras fit)."""
    from compare_models.training.callbacks.epoch_logger import (
        EpochLogger,
    )  # imports Keras: not at collection

    records = []
    logger = logging.getLogger(f"test-run-progress-{label}")
    logger.addHandler(handler := logging.Handler())
    handler.emit = lambda record: records.append(record.getMessage())
    logger.setLevel(logging.INFO)
    callback = EpochLogger(logger, label, epochs, n_train=1000)
    callback.on_epoch_begin(epoch - 1)
    callback.on_epoch_end(epoch - 1, logs)
    logger.removeHandler(handler)
    return records[0]


def test_reads_the_training_s_own_epoch_line() -> None:
    message = _logged_line("cnn (replica 1)", 3, 10, {"loss": 1.25, "accuracy": 0.5, "val_loss": 2})
    line = EpochLine.parse(message)
    assert line is not None
    assert (line.label, line.epoch, line.epochs) == ("cnn (replica 1)", 3, 10)
    assert line.metrics == {"accuracy": 0.5, "loss": 1.25, "val_loss": 2.0}
    assert line.images_per_second > 0
    assert line.summary().startswith("loss 1.2500  accuracy 0.5000  ")
    assert EpochLine.parse("cnn: attempt 1 in a separate process (1 thread(s))") is None


def test_one_bar_per_training_moved_by_its_epochs() -> None:
    progress = Progress(console=Console(file=io.StringIO()))
    bars = TrainingProgress(progress)
    for label, epoch in (("cnn", 1), ("resnet50", 1), ("cnn", 2)):
        bars.show(EpochLine.parse(_logged_line(label, epoch, 6, {"loss": 1.0, "accuracy": 0.4})))
    tasks = {t.description: t for t in progress.tasks}
    assert set(tasks) == {"cnn", "resnet50"}
    assert (tasks["cnn"].completed, tasks["cnn"].total) == (2, 6)
    assert tasks["resnet50"].completed == 1 and "accuracy 0.4000" in tasks["cnn"].fields["summary"]


def test_the_run_id_comes_from_the_flow_run_s_name() -> None:
    handler = _RunIdFromLogs()
    record = logging.LogRecord("prefect.flow_runs", logging.INFO, "", 0, "x", None, None)
    record.flow_run_name = "20261203-125558-1aef7fd7 [cnn+resnet50]"
    handler.emit(record)
    assert handler.run_id == "20261203-125558-1aef7fd7"
