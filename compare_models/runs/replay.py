"""Replays: a completed run again, with the same parameters, seeds and data (by hash), and
how far the replay landed from its original, image by image. Plain functions.

* `replay_params`: the parameters of a replay of a completed run;
* `replay_comparison`: per model, the paired test of the original's against the replay's
  predictions on the same images, and which fingerprint entries changed (`metrics/replay.json`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from compare_models.config import ComparisonParams, RunParams
from compare_models.runs import fingerprint
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.record import Fingerprint, Replay, ReplayOfModel, RunRecord
from compare_models.runs.stored import RunNotFound, read_record
from compare_models.statistics.paired import compare_pair
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore


def replay_params(
    store: ArtifactStore, original: RunRecord, *, run_id: str | None = None, **overrides: Any
) -> RunParams:
    """The parameters of a replay of a completed run: the same parameters and seeds, the
    same data by hash (the raw archive the original stored, checked against its SHA-256, or
    the dataset version of a folder source, by its id),
    and `replay_of` naming the original. `overrides` may change where it runs (execution)."""
    params = original.params.model_dump(mode="json")
    dataset = original.dataset
    if dataset.version_id:  # a folder source: the same images, by the version's id
        params.update(data=f"version:{dataset.version_id}", data_sha256=None)
    elif not dataset.synthetic:
        prefix = layout.raw_archive_prefix(dataset.name, dataset.archive_sha256)
        raw = sorted(store.list_keys(prefix))
        if not raw:
            raise RunNotFound(
                f"the raw archive of run {original.run_id} (SHA-256 {dataset.archive_sha256}) is no longer "
                f"in {store.uri(prefix)}"
            )
        params.update(data=store.uri(raw[0]), data_sha256=dataset.archive_sha256)
    params.update(run_id=run_id, replay_of=original.run_id, **overrides)
    return RunParams.model_validate(params)


def replay_comparison(
    artifacts: RunArtifacts,
    original_run_id: str,
    probs: Mapping[str, np.ndarray],
    new_fingerprint: Fingerprint,
    settings: ComparisonParams,
) -> Replay:
    """How far this replay landed from its original: per model, the paired test of original
    vs replay predictions on the same images, and the fingerprint entries that changed."""
    original = read_record(artifacts.store, original_run_id)
    dataset, y_true = artifacts.dataset, artifacts.test_labels()
    if original.dataset.split_indices_sha256 != dataset.split_indices_sha256:
        raise ValueError(
            f"run {artifacts.run_id} does not test on the same images as {original_run_id} (the split "
            "indices differ), so their predictions cannot be paired"
        )
    models: dict[str, ReplayOfModel] = {}
    for model, replay_prob in probs.items():
        if model not in original.models:
            continue
        original_prob = artifacts.predictions(original.models[model].predictions_key)
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
        same = int((original_prob.argmax(1) == replay_prob.argmax(1)).sum())
        models[model] = ReplayOfModel(
            identical_predictions=f"{same:,} of {len(y_true):,}",
            bitwise_identical_probabilities=bool(np.array_equal(original_prob, replay_prob)),
            max_abs_probability_difference=float(
                np.abs(original_prob.astype(np.float64) - replay_prob).max()
            ),
            pair=pair,
        )
    changes = fingerprint.differences(
        original.fingerprint.model_dump(mode="json") if original.fingerprint else {},
        new_fingerprint.model_dump(mode="json"),
    )
    exact = [m for m, r in models.items() if r.bitwise_identical_probabilities]
    summary = (
        f"{len(exact)} of {len(models)} model(s) reproduced their original predictions exactly"
        + (f" ({', '.join(exact)})" if exact else "")
        + f"; {len(changes)} fingerprint entr{'y' if len(changes) == 1 else 'ies'} changed."
    )
    replay = Replay.model_validate(
        {
            "original_run_id": original_run_id,
            "run_id": artifacts.run_id,
            "models": models,
            "fingerprint_changes": changes,
            "summary": summary,
        }
    )
    artifacts.save_replay(replay)
    return replay
