"""The runs a bucket remembers: completed runs read back from their manifests, newest first,
for `compare-models history` and the report's accuracy trend."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from compare_models import layout
from compare_models.store import ArtifactStore

#: manifests read at once (boto3 clients are thread-safe; its default pool holds 10 connections)
_READERS = 8


def completed_manifests(store: ArtifactStore) -> list[dict[str, Any]]:
    """Every completed run's manifest, newest first (by completion time).

    One GET per run (a run without a manifest is incomplete and left out), several at a time:
    a nightly track's history grows by a run a day, and each report reads it."""
    keys = [layout.manifest_key(layout.run_id_of(p)) for p in store.list_prefixes(layout.RUNS)]
    with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="manifests") as pool:
        found = pool.map(lambda key: store.get_json_versioned(key)[0], keys)
        manifests = [m for m in found if m is not None]
    return sorted(manifests, key=lambda m: m.get("completed_at") or "", reverse=True)


def track_of(manifest: Mapping[str, Any]) -> str | None:
    return (manifest.get("params", {}).get("gate") or {}).get("track")


def test_images_of(dataset: Mapping[str, Any]) -> tuple[Any, Any]:
    """What makes two runs' test sets the same images: the archive and the test indices."""
    return dataset.get("archive_sha256"), dataset.get("test_indices_sha256") or dataset.get(
        "split_indices_sha256"
    )


def rows(
    manifests: list[dict[str, Any]],
    *,
    model: str | None = None,
    track: str | None = None,
    last: int | None = None,
) -> list[dict[str, Any]]:
    """One row per completed run and model: metrics with the accuracy interval and the gate's decision."""
    found = []
    for manifest in manifests:
        if track and track_of(manifest) != track:
            continue
        intervals = (manifest.get("comparison") or {}).get("models", {})
        for name, metrics in manifest.get("metrics", {}).items():
            if model and name != model:
                continue
            interval = intervals.get(name, {}).get("accuracy") or {}
            decision = (manifest.get("gate") or {}).get(name, {})
            found.append(
                {
                    "run_id": manifest["run_id"],
                    "completed_at": manifest.get("completed_at"),
                    "track": track_of(manifest),
                    "model": name,
                    "accuracy": metrics.get("accuracy"),
                    "ci_low": interval.get("ci_low"),
                    "ci_high": interval.get("ci_high"),
                    "f1_macro": metrics.get("f1_macro"),
                    "decision": decision.get("decision"),
                    "champion_run_id": decision.get("champion_run_id"),
                    "data": manifest.get("dataset", {}).get("name"),
                }
            )
    return found[:last] if last else found


def trend_points(
    manifests: list[dict[str, Any]],
    *,
    track: str,
    dataset: Mapping[str, Any],
    current: Mapping[str, Any],
    last: int,
) -> list[dict[str, Any]]:
    """The accuracy trend of the report: the last `last` completed runs of the track tested on
    the same images as this run, oldest first, ending with this run (`current`)."""
    same = [
        m
        for m in manifests
        if track_of(m) == track
        and test_images_of(m.get("dataset", {})) == test_images_of(dataset)
        and m["run_id"] != current["run_id"]
    ]
    points = []
    for manifest in [*reversed(same[: last - 1]), current]:
        intervals = (manifest.get("comparison") or {}).get("models", {})
        gate = manifest.get("gate") or {}
        points.append(
            {
                "run_id": manifest["run_id"],
                "completed_at": manifest.get("completed_at"),
                "models": {
                    m: {
                        "accuracy": intervals.get(m, {}).get(
                            "accuracy"
                        ),  # None: a run from before intervals
                        "decision": gate.get(m, {}).get("decision"),
                    }
                    for m, v in manifest.get("metrics", {}).items()
                },
            }
        )
    return points


def champion_figures(
    manifests: list[dict[str, Any]],
    *,
    track: str,
    dataset: Mapping[str, Any],
    current: Mapping[str, Any],
    last: int,
    decisions: Mapping[str, Mapping[str, Any]],
    out_dir: Path,
) -> list[tuple[Path, str]]:
    """The report's "vs champion" figures: the accuracy trend of the track and, for models
    compared with a champion, the per-class recall changes."""
    from compare_models import trends

    points = trend_points(manifests, track=track, dataset=dataset, current=current, last=last)
    figures = [
        (
            trends.plot_accuracy_trend(points, out_dir / "accuracy_trend.png"),
            f"Test accuracy (95% CI) over the last {len(points)} comparable run(s) of track {track}, "
            "with promotions and regressions",
        )
    ]
    changes = {
        model: {
            "class_names": [c["class"] for c in d["comparison"]["per_class"]],
            "difference": [c["difference"] for c in d["comparison"]["per_class"]],
            "significant": [c["significant"] for c in d["comparison"]["per_class"]],
            "champion_run_id": d["champion_run_id"],
        }
        for model, d in decisions.items()
        if d.get("comparison")
    }
    figures.append(
        (
            trends.plot_recall_changes(changes, out_dir / "recall_changes.png"),
            "Per-class recall change against the champion (points; * significant after Holm)",
        )
    )
    return figures
