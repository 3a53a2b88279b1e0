"""Evaluation, report and manifest I/O against the store. Plain functions, no Prefect.

A run's objects live under ``runs/<run-id>/``; ``manifest.json`` is written last and is
the only sign that a run is complete. A run prefix that already has a manifest is never
written to again.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from compare_models import layout, registry
from compare_models.config import RunParams
from compare_models.data.dataset import DataError, DatasetRef
from compare_models.evaluation import SCALAR_METRICS, evaluate_predictions, metrics_tables
from compare_models.report import ModelResult, Sections, render_report
from compare_models.store import ArtifactStore, PreconditionFailed, StoreError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".csv": "text/csv",
    ".json": "application/json",
}


class RunExists(StoreError):
    pass


def new_run_id(now: datetime, suffix: str) -> str:
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{suffix[:8]}"


def guard_run_prefix(store: ArtifactStore, run_id: str) -> str:
    """A completed run is immutable: refuse to write into its prefix. The one exception is a
    run the time budget stopped: a later run with its id continues it (its manifest is kept
    under `previous/`). Returns "new" or "continuing"."""
    if store.exists(layout.manifest_key(run_id)):
        if store.get_json(layout.manifest_key(run_id)).get("stopped_by_budget"):
            return "continuing"
        raise RunExists(
            f"run {run_id!r} is already complete ({store.uri(layout.manifest_key(run_id))}); its objects are never "
            "overwritten. Leave run_id unset for a fresh id, or choose another."
        )
    return "new"


class RunClaimed(StoreError):
    """Another live flow run is writing this run id."""


def claim_run(
    store: ArtifactStore, run_id: str, owner: str, *, owner_alive: Callable[[str], bool]
) -> str:
    """Claims the run prefix for `owner` (a flow run id) before anything is written to it.

    The claim is a conditional put, so of two runs started with the same run id at once
    exactly one writes. A claim held by `owner` itself (a retry) is kept; one held by a
    writer that is no longer alive is taken over, again conditionally: a re-run that
    resumes a failed, crashed or killed run. Alive means: `owner_alive(flow_run_id)` (the
    flow run is not in a final state) and, on this host, the claiming process still exists
    (pid and start time), so a run killed here is taken over at once. Returns how the run
    was claimed.
    """
    key = layout.claim_key(run_id)
    me = process_identity()
    for _ in range(3):
        claim, etag = store.get_json_versioned(key)
        holder = claim.get("owner") if isinstance(claim, dict) else None
        if holder == owner:
            return "already ours"
        if holder is not None and _claim_alive(claim, owner_alive):
            raise RunClaimed(
                f"run {run_id!r} is being written by flow run {holder} (claimed {claim.get('at')}); two runs "
                "never write one run id at once. Wait for it to finish, cancel it, or choose another run_id."
            )
        try:
            store.put_json_if(
                {
                    "owner": owner,
                    "at": datetime.now(UTC).isoformat(),
                    "previous": holder,
                    **me,
                },
                key,
                etag=etag,
            )
            return "claimed" if holder is None else f"taken over from {holder} (no longer running)"
        except PreconditionFailed:
            continue  # someone claimed or took over meanwhile: look again
    raise RunClaimed(
        f"run {run_id!r} was claimed by another flow run at the same moment; choose another run_id"
    )


def process_identity() -> dict[str, Any]:
    """This process as a claim records it: host, pid and the pid's start time."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
    }


def _claim_alive(claim: dict[str, Any], owner_alive: Callable[[str], bool]) -> bool:
    """The holder may still write: its flow run is not finished and, on this host, its process exists."""
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
        import psutil

        try:
            if (
                abs(psutil.Process(claim["pid"]).create_time() - float(claim.get("pid_started", 0)))
                >= 1
            ):
                return False  # the pid was reused: the claiming process is gone
        except (psutil.Error, TypeError, ValueError):
            return False  # that process is gone: a killed run
    return owner_alive(str(claim["owner"]))


def test_labels(store: ArtifactStore, dataset: DatasetRef, cache_dir: Path) -> np.ndarray:
    from compare_models.data.dataset import load_split

    _, y = load_split(dataset, "test", store, cache_dir)
    return y


def load_predictions(store: ArtifactStore, key: str) -> np.ndarray:
    """A model's stored test-set probabilities (`predictions.npz`, no pickles)."""
    with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as npz:
        return npz["y_prob"]


