"""The gate's noise band: how much a model's accuracy moves between two runs of the same recipe
(another seed, another GPU, a little more data), so that the gate calls a regression only
beyond it (Bouthillier et al., "Accounting for Variance in Machine Learning Benchmarks", 2021).

The band is a prediction interval for the difference between two runs of the recipe (a new
run and the champion): with n accuracies of the recipe and their standard deviation s,
t(coverage, n - 1) x sqrt(2) x s (`scipy.stats.t`). The t quantile makes a small sample give a
wide band (4.3 x sqrt(2) x s for 3 runs at 95%, 2.3 x sqrt(2) x s for 10), since a spread
estimated from three runs can be far too small: the median absolute deviation of three runs,
tried first, put the band at 0.4 points where seeds moved the accuracy by 5.
Its sources, in order (`NoisePolicy`):

1. the run's own replicas of the model (`train.replicas` >= 2);
2. the track's recent comparable runs of the model that were not judged a regression, at
   least `min_history` of them among the last `trend_runs`: runs on the same test images or,
   for a folder source whose data grows, runs on a version of the same folder with the same
   classes (their test sets are drawn by the same hash from the same data);
3. the typed tolerances, in points.

Each class gets its own band from the same source, on its recall; history runs recorded before
per-class recalls were kept fall back to the class tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import t as student_t

from compare_models.config import NoisePolicy
from compare_models.data.dataset import DatasetRef
from compare_models.evaluation.records import ModelMetrics
from compare_models.runs.decision import REGRESSION, NoiseBand
from compare_models.runs.record import RunRecord
from compare_models.runs.track_history import test_images_of


def half_width(values: Sequence[float], coverage: float) -> float:
    """Half-width of the `coverage` prediction interval for the difference of two new draws
    from the population `values` come from (at least two values)."""
    x = np.asarray(values, dtype=np.float64)
    quantile = float(student_t.ppf(0.5 + coverage / 2, df=x.size - 1))
    return quantile * math.sqrt(2.0) * float(x.std(ddof=1))


def _class_widths(
    metrics: Sequence[ModelMetrics], class_names: list[str], policy: NoisePolicy
) -> dict[str, float] | None:
    """Each class's band from the recalls of `metrics`, or None when too few of them recorded
    one recall per class."""
    recalls = [m.recall_per_class for m in metrics if m.recall_per_class is not None]
    recalls = [r for r in recalls if len(r) == len(class_names)]
    if len(recalls) < max(2, len(metrics) // 2 + 1):
        return None
    per_class = np.asarray(recalls, dtype=np.float64).T
    return {
        name: half_width(values, policy.coverage)
        for name, values in zip(class_names, per_class, strict=True)
    }


def tolerance(class_names: list[str], policy: NoisePolicy, why: str) -> NoiseBand:
    return NoiseBand(
        points=policy.tolerance_points / 100,
        class_points={c: policy.class_tolerance_points / 100 for c in class_names},
        source="tolerance",
        runs=0,
        detail=f"{why}; the policy's tolerance of {policy.tolerance_points:g} points "
        f"({policy.class_tolerance_points:g} per class)",
    )


def _estimated(
    metrics: Sequence[ModelMetrics],
    class_names: list[str],
    policy: NoisePolicy,
    source: str,
    what: str,
) -> NoiseBand:
    classes = _class_widths(metrics, class_names, policy)
    accuracies = [m.accuracy for m in metrics]
    detail = (
        f"{100 * policy.coverage:g}% prediction interval of the difference of two runs, from the "
        f"spread {100 * float(np.std(accuracies, ddof=1)):.2f} points of {len(accuracies)} {what}"
    )
    if classes is None:
        classes = {c: policy.class_tolerance_points / 100 for c in class_names}
        detail += f"; class bands: the tolerance of {policy.class_tolerance_points:g} points"
    return NoiseBand(
        points=half_width(accuracies, policy.coverage),
        class_points=classes,
        source=source,
        runs=len(accuracies),
        detail=detail,
    )


def _same_population(earlier: DatasetRef, current: DatasetRef) -> bool:
    if current.version_id:
        return earlier.name == current.name and earlier.class_names == current.class_names
    return test_images_of(earlier) == test_images_of(current)


def comparable_history(
    current: RunRecord, model: str, completed: Sequence[RunRecord]
) -> list[ModelMetrics]:
    """The model's metrics in the track's last `trend_runs` completed runs tested on the same
    images as `current` and not judged a regression (newest first, `current` left out): the
    recipe's ordinary runs, not the broken ones."""
    same = [
        r.metrics[model]
        for r in completed
        if r.run_id != current.run_id
        and r.track == current.track
        and model in r.metrics
        and _same_population(r.dataset, current.dataset)
        and not (model in r.gate and r.gate[model].decision == REGRESSION)
    ]
    return same[: current.params.gate.trend_runs]


def band_for(record: RunRecord, model: str, completed: Sequence[RunRecord]) -> NoiseBand:
    """The band the gate applies to `model` of `record` (see the module docstring)."""
    policy, class_names = record.params.gate.noise, record.dataset.class_names
    if not policy.enabled:
        return NoiseBand(
            points=0.0,
            class_points=dict.fromkeys(class_names, 0.0),
            source="off",
            runs=0,
            detail="gate.noise.enabled is off: every significant difference counts",
        )
    replicas = record.replica_metrics.get(model, [])
    if len(replicas) >= 2:
        return _estimated(replicas, class_names, policy, "replicas", "replicas of this run")
    history = comparable_history(record, model, completed)
    if len(history) >= policy.min_history:
        return _estimated(
            history, class_names, policy, "history", f"comparable runs of track {record.track}"
        )
    return tolerance(
        class_names,
        policy,
        f"{len(history)} comparable earlier run(s) of track {record.track}, fewer than the "
        f"{policy.min_history} needed, and no replicas",
    )
