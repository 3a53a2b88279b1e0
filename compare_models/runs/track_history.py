"""A track's history, from the completed runs' records (`compare_models.runs.stored`): the rows of
`compare-models history`, and the report's trend of the track with its figures (drawn by
`compare_models.report.trends`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from compare_models.data.dataset import DatasetRef
from compare_models.models import registry
from compare_models.runs.decision import GateDecision, NoiseBand
from compare_models.runs.record import RunRecord


def test_images_of(dataset: DatasetRef) -> tuple[str | None, str | None]:
    """What makes two runs' test sets the same images: the archive and the test indices."""
    return dataset.archive_sha256, dataset.test_indices_sha256 or dataset.split_indices_sha256


def train_images(dataset: DatasetRef) -> int:
    """How many images a run trained on (the x of its learning curve)."""
    return int(dataset.sizes.get("train", 0))


def test_count(dataset: DatasetRef) -> int | None:
    """How many images a run was tested on (None: not recorded): the binomial sampling behind
    its accuracy."""
    return int(dataset.sizes.get("test", 0)) or None


def recipes_of(records: list[RunRecord], model: str) -> list[str]:
    """What makes two runs of `model` points of one learning curve, per record: the model, its
    training settings (all but the seed, the replicas and the threads, which change no
    expectation), its input size and its starting weights."""
    weighted = _takes_weights(model)  # once: it reads the installed plugins
    return [
        json.dumps(
            {
                "model": model,
                "train": record.params.train_for(model).model_dump(
                    mode="json", exclude={"seed", "replicas", "threads"}
                ),
                "resize": record.dataset.resize,
                "weights": record.params.resnet_weights if weighted else None,
            },
            sort_keys=True,
        )
        for record in records
    ]


def _takes_weights(model: str) -> bool:
    try:
        return registry.get(model).takes_weights
    except ValueError:  # a plugin's model no longer installed: its weights setting counts
        return True


class HistoryRow(BaseModel):
    """One completed run and model: metrics with the accuracy interval and the gate's decision,
    and its training images. On a folder that grows, once the gate's band came from the
    learning curve: the accuracy the curve of the earlier runs predicted at this run's training
    images, and the residual, accuracy minus prediction."""

    run_id: str
    completed_at: str | None
    track: str
    model: str
    accuracy: float
    ci_low: float | None
    ci_high: float | None
    confidence: float
    f1_macro: float
    decision: str | None
    champion_run_id: str | None
    data: str
    train_images: int
    predicted: float | None = None
    residual: float | None = None


def rows(
    records: list[RunRecord],
    *,
    model: str | None = None,
    track: str | None = None,
    last: int | None = None,
) -> list[HistoryRow]:
    """One row per completed run and model, in the order of `records`."""
    found = []
    for record in records:
        if track and record.track != track:
            continue
        for name, metrics in record.metrics.items():
            if model and name != model:
                continue
            interval = record.accuracy_interval(name)
            decision = record.gate.get(name)
            curve = decision.band.curve if decision and decision.band else None
            found.append(
                HistoryRow(
                    run_id=record.run_id,
                    completed_at=record.completed_at.isoformat() if record.completed_at else None,
                    track=record.track,
                    model=name,
                    accuracy=metrics.accuracy,
                    ci_low=interval.ci_low if interval else None,
                    ci_high=interval.ci_high if interval else None,
                    confidence=record.confidence,
                    f1_macro=metrics.f1_macro,
                    decision=decision.decision if decision else None,
                    champion_run_id=decision.champion_run_id if decision else None,
                    data=record.dataset.name,
                    train_images=train_images(record.dataset),
                    predicted=curve.predicted if curve else None,
                    residual=metrics.accuracy - curve.predicted if curve else None,
                )
            )
    return found[:last] if last else found


def trend_points(
    records: list[RunRecord], *, current: RunRecord, last: int
) -> list[dict[str, Any]]:
    """The accuracy trend of the report: the last `last` completed runs of the current run's
    track tested on the same images, oldest first, ending with the current run."""
    same = [
        r
        for r in records
        if r.track == current.track
        and test_images_of(r.dataset) == test_images_of(current.dataset)
        and r.run_id != current.run_id
    ]
    points = []
    for record in [*reversed(same[: last - 1]), current]:
        points.append(
            {
                "run_id": record.run_id,
                "completed_at": record.completed_at.isoformat() if record.completed_at else None,
                "models": {
                    m: {
                        "accuracy": interval.model_dump() if interval else None,
                        "decision": record.gate[m].decision if m in record.gate else None,
                    }
                    for m in record.metrics
                    for interval in [record.accuracy_interval(m)]
                },
            }
        )
    return points


def noise_bands(decisions: Mapping[str, GateDecision]) -> dict[str, tuple[float, float]]:
    """Per model compared with a champion under a noise band (not "off"): the accuracy range the
    band spans, the champion's accuracy (side `a` of the pair) ± the band's half-width, within
    [0, 1]."""
    bands = {}
    for model, d in decisions.items():
        if d.band is None or d.band.source == "off" or d.comparison is None:
            continue
        champion = d.comparison.accuracy.get(d.comparison.a)
        if champion is None:
            continue
        centre = champion.estimate
        bands[model] = (max(0.0, centre - d.band.points), min(1.0, centre + d.band.points))
    return bands


def band_source(band: NoiseBand) -> str:
    """ "replicas, 3 runs": where a band's estimate came from."""
    runs = f", {band.runs} run{'' if band.runs == 1 else 's'}" if band.runs else ""
    return f"{band.source}{runs}"


def recall_changes(decisions: Mapping[str, GateDecision]) -> dict[str, dict[str, Any]]:
    """Per model compared with a champion: each class's recall change and its significance."""
    return {
        model: {
            "class_names": [c.class_name for c in d.comparison.per_class],
            "difference": [c.difference for c in d.comparison.per_class],
            "significant": [c.significant for c in d.comparison.per_class],
            "champion_run_id": d.champion_run_id,
        }
        for model, d in decisions.items()
        if d.comparison is not None
    }