def evaluate_model(
    store: ArtifactStore,
    run_id: str,
    model: str,
    predictions_key: str,
    y_true: np.ndarray,
    class_names: list[str],
) -> dict[str, Any]:
    """Metrics of one model on the test split, stored as JSON and CSV tables."""
    y_prob = load_predictions(store, predictions_key)
    if len(y_prob) != len(y_true):
        raise DataError(f"{model}: {len(y_prob)} predictions for {len(y_true)} test labels")
    metrics = evaluate_predictions(y_true, y_prob, class_names)
    store.put_json(metrics, layout.metrics_key(run_id, model), overwrite=True)
    for name, frame in metrics_tables(metrics).items():
        store.put_bytes(
            frame.to_csv().encode(),
            layout.metrics_table_key(run_id, model, name),
            overwrite=True,
            content_type="text/csv",
        )
    return metrics


def publish_report(
    store: ArtifactStore,
    run_id: str,
    results: list[ModelResult],
    *,
    title: str,
    run_info: dict[str, Any],
    sections: Callable[[Path], Sections] | None = None,
) -> dict[str, str]:
    """Render the report and upload it; returns {file name: key}.

    `sections(out_dir)`, when given, writes the optional sections' figures into the report
    folder and returns the sections (see `compare_models.report.Sections`).
    """
    keys: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        extra = sections(Path(tmp)) if sections else None
        for path in render_report(
            results, Path(tmp), title=title, run_info=run_info, sections=extra
        ):
            key = layout.report_key(run_id, path.name)
            store.upload(path, key, overwrite=True, content_type=CONTENT_TYPES.get(path.suffix))
            keys[path.name] = key
    return keys


def write_manifest(store: ArtifactStore, run_id: str, manifest: dict[str, Any]) -> str:
    """Write the manifest last, listing every object of the run with its size."""
    checkpoints = layout.checkpoints_prefix(run_id)
    objects = [
        {"key": key, "bytes": size}
        for key, size in store.list_objects(layout.run_prefix(run_id))
        if not key.startswith(checkpoints)
    ]
    body = {
        **manifest,
        "run_id": run_id,
        "status": "complete",
        "completed_at": datetime.now(UTC).isoformat(),
        "objects": objects,
    }
    key = layout.manifest_key(run_id)
    continuing = guard_run_prefix(store, run_id) == "continuing"
    if continuing:  # the budget-stopped manifest this run continues is kept, not lost
        earlier = store.get_json(key)
        store.put_json(
            earlier, layout.previous_manifest_key(run_id, earlier["completed_at"]), overwrite=False
        )
    return store.put_json(body, key, overwrite=continuing)


def move_latest(store: ArtifactStore, run_id: str, manifest_uri: str) -> None:
    """Point runs/latest.json at a completed run (only ever called after its manifest)."""
    store.put_json(
        {"run_id": run_id, "manifest": manifest_uri, "at": datetime.now(UTC).isoformat()},
        layout.LATEST,
        overwrite=True,
    )


def list_runs(store: ArtifactStore) -> list[dict[str, Any]]:
    """All runs under runs/, complete (with manifest) or not."""
    runs = []
    for prefix in store.list_prefixes(layout.RUNS):
        run_id = layout.run_id_of(prefix)
        if store.exists(layout.manifest_key(run_id)):
            manifest = store.get_json(layout.manifest_key(run_id))
            runs.append(
                {
                    "run_id": run_id,
                    "status": "complete",
                    "completed_at": manifest.get("completed_at"),
                    "data": manifest.get("dataset", {}).get("name"),
                    "accuracy": {
                        m: v.get("accuracy") for m, v in manifest.get("metrics", {}).items()
                    },
                }
            )
        else:
            runs.append(
                {
                    "run_id": run_id,
                    "status": "incomplete (no manifest)",
                    "completed_at": None,
                    "data": None,
                    "accuracy": {},
                }
            )
    return sorted(runs, key=lambda r: r["run_id"])


# ── what a completed run records ─────────────────────────────────────────────────

#: The training result fields a manifest keeps per model, and the metrics it repeats.
MANIFEST_MODEL_FIELDS = (
    "model_key",
    "history_key",
    "predictions_key",
    "epochs",
    "planned_epochs",
    "stopped_by_budget",
    "fit_seconds",
    "train_images_per_second",
    "parameters",
    "peak_rss_mb",
    "device",
)


def budget_notes(trained: dict[str, dict]) -> dict[str, str]:
    """{model: "stopped by budget after N of M epochs"} for the models the time budget stopped."""
    return {
        m: f"stopped by budget after {t['epochs']} of {t['planned_epochs']} epochs"
        for m, t in trained.items()
        if t.get("stopped_by_budget")
    }


def report_title(run_id: str, dataset: DatasetRef) -> str:
    return f"compare-models {run_id}" + (" (SYNTHETIC DATA)" if dataset.synthetic else "")


def epochs_text(params: RunParams) -> str:
    """ "3" when every model trains as many epochs, else "6 (cnn), 3 (resnet50)"."""
    epochs = {m: params.train_for(m).epochs for m in params.models}
    if len(set(epochs.values())) == 1:
        return str(next(iter(epochs.values())))
    return ", ".join(f"{n} ({m})" for m, n in epochs.items())


