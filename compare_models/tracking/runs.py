"""A run's MLflow runs, from its record: the parent run opened before training (`start_run`), and
everything of the run once its training is over (`ensure_logged`, which `sync.log_run` calls at
the end of the run and for `compare-models mlflow sync`).

* The parent run (one per run, in the track's experiment `compare-models/<track>`): the
  parameters flattened from `RunParams`; tags with our run id, the Prefect flow run's URL, the
  dataset version, the code's commit, the backends and the fingerprint's SHA-256; each model's
  test metrics with their intervals; the gate's decision and reason per model; links (s3:// URIs)
  to the report, the manifest and the metric tables.
* One nested run per training (every replica of every model): its parameters, each epoch's
  loss and accuracy (step = epoch) that its training did not log live, its time and speed, and
  a link to its `.keras` model.

The report, the tables and the models are linked, not copied: the bucket already holds them and
stays the record, and MLflow's own artifacts land in the same bucket, so a copy would store every
file twice. What MLflow keeps as artifacts is what only it can use: a champion's MLflow model
(`registry`).

Every call is idempotent: runs are found by their tags, metrics already there are not logged
again, parameters are logged with the values they have."""

from __future__ import annotations

import json
import time
from typing import Any

from compare_models.config import Settings
from compare_models.data.safety import redacted
from compare_models.evaluation.records import SCALAR_METRICS
from compare_models.runs.fingerprint import flatten
from compare_models.runs.record import RunRecord
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.tracking import lookup, names
from compare_models.tracking.records import Tracked
from compare_models.tracking.sink import Sink
from compare_models.training.jobs import TrainingResult, replica_params


def _text(value: Any, limit: int) -> str:
    """A parameter's or tag's value as MLflow takes it: text, without any URL's credentials (a
    data source may be a URL), cut to MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = redacted(text)
    return text if len(text) <= limit else text[: limit - 12] + "… (cut)"


def _log_batch(
    sink: Sink,
    mlflow_run_id: str,
    what: str,
    *,
    metrics: list = (),
    params: list = (),
    tags: list = (),
) -> None:
    """`log_batch` in chunks of MLflow's limits (params, metrics and tags apart)."""
    for items, size, field in (
        (params, names.BATCH_PARAMS, "params"),
        (metrics, names.BATCH_METRICS, "metrics"),
        (tags, names.BATCH_TAGS, "tags"),
    ):
        for start in range(0, len(items), size):
            sink.call(
                what, sink.client.log_batch, mlflow_run_id, **{field: items[start : start + size]}
            )


def _params(sink: Sink, mlflow_run_id: str, params: dict[str, Any], what: str) -> None:
    from mlflow.entities import Param

    items = [Param(k, _text(v, names.MAX_PARAM_VALUE)) for k, v in sorted(params.items())]
    _log_batch(sink, mlflow_run_id, what, params=items)


def _tags(sink: Sink, mlflow_run_id: str, tags: dict[str, Any], what: str) -> None:
    from mlflow.entities import RunTag

    items = [
        RunTag(k, _text(v, names.MAX_TAG_VALUE)) for k, v in sorted(tags.items()) if v is not None
    ]
    _log_batch(sink, mlflow_run_id, what, tags=items)


def _new_metrics(
    sink: Sink, mlflow_run_id: str, values: dict[str, float | None], what: str
) -> None:
    """Logs the metrics the run does not have yet (at step 0)."""
    from mlflow.entities import Metric

    run = sink.call(what, sink.client.get_run, mlflow_run_id)
    if run is None:
        return
    now = int(time.time() * 1000)
    missing = [
        Metric(k, float(v), now, 0)
        for k, v in sorted(values.items())
        if v is not None and k not in run.data.metrics
    ]
    _log_batch(sink, mlflow_run_id, what, metrics=missing)


def _epochs(sink: Sink, mlflow_run_id: str, history: dict[str, list[float]], what: str) -> None:
    """Each epoch of `history` (step = epoch, from 1) that the run does not have yet (a training
    logs its epochs live, all keys at once: `loss` says which it logged)."""
    from mlflow.entities import Metric

    logged = lookup.logged_steps(sink, mlflow_run_id, "loss", what)
    if logged is None:
        return
    now = int(time.time() * 1000)
    missing = [
        Metric(key, float(value), now, epoch)
        for key, values in sorted(history.items())
        for epoch, value in enumerate(values, start=1)
        if epoch not in logged
    ]
    _log_batch(sink, mlflow_run_id, what, metrics=missing)


def run_tags(record: RunRecord, settings: Settings | None = None) -> dict[str, Any]:
    """The parent run's tags: what identifies the run and where to find it."""
    settings = settings or Settings()
    ui = settings.ui_url
    backends = sorted({str((t.device or {}).get("backend")) for t in record.trainings()} - {"None"})
    return {
        names.RUN_ID: record.run_id,
        names.KIND: names.KIND_RUN,
        names.RUN_NAME: record.run_id,
        names.FLOW_RUN_URL: f"{ui}/runs/flow-run/{record.flow_run_id}"
        if ui and record.flow_run_id
        else None,
        names.DATASET_VERSION: record.dataset.version_id
        or record.dataset.split_key
        or record.dataset.name,
        names.COMMIT: record.fingerprint.commit if record.fingerprint else None,
        names.BACKEND: ",".join(backends) or None,
        names.FINGERPRINT: record.fingerprint.sha256 if record.fingerprint else None,
    }


