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
2. on a folder whose data grew (the comparable runs below span at least two versions, so two
   training-set sizes): the scatter of the recipe's runs around their learning curve, once
   there are `curve_min_runs` runs of one recipe (the same model, training settings and input
   size). The band for the difference from the champion bounds two runs' own noise, 2 tau^2,
   tau the runs' standard deviation around the curve beyond their test sets' sampling, with
   its uncertainty from the fit's degrees of freedom; the curve also predicts tonight's
   accuracy, and `CurveBand.residual_points` bounds tonight's residual from it, tonight's
   test sampling included (`compare_models.statistics.learning_curve`). Too few runs for
   the curve: the tolerance,
   since the spread of accuracies that rise with the data measures the rise;
3. when the data did not grow: the track's recent comparable runs of the model that were not
   judged a regression, at least `min_history` of them among the last `trend_runs`: runs on
   the same test images or, for a folder source, runs on a version of the same folder with the
   same classes (their test sets are drawn by the same hash from the same data);
4. the typed tolerances, in points.

Each class gets its own band from the same source, on its recall (on the curve: each class's
recall against the training images, fitted in the accuracy's form). Where that source has no
per-class estimate (the tolerance, or history runs recorded before per-class recalls were
kept), a class's band comes from the run's own test predictions (`class_band`,
`compare_models.statistics.class_noise`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import t as student_t

from compare_models.config import NoisePolicy
from compare_models.data.dataset import DatasetRef
from compare_models.evaluation.records import ModelMetrics
from compare_models.runs.decision import REGRESSION, CurveBand, NoiseBand
from compare_models.runs.record import RunRecord
from compare_models.runs.track_history import (
    recipes_of,
    test_count,
    test_images_of,
    train_images,
)
from compare_models.statistics.class_noise import PAIRS, class_recall_bands
from compare_models.statistics.learning_curve import CurvePoint, LearningCurve, fit_curve


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


def _class_tolerance(class_names: list[str], policy: NoisePolicy) -> dict[str, float]:
    """Every class's band at the policy's class tolerance."""
    return dict.fromkeys(class_names, policy.class_tolerance_points / 100)


def _class_tolerance_note(policy: NoisePolicy) -> str:
    return f"; class bands: the tolerance of {policy.class_tolerance_points:g} points"


def tolerance(class_names: list[str], policy: NoisePolicy, why: str) -> NoiseBand:
    return NoiseBand(
        points=policy.tolerance_points / 100,
        class_points=_class_tolerance(class_names, policy),
        source="tolerance",
        runs=0,
        class_source="tolerance",
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
    class_source = None
    if classes is None:
        classes = _class_tolerance(class_names, policy)
        class_source = "tolerance"
        detail += _class_tolerance_note(policy)
    return NoiseBand(
        points=half_width(accuracies, policy.coverage),
        class_points=classes,
        source=source,
        runs=len(accuracies),
        detail=detail,
        class_source=class_source,
    )


def _same_population(earlier: DatasetRef, current: DatasetRef) -> bool:
    if current.version_id:
        return earlier.name == current.name and earlier.class_names == current.class_names
    return test_images_of(earlier) == test_images_of(current)


def comparable_runs(
    current: RunRecord, model: str, completed: Sequence[RunRecord]
) -> list[RunRecord]:
    """The track's last `trend_runs` completed runs with `model`, tested on the same images as
    `current` and not judged a regression (newest first, `current` left out): the recipe's
    ordinary runs, not the broken ones."""
    same = [
        r
        for r in completed
        if r.run_id != current.run_id
        and r.track == current.track
        and model in r.metrics
        and _same_population(r.dataset, current.dataset)
        and not (model in r.gate and r.gate[model].decision == REGRESSION)
    ]
    return same[: current.params.gate.trend_runs]


def band_for(
    record: RunRecord,
    model: str,
    completed: Sequence[RunRecord],
    *,
    probs: np.ndarray | None = None,
    y_true: np.ndarray | None = None,
) -> NoiseBand:
    """The band the gate applies to `model` of `record` (see the module docstring); `probs`
    and `y_true`, the run's test probabilities and labels, serve the class bands that come
    from the run's own predictions."""
    policy = record.params.gate.noise
    return _classes_from_predictions(_source_band(record, model, completed), policy, probs, y_true)


def _source_band(record: RunRecord, model: str, completed: Sequence[RunRecord]) -> NoiseBand:
    """The band from the first source that has one, before any class band is estimated from
    the run's predictions."""
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
    runs = comparable_runs(record, model, completed)
    sizes = {train_images(r.dataset) for r in runs}
    if policy.curve and record.dataset.version_id and len(sizes) >= 2:
        same_recipe = _curve_runs(record, model, runs, policy)
        if len(same_recipe) >= policy.curve_min_runs:
            band = _from_curve(record, model, same_recipe, policy)
            if band is not None:
                return band
        return tolerance(
            class_names,
            policy,
            f"the folder grew over the {len(runs)} comparable earlier run(s) of track "
            f"{record.track} ({len(sizes)} training-set sizes), so their spread measures the "
            f"rise; the learning curve needs {policy.curve_min_runs} runs of this recipe on "
            f"two or more sizes and has {len(same_recipe)}",
        )
    history = [r.metrics[model] for r in runs]
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


def _curve_runs(
    record: RunRecord, model: str, runs: list[RunRecord], policy: NoisePolicy
) -> list[RunRecord]:
    """The runs of one recipe the curve is fitted to: tonight's recipe when the track has
    `curve_min_runs` runs of it, else the recipe of the track's newest run, so that a changed
    recipe (a tenth of the learning rate) is judged by what the track's recipe achieves."""
    tonight, *theirs = recipes_of([record, *runs], model)
    same = [r for r, their in zip(runs, theirs, strict=True) if their == tonight]
    if len(same) >= policy.curve_min_runs or not runs:
        return same
    return [r for r, their in zip(runs, theirs, strict=True) if their == theirs[0]]


def _from_curve(
    record: RunRecord, model: str, runs: Sequence[RunRecord], policy: NoisePolicy
) -> NoiseBand | None:
    """The band from the runs' scatter around their learning curve (None: the fit failed)."""
    fit = fit_curve(
        [
            CurvePoint(
                run_id=r.run_id,
                train_images=train_images(r.dataset),
                value=r.metrics[model].accuracy,
                test_images=test_count(r.dataset),
            )
            for r in runs
        ],
        coverage=policy.coverage,
        form=policy.curve_form,
    )
    if fit is None:
        return None
    tonight, test = train_images(record.dataset), test_count(record.dataset)
    expected = CurveBand(
        fit=fit,
        train_images=tonight,
        test_images=test,
        predicted=fit.predict(tonight),
        residual_points=float(fit.residual_half_width(tonight, test)[0]),
    )
    names = record.dataset.class_names
    classes = _class_curves(names, runs, model, fit)
    detail = (
        f"{100 * policy.coverage:g}% prediction interval of the difference of two runs, from the "
        f"scatter around the learning curve: {fit.describe()}; at tonight's "
        f"{tonight:,} training images it predicts {100 * expected.predicted:.2f}% "
        f"± {100 * expected.residual_points:.2f} points"
    )
    return NoiseBand(
        points=fit.difference_half_width(),
        class_points=classes or _class_tolerance(names, policy),
        source="curve",
        runs=len(runs),
        detail=detail if classes else detail + _class_tolerance_note(policy),
        class_source="curve" if classes else "tolerance",
        curve=expected,
    )


def _class_curves(
    class_names: list[str],
    runs: Sequence[RunRecord],
    model: str,
    fit: LearningCurve,
) -> dict[str, float] | None:
    """Each class's band from its recall's scatter around its own curve, in the accuracy's
    form and coverage (None: some run has no per-class recalls, or a class's fit failed). A
    class's test count is each recall's sampling part, where every run recorded them."""
    recalls = [r.metrics[model].recall_per_class for r in runs]
    if any(r is None or len(r) != len(class_names) for r in recalls):
        return None
    supports = [r.metrics[model].support_per_class for r in runs]
    if any(s is None or len(s) != len(class_names) for s in supports):
        supports = [[None] * len(class_names)] * len(runs)
    widths = {}
    for i, name in enumerate(class_names):
        curve = fit_curve(
            [
                CurvePoint(
                    run_id=r.run_id,
                    train_images=p.train_images,
                    value=rec[i],
                    test_images=sup[i] or None,
                )
                for r, p, rec, sup in zip(runs, fit.points, recalls, supports, strict=True)
            ],  # fmt: skip
            coverage=fit.coverage,
            form=fit.form,
        )
        if curve is None:
            return None
        widths[name] = curve.difference_half_width()
    return widths


def _classes_from_predictions(
    band: NoiseBand,
    policy: NoisePolicy,
    probs: np.ndarray | None,
    y_true: np.ndarray | None,
) -> NoiseBand:
    """`band` with its class bands estimated from the run's test predictions where its own
    source had none for them (`class_source` "tolerance"), when the policy says so."""
    if band.class_source != "tolerance" or policy.class_band != "predictions":
        return band
    if probs is None or y_true is None:
        return band
    estimated = class_recall_bands(probs, y_true, list(band.class_points), coverage=policy.coverage)
    return band.model_copy(
        update={
            "class_points": estimated.widths,
            "class_source": "predictions",
            "detail": f"{band.detail}; instead of the class tolerance, class bands from this run's "
            f"test predictions (their uncertainty and the model's bias towards some classes, "
            f"tau = {estimated.tau:.2f}): {100 * policy.coverage:g}% of the recall "
            f"differences of {PAIRS} simulated pairs of runs",
        }
    )