def per_model_training(params: RunParams) -> str:
    """The models' own training settings (`train_per_model`), e.g. "cnn: epochs 6"."""
    return "; ".join(
        f"{m}: " + ", ".join(f"{k} {v}" for k, v in params.train_per_model[m].items())
        for m in params.models
        if params.train_per_model.get(m)
    )


def small_run_note(params: RunParams, dataset: DatasetRef) -> str | None:
    """For the small presets, a plain sentence that this is no result of the report's protocol."""
    if params.preset not in ("demo", "smoke"):
        return None
    return (
        f"a small {params.preset} run ({dataset.sizes.get('train', 0):,} training images, "
        f"{epochs_text(params)} epoch(s)): not the report's protocol; run it with `--preset seed` "
        "(16,250 images, 10 epochs)"
    )


def run_info(
    run_id: str, params: RunParams, dataset: DatasetRef, trained: dict[str, dict] | None = None
) -> dict[str, Any]:
    """The settings a report shows at the top (plain values, escaped by the renderer)."""
    weights = [m for m in params.models if registry.get(m).takes_weights]
    return {
        "run_id": run_id,
        "data_source": dataset.source,
        "data_source_kind": "synthetic" if dataset.synthetic else "archive",
        "dataset": dataset.name,
        "archive_sha256": dataset.archive_sha256,
        "split_sizes": json.dumps(dataset.sizes),
        "epochs": epochs_text(params),
        "batch_size": params.train.batch_size,
        "optimizer": params.train.optimizer,
        "learning_rate": params.train.learning_rate,
        "lr_schedule": params.train.lr_schedule,
        "augment": params.train.augment,
        "per_model_training": per_model_training(params) or "-",
        "resnet_weights": params.resnet_weights if weights else "-",
        "preset": params.preset or "-",
        "scale": small_run_note(params, dataset) or "-",
        "time_budget": f"{params.execution.time_budget_minutes:g} min"
        if params.execution.time_budget_minutes
        else "-",
        "stopped_by_budget": "; ".join(
            f"{m}: {note}" for m, note in budget_notes(trained or {}).items()
        )
        or "-",
    }


def model_results(
    params: RunParams, trained: dict[str, dict], metrics: dict[str, dict]
) -> list[ModelResult]:
    return [
        ModelResult(
            name=m,
            history=trained[m]["history"],
            metrics=metrics[m],
            train_seconds=trained[m]["fit_seconds"],
            parameters=trained[m]["parameters"],
        )
        for m in params.models
    ]


def build_manifest(
    *,
    flow_run_id: str | None,
    params: RunParams,
    dataset: DatasetRef,
    weights_key: str | None,
    trained: dict[str, dict],
    metrics: dict[str, dict],
    report_uri: str,
    report_files: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of `manifest.json` (`write_manifest` adds the run id, status and object list)."""
    return {
        "flow_run_id": flow_run_id,
        "params": params.model_dump(mode="json"),
        "dataset": dataset.model_dump(mode="json", exclude={"reused", "seconds"}),
        "synthetic_data": dataset.synthetic,
        "resnet_weights_key": weights_key,
        "models": {m: {k: trained[m].get(k) for k in MANIFEST_MODEL_FIELDS} for m in params.models},
        "budget": {
            "minutes": params.execution.time_budget_minutes,
            "stopped": budget_notes(trained),
        },
        "stopped_by_budget": bool(budget_notes(trained)),
        "scale": small_run_note(params, dataset),
        "metrics": {m: {k: metrics[m][k] for k in SCALAR_METRICS} for m in params.models},
        "report": {"index": report_uri, "files": report_files},
        **(extra or {}),
    }


def run_summary(
    store: ArtifactStore,
    run_id: str,
    manifest: dict[str, Any],
    manifest_uri: str,
    dataset: DatasetRef,
) -> dict[str, Any]:
    """What the flow returns (and `compare-models run --json` prints)."""
    return {
        "run_id": run_id,
        "prefix": store.uri(layout.run_prefix(run_id)),
        "report": manifest["report"]["index"],
        "manifest": manifest_uri,
        "synthetic_data": dataset.synthetic,
        "metrics": manifest["metrics"],
        "scale": manifest.get("scale"),
        "comparison": manifest.get("comparison"),
        "replay": manifest.get("replay"),
        "gate": manifest.get("gate"),
        "models": {m: store.uri(v["model_key"]) for m, v in manifest["models"].items()},
        "data": {
            "name": dataset.name,
            "synthetic": dataset.synthetic,
            "prefix": store.uri(dataset.prefix),
            "reused": dataset.reused,
            "sizes": dataset.sizes,
        },
    }