def start_run(sink: Sink, record: RunRecord) -> str | None:
    """At the run's start: its experiment and parent run, with the parameters, so that its
    trainings' nested runs appear under it as they train. Returns the MLflow run id."""
    experiment = lookup.experiment(sink, record.track)
    return _parent(sink, experiment, record) if experiment is not None else None


def _parent(sink: Sink, experiment: str, record: RunRecord) -> str | None:
    """The run's parent run in `experiment`, found or created, with its parameters and tags."""
    mlflow_run_id = lookup.find_or_create_run(
        sink, experiment, "the run", lookup.parent_tags(record.run_id), name=record.run_id
    )
    if mlflow_run_id is not None:
        _params(sink, mlflow_run_id, flatten(record.params.model_dump(mode="json")), "parameters")
        _tags(sink, mlflow_run_id, run_tags(record), "the run's tags")
    return mlflow_run_id


def _training(
    sink: Sink,
    store: ArtifactStore,
    experiment: str,
    parent: str,
    record: RunRecord,
    training: TrainingResult,
) -> str | None:
    what = f"{training.name}: its nested run"
    mlflow_run_id = lookup.find_or_create_run(
        sink,
        experiment,
        what,
        lookup.training_tags(record.run_id, training.name),
        name=f"{record.run_id} {training.name}",
        parent=parent,
    )
    if mlflow_run_id is None:
        return None
    train = replica_params(record.params.train_for(training.model), training.replica)
    _params(
        sink,
        mlflow_run_id,
        {
            "model": training.model,
            "replica": training.replica,
            "parameters": training.parameters,
            **flatten(train.model_dump(mode="json"), "train"),
        },
        what,
    )
    kept = record.models.get(training.model)
    _tags(
        sink,
        mlflow_run_id,
        {
            names.MODEL: training.model,
            names.REPLICA: training.replica,
            names.BACKEND: (training.device or {}).get("backend"),
            names.MODEL_URI: store.uri(training.model_key),
            names.KEPT: str(kept is not None and kept.name == training.name).lower(),
        },
        what,
    )
    _epochs(sink, mlflow_run_id, training.history, f"{training.name}: the epochs")
    _new_metrics(
        sink,
        mlflow_run_id,
        {
            "fit_seconds": training.fit_seconds,
            "train_images_per_second": training.train_images_per_second,
            "peak_rss_mb": training.peak_rss_mb,
        },
        what,
    )
    sink.call(what, sink.client.set_terminated, mlflow_run_id, "FINISHED")
    return mlflow_run_id


def _results(record: RunRecord) -> dict[str, float | None]:
    """The parent run's metrics: each model's test metrics, with the accuracy's and F1's
    interval."""
    values: dict[str, float | None] = {}
    for model, metrics in record.metrics.items():
        for name in SCALAR_METRICS:
            values[f"{model}.test_{name}"] = metrics.scalar(name)
        intervals = record.comparison.models.get(model) if record.comparison else None
        for name in ("accuracy", "f1_macro"):
            interval = getattr(intervals, name, None) if intervals else None
            if interval is not None:
                values[f"{model}.test_{name}.ci_low"] = interval.ci_low
                values[f"{model}.test_{name}.ci_high"] = interval.ci_high
    return values


def _gate_and_links(record: RunRecord, store: ArtifactStore) -> dict[str, Any]:
    tags: dict[str, Any] = {
        names.REPORT: store.uri(layout.report_key(record.run_id, "index.html")),
        names.MANIFEST: store.uri(layout.manifest_key(record.run_id)),
    }
    for model in record.metrics:
        tags[f"{names.METRICS_URI}.{model}"] = store.uri(layout.metrics_key(record.run_id, model))
    for model, decision in record.gate.items():
        tags[f"{names.GATE}.{model}.decision"] = decision.decision
        tags[f"{names.GATE}.{model}.reason"] = decision.reason
    return tags


def ensure_logged(sink: Sink, store: ArtifactStore, record: RunRecord, *, by: str) -> Tracked:
    """Logs what MLflow does not have yet of `record` (a run whose training is over): the parent
    run and one nested run per training. The registry is `log_run`'s."""
    experiment = lookup.experiment(sink, record.track)
    parent = _parent(sink, experiment, record) if experiment is not None else None
    trainings: dict[str, str] = {}
    if parent is None:
        sink.note("the run, its trainings and results", "there is no MLflow run to log them to")
    else:
        for training in record.trainings():
            found = _training(sink, store, experiment, parent, record, training)
            if found is not None:
                trainings[training.name] = found
        _new_metrics(sink, parent, _results(record), "the test metrics")
        _tags(sink, parent, _gate_and_links(record, store), "the gate's decisions and the links")
        sink.call("the run's end", sink.client.set_terminated, parent, "FINISHED")
    return Tracked(
        uri=sink.uri,
        experiment_id=experiment,
        run_id=parent,
        trainings=trainings,
        not_logged=list(sink.problems),
        by=by,
    )
