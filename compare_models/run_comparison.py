"""The comparison step of a run, and of a replay, against the store. Plain functions.

* `compare_run`: every model's stored test predictions → paired statistics
  (`compare_models.comparison`) → `metrics/comparison.json`.
* `diagnostic_figures`: where the models disagree (gallery, confident mistakes) and how
  well calibrated they are (reliability diagram with ECE), from the stored test split.
* `replay_comparison`: a replay's predictions against its original run's, image by image,
  and which fingerprint entries changed → `metrics/replay.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from compare_models import diagnostics, fingerprint, layout
from compare_models.comparison import compare_all, compare_pair
from compare_models.config import ComparisonParams, RunParams
from compare_models.data.dataset import DatasetRef, load_split
from compare_models.publish import load_predictions
from compare_models.store import ArtifactStore, StoreError


class RunNotFound(StoreError):
    """A run id names no completed run (no manifest)."""


def completed_manifest(store: ArtifactStore, run_id: str) -> dict[str, Any]:
    """The manifest of a completed run, or RunNotFound saying what is there instead."""
    if store.exists(layout.manifest_key(run_id)):
        return store.get_json(layout.manifest_key(run_id))
    state = (
        "is incomplete (it has objects but no manifest)"
        if any(True for _ in store.list_keys(layout.run_prefix(run_id)))
        else "does not exist"
    )
    raise RunNotFound(
        f"run {run_id!r} {state} in {store.uri(layout.RUNS)}; `compare-models runs` lists the runs"
    )


def replay_params(
    store: ArtifactStore, manifest: dict[str, Any], *, run_id: str | None = None, **overrides: Any
) -> RunParams:
    """The parameters of a replay of a completed run: the same parameters and seeds, the
    same data by hash (the raw archive the original stored, checked against its SHA-256),
    and `replay_of` naming the original. `overrides` may change where it runs (execution)."""
    params = dict(manifest["params"])
    dataset = manifest["dataset"]
    if not dataset.get("synthetic"):
        raw = sorted(
            store.list_keys(layout.raw_archive_prefix(dataset["name"], dataset["archive_sha256"]))
        )
        if not raw:
            raise RunNotFound(
                f"the raw archive of run {manifest['run_id']} (SHA-256 {dataset['archive_sha256']}) is no longer "
                f"in {store.uri(layout.raw_archive_prefix(dataset['name'], dataset['archive_sha256']))}"
            )
        params.update(data=store.uri(raw[0]), data_sha256=dataset["archive_sha256"])
    params.update(run_id=run_id, replay_of=manifest["run_id"], **overrides)
    return RunParams.model_validate(params)


def stored_predictions(
    store: ArtifactStore, trained: Mapping[str, Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    return {m: load_predictions(store, t["predictions_key"]) for m, t in trained.items()}


def compare_run(
    store: ArtifactStore,
    run_id: str,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    dataset: DatasetRef,
    settings: ComparisonParams,
) -> dict[str, Any]:
    """Paired statistics of the run's models, stored as `metrics/comparison.json`."""
    comparison = compare_all(
        y_true,
        probs,
        class_names=dataset.class_names,
        n_resamples=settings.resamples,
        seed=settings.seed,
        confidence=settings.confidence,
        alpha=settings.alpha,
    )
    comparison["calibration"] = {
        m: {"ece": diagnostics.expected_calibration_error(y_true, p)} for m, p in probs.items()
    }
    store.put_json(comparison, layout.comparison_key(run_id), overwrite=True)
    return comparison


def load_test_split(
    store: ArtifactStore, dataset: DatasetRef, cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The stored test split: images in [0, 1] and labels."""
    return load_split(dataset, "test", store, cache_dir)


def diagnostic_figures(
    images: np.ndarray,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: list[str],
    out_dir: Path,
) -> list[tuple[Path, str]]:
    """The report's "where the models disagree" figures with captions."""
    figures: list[tuple[Path, str]] = []
    if len(probs) > 1:
        figures.append(
            (
                diagnostics.disagreement_gallery(
                    images, y_true, probs, class_names, out_dir / "disagreements.png"
                ),
                "Test images on which the models disagree: true label, each model's prediction and confidence "
                "(green right, red wrong)",
            )
        )
    figures.append(
        (
            diagnostics.confident_mistakes(
                images, y_true, probs, class_names, out_dir / "confident_mistakes.png"
            ),
            "Each model's most confident mistakes",
        )
    )
    path, _ = diagnostics.reliability_diagram(y_true, probs, out_dir / "reliability.png")
    figures.append(
        (
            path,
            "Reliability diagram: accuracy against confidence, with the expected calibration error (ECE)",
        )
    )
    return figures


def replay_comparison(
    store: ArtifactStore,
    original_run_id: str,
    run_id: str,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    dataset: DatasetRef,
    new_fingerprint: dict[str, Any],
    settings: ComparisonParams,
) -> dict[str, Any]:
    """How far this replay landed from its original: per model, the paired test of original
    vs replay predictions on the same images, and the fingerprint entries that changed."""
    original = completed_manifest(store, original_run_id)
    same_images = (
        original.get("dataset", {}).get("split_indices_sha256") == dataset.split_indices_sha256
    )
    if not same_images:
        raise ValueError(
            f"run {run_id} does not test on the same images as {original_run_id} (the split indices differ), "
            "so their predictions cannot be paired"
        )
    models: dict[str, Any] = {}
    for model, replay_prob in probs.items():
        if model not in original.get("models", {}):
            continue
        original_prob = load_predictions(store, original["models"][model]["predictions_key"])
        pair = compare_pair(
            y_true,
            original_prob,
            replay_prob,
            name_a="original",
            name_b="replay",
            class_names=dataset.class_names,
            n_resamples=settings.resamples,
            seed=settings.seed,
            confidence=settings.confidence,
            alpha=settings.alpha,
        )
        models[model] = {
            "identical_predictions": f"{int((original_prob.argmax(1) == replay_prob.argmax(1)).sum()):,} of {len(y_true):,}",
            "bitwise_identical_probabilities": bool(np.array_equal(original_prob, replay_prob)),
            "max_abs_probability_difference": float(
                np.abs(original_prob.astype(np.float64) - replay_prob).max()
            ),
            "pair": pair,
        }
    changes = fingerprint.differences(original.get("fingerprint", {}), new_fingerprint)
    exact = [m for m, r in models.items() if r["bitwise_identical_probabilities"]]
    summary = (
        f"{len(exact)} of {len(models)} model(s) reproduced their original predictions exactly"
        + (f" ({', '.join(exact)})" if exact else "")
        + f"; {len(changes)} fingerprint entr{'y' if len(changes) == 1 else 'ies'} changed."
    )
    result = {
        "original_run_id": original_run_id,
        "run_id": run_id,
        "models": models,
        "fingerprint_changes": changes,
        "summary": summary,
    }
    store.put_json(result, layout.replay_key(run_id), overwrite=True)
    return result
