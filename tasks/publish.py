"""Evaluation, report and manifest I/O against the store. Plain functions, no Prefect.

A run's objects live under ``runs/<run-id>/``; ``manifest.json`` is written last and is
the only sign that a run is complete. A run prefix that already has a manifest is never
written to again.
"""

from __future__ import annotations

import io
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data import DatasetRef, DataError
from tasks.evaluation import evaluate_predictions, metrics_tables
from tasks.report import ModelResult, render_report
from tasks.store import MANIFEST, ArtifactStore, StoreError, run_prefix

CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png", ".csv": "text/csv", ".json": "application/json"}


class RunExists(StoreError):
    pass


def new_run_id(now: datetime, suffix: str) -> str:
    return f"{now.astimezone(timezone.utc):%Y%m%d-%H%M%S}-{suffix[:8]}"


def guard_run_prefix(store: ArtifactStore, run_id: str) -> None:
    """A completed run is immutable: refuse to write into its prefix."""
    if store.exists(run_prefix(run_id) + MANIFEST):
        raise RunExists(
            f"run {run_id!r} is already complete ({store.uri(run_prefix(run_id) + MANIFEST)}); its objects are never "
            "overwritten. Leave run_id unset for a fresh id, or choose another."
        )


def test_labels(store: ArtifactStore, dataset: DatasetRef, cache_dir: Path) -> np.ndarray:
    from tasks.data import load_split

    _, y = load_split(dataset, "test", store, cache_dir)
    return y


def evaluate_model(store: ArtifactStore, run_id: str, model: str, predictions_key: str, y_true: np.ndarray,
                   class_names: list[str]) -> dict[str, Any]:
    """Metrics of one model on the test split, stored as JSON and CSV tables."""
    with np.load(io.BytesIO(store.get_bytes(predictions_key))) as npz:
        y_prob = npz["y_prob"]
    if len(y_prob) != len(y_true):
        raise DataError(f"{model}: {len(y_prob)} predictions for {len(y_true)} test labels")
    metrics = evaluate_predictions(y_true, y_prob, class_names)
    prefix = run_prefix(run_id) + "metrics/"
    store.put_json(metrics, prefix + f"{model}.json", overwrite=True)
    for name, frame in metrics_tables(metrics).items():
        store.put_bytes(frame.to_csv().encode(), prefix + f"{model}_{name}.csv", overwrite=True, content_type="text/csv")
    return metrics


def publish_report(store: ArtifactStore, run_id: str, results: list[ModelResult], *, title: str,
                   run_info: dict[str, Any]) -> dict[str, str]:
    """Render the report and upload it; returns {file name: key}."""
    keys: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        for path in render_report(results, Path(tmp), title=title, run_info=run_info):
            key = run_prefix(run_id) + "report/" + path.name
            store.upload(path, key, overwrite=True, content_type=CONTENT_TYPES.get(path.suffix))
            keys[path.name] = key
    return keys


def write_manifest(store: ArtifactStore, run_id: str, manifest: dict[str, Any]) -> str:
    """Write the manifest last, listing every object of the run with its size."""
    prefix = run_prefix(run_id)
    objects = [
        {"key": obj["Key"], "bytes": obj["Size"]}
        for page in store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if not obj["Key"].startswith(prefix + "checkpoints/")
    ]
    body = {**manifest, "run_id": run_id, "status": "complete", "completed_at": datetime.now(timezone.utc).isoformat(),
            "objects": objects}
    return store.put_json(body, prefix + MANIFEST, overwrite=False)


LATEST = "runs/latest.json"


def move_latest(store: ArtifactStore, run_id: str, manifest_uri: str) -> None:
    """Point runs/latest.json at a completed run (only ever called after its manifest)."""
    store.put_json({"run_id": run_id, "manifest": manifest_uri, "at": datetime.now(timezone.utc).isoformat()},
                   LATEST, overwrite=True)


def list_runs(store: ArtifactStore) -> list[dict[str, Any]]:
    """All runs under runs/, complete (with manifest) or not."""
    runs = []
    for prefix in store.list_prefixes("runs/"):
        if prefix == "runs/latest.json/":
            continue
        run_id = prefix.removeprefix("runs/").rstrip("/")
        if store.exists(prefix + MANIFEST):
            manifest = store.get_json(prefix + MANIFEST)
            runs.append({"run_id": run_id, "status": "complete", "completed_at": manifest.get("completed_at"),
                         "data": manifest.get("dataset", {}).get("name"),
                         "accuracy": {m: v.get("accuracy") for m, v in manifest.get("metrics", {}).items()}})
        else:
            runs.append({"run_id": run_id, "status": "incomplete (no manifest)", "completed_at": None, "data": None, "accuracy": {}})
    return sorted(runs, key=lambda r: r["run_id"])

