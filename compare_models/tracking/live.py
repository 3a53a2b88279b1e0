"""A training's nested MLflow run, its epochs logged as they end (step = epoch, from 1), so the
MLflow UI shows a training live. Used by the training process (`training.callbacks`).

The nested run is found by its tags (our run id and the training's name) or created under the
run's parent run: a retried or resumed training logs into the same nested run, and skips the
epochs an earlier attempt logged. What it could not log, the parent flow's `runs.log_run` logs
at the end of the run from the stored history (and `sync`, later)."""

from __future__ import annotations

import time

from compare_models.tracking import lookup
from compare_models.tracking.sink import Sink


class TrainingLog:
    """The nested run of one training (`training`: cnn, cnn.r1, ...) of run `run_id`."""

    def __init__(self, sink: Sink, *, track: str, run_id: str, training: str):
        self.sink, self.training = sink, training
        self.what = f"{training}: the epochs"
        self.mlflow_run_id: str | None = None
        self._logged: set[int] = set()
        experiment = lookup.experiment(sink, track)
        if experiment is None:
            return
        parent = lookup.find_run(sink, experiment, self.what, lookup.parent_tags(run_id))
        self.mlflow_run_id = lookup.find_or_create_run(
            sink,
            experiment,
            self.what,
            lookup.training_tags(run_id, training),
            name=f"{run_id} {training}",
            parent=parent.info.run_id if parent is not None else None,
        )
        if self.mlflow_run_id is not None:
            sink.call(self.what, sink.client.update_run, self.mlflow_run_id, status="RUNNING")
            self._logged = lookup.logged_steps(sink, self.mlflow_run_id, "loss", self.what) or set()

    def epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Logs epoch `epoch` (1 for the first) unless an earlier attempt did."""
        if self.mlflow_run_id is None or epoch in self._logged:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, epoch) for key, value in sorted(logs.items())]
        if self.sink.done(
            self.what, self.sink.client.log_batch, self.mlflow_run_id, metrics=metrics
        ):
            self._logged.add(epoch)

    def end(self, status: str) -> None:
        """The nested run ended (`FINISHED` or `FAILED`); a retry marks it running again."""
        if self.mlflow_run_id is not None:
            self.sink.call(self.what, self.sink.client.set_terminated, self.mlflow_run_id, status)


def training_log(*, track: str | None, run_id: str, training: str) -> TrainingLog | None:
    """The training's nested run when MLflow is on (None: off, or no track to log under)."""
    sink = Sink.open()
    if sink is None or track is None:
        return None
    return TrainingLog(sink, track=track, run_id=run_id, training=training)
