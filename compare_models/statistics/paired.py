"""Paired statistics for comparing classifiers on the same test images.

Every comparison says how sure it is. Two models scored on the *same* test images are paired
observations, so this module uses paired methods throughout:

* McNemar's exact test on the images where exactly one of the two models is right
  (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``), overall and per class.
* Holm's step-down correction over the per-class tests
  (``statsmodels.stats.multitest.multipletests(method="holm")``).
* A paired percentile bootstrap over test images for confidence intervals: every resample
  draws one set of image indices and scores *every* model on it, so intervals for the
  difference between two models account for their correlation. Because the index sets depend
  only on ``(n, n_resamples, seed)``, the same seed gives the same resamples for every model and
  every pair, whether they come from :func:`compare_pair` or :func:`compare_all` (one model or
  more).

Inputs are plain arrays: ``y_true`` of shape ``(n,)`` with integer labels ``0..k-1`` and, per
model, predicted probabilities of shape ``(n, k)`` (predictions are their arg-max). Results are
the typed records of :mod:`compare_models.statistics.records` (``ModelIntervals``,
``PairComparison``, ``Comparison``), the shapes the run's record stores; ``model_dump_json``
writes them. The low-level :func:`paired_table` and :func:`mcnemar_exact` return plain counts.

Sign convention: every ``difference`` is **model b minus model a** (``name_b - name_a``), in the
order the models were given; a positive accuracy difference means ``b`` is better. The verdict
sentence always names the better model first.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from compare_models.evaluation.validation import (
    check_class_names,
    check_correct,
    check_predictions,
)
from compare_models.statistics.bootstrap import (
    Replicates,
    bootstrap,
    interval,
    point_estimates,
    quantiles,
)
from compare_models.statistics.records import (
    ClassDifference,
    Comparison,
    ComparisonSettings,
    Differences,
    Interval,
    McNemar,
    ModelIntervals,
    PairComparison,
    PairedTable,
)

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
ALPHA = 0.05
MIN_RESAMPLES = 1000
METHOD = "paired bootstrap (percentile) over test images"
MCNEMAR_TEST = "McNemar exact (binomial)"

_TABLE_KEYS = ("both_right", "only_a_right", "only_b_right", "both_wrong")
_INTERVAL = ("estimate", "ci_low", "ci_high")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _validate_settings(n_resamples: int, seed: int, confidence: float, alpha: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int | np.integer):
        raise ValueError(f"n_resamples must be an integer, got {n_resamples!r}")
    if n_resamples < MIN_RESAMPLES:
        raise ValueError(
            f"n_resamples must be at least {MIN_RESAMPLES} for stable percentile intervals, "
            f"got {n_resamples}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}")


# --------------------------------------------------------------------------------------------
# Tests on the paired 2x2 table
# --------------------------------------------------------------------------------------------


def paired_table(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """Count the four right/wrong combinations of two models on the same images.

    Args:
        correct_a: Shape ``(n,)``, whether model a is right on each image (bool or 0/1).
        correct_b: Shape ``(n,)``, whether model b is right on each image.

    Returns:
        ``{"both_right", "only_a_right", "only_b_right", "both_wrong"}`` as ints.

    Raises:
        ValueError: If the arrays are not 1-D booleans of the same length.
    """
    a = check_correct(correct_a, "correct_a")
    b = check_correct(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(
            f"correct_a and correct_b must cover the same images, got {a.size} and {b.size}"
        )
    return {
        "both_right": int(np.count_nonzero(a & b)),
        "only_a_right": int(np.count_nonzero(a & ~b)),
        "only_b_right": int(np.count_nonzero(~a & b)),
        "both_wrong": int(np.count_nonzero(~a & ~b)),
    }


def mcnemar_exact(table: dict) -> dict:
    """McNemar's exact (binomial) test on a paired table from :func:`paired_table`.

    Only the discordant images (one model right, the other wrong) carry information; under the
    null hypothesis of equal accuracy each is equally likely to favour either model. With no
    discordant images (identical predictions) the p-value is 1.0.

    Args:
        table: ``{"both_right", "only_a_right", "only_b_right", "both_wrong"}`` counts.

    Returns:
        ``{"pvalue", "statistic", "test", "discordant"}``; ``statistic`` is the smaller of the
        two discordant counts, as in statsmodels.

    Raises:
        ValueError: If a key is missing or a count is not a non-negative integer.
    """
    missing = [key for key in _TABLE_KEYS if key not in table]
    if missing:
        raise ValueError(f"table is missing {missing}; expected keys {list(_TABLE_KEYS)}")
    counts = {}
    for key in _TABLE_KEYS:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"table[{key!r}] must be a non-negative integer, got {value!r}")
        counts[key] = int(value)
    matrix = [
        [counts["both_right"], counts["only_a_right"]],
        [counts["only_b_right"], counts["both_wrong"]],
    ]
    result = mcnemar(matrix, exact=True)
    return {
        "pvalue": float(result.pvalue),
        "statistic": float(result.statistic),
        "test": MCNEMAR_TEST,
        "discordant": counts["only_a_right"] + counts["only_b_right"],
    }


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _model_summary(
    y_true: np.ndarray, y_pred: np.ndarray, reps: Replicates, model: int, k: int, confidence: float
) -> ModelIntervals:
    """Accuracy and macro-F1 of one model with percentile bootstrap intervals.

    Point estimates come from scikit-learn. Intervals are percentiles (``np.quantile``) of the
    bootstrap distribution rather than BCa: BCa needs a jackknife over all n images per
    statistic, which costs more than the whole bootstrap here, while with thousands of test
    images the percentile interval's skew correction is negligible.
    """
    point = point_estimates(y_true, y_pred, k)
    return ModelIntervals(
        accuracy=interval(point["accuracy"], reps.accuracy(model), confidence),
        f1_macro=interval(point["f1_macro"], reps.f1_macro(model), confidence),
    )


def compare_pair(
    y_true: np.ndarray,
    prob_a: np.ndarray,
    prob_b: np.ndarray,
    *,
    name_a: str,
    name_b: str,
    class_names: Sequence[str],
    **options: Any,
) -> PairComparison:
    """Compare two models on the same test images, with paired tests and intervals.

    Differences are **b minus a**. The overall decision is McNemar's exact test
    (``significant`` = p < alpha); per class, McNemar on that class's images with Holm's
    correction over classes. Intervals are paired percentile bootstrap intervals (see
    ``_model_summary`` for why percentile).

    Args:
        y_true: True labels, shape ``(n,)``, integers ``0..k-1``.
        prob_a: Probabilities of model a, shape ``(n, k)``.
        prob_b: Probabilities of model b, shape ``(n, k)``.
        name_a: Name of model a.
        name_b: Name of model b (must differ from name_a).
        class_names: Names of the k classes.
        **options: The settings of :func:`compare_all`, with its defaults: ``n_resamples``
            (bootstrap resamples, at least 1000), ``seed`` (for ``numpy.random.default_rng``),
            ``confidence`` (interval coverage, e.g. 0.95) and ``alpha`` (significance level for
            McNemar and the Holm-adjusted per-class tests).

    Returns:
        A ``PairComparison``: ``a``, ``b``, ``n``, ``table``, ``mcnemar``, ``accuracy`` and
        ``f1_macro`` (per model name: estimate and interval), ``difference`` (b - a, for
        ``accuracy`` and ``f1_macro``), ``per_class`` (one entry per class),
        ``significant_classes``, ``significant``, ``better``, ``verdict`` and ``settings``.

    Raises:
        ValueError: On invalid inputs or settings, or if the two names are equal.
    """
    if name_a == name_b:
        raise ValueError(f"name_a and name_b must differ, both are {name_a!r}")
    result = compare_all(
        y_true, {name_a: prob_a, name_b: prob_b}, class_names=class_names, **options
    )
    return result.pairs[0]


def compare_all(
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    *,
    class_names: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    confidence: float = 0.95,
    alpha: float = ALPHA,
) -> Comparison:
    """Intervals for every model and a paired comparison of every unordered pair.

    One bootstrap pass serves all models and pairs (the same resampled index sets), so the
    per-model intervals equal those of a call with that model alone and each pair equals :func:`compare_pair`
    with the same seed.

    Args:
        y_true: True labels, shape ``(n,)``, integers ``0..k-1``.
        probs: Model name -> probabilities ``(n, k)``; one model or more (one model gets its
            intervals and no pairs). Pairs follow the mapping's order:
            ``(m0, m1), (m0, m2), ..., (m1, m2), ...``.
        class_names: Names of the k classes.
        n_resamples: Bootstrap resamples (at least 1000).
        seed: Seed for ``numpy.random.default_rng``.
        confidence: Interval coverage, e.g. 0.95.
        alpha: Significance level.

    Returns:
        A ``Comparison``: ``models`` (name -> ``ModelIntervals``), ``pairs``
        (``[compare_pair(...), ...]``), ``verdicts`` and ``settings``; no ``calibration`` and no
        ``recipes`` (the comparison task adds those).

    Raises:
        ValueError: On invalid inputs or settings, or no model at all.
    """
    names = check_class_names(class_names)
    _validate_settings(n_resamples, seed, confidence, alpha)
    k = len(names)
    labels, clean = check_predictions(y_true, probs, k, min_models=1)
    model_names = list(clean)
    preds = [clean[m].argmax(axis=1) for m in model_names]
    reps = bootstrap(labels, preds, k, int(n_resamples), int(seed))
    settings = ComparisonSettings(
        resamples=int(n_resamples),
        seed=int(seed),
        confidence=float(confidence),
        alpha=float(alpha),
        method=METHOD,
    )
    models = {
        m: _model_summary(labels, preds[i], reps, i, k, confidence)
        for i, m in enumerate(model_names)
    }
    pairs = [
        _pair(labels, preds, reps, i, j, model_names, names, confidence, alpha, settings)
        for i, j in itertools.combinations(range(len(model_names)), 2)
    ]
    return Comparison(
        models=models, pairs=pairs, verdicts=[p.verdict for p in pairs], settings=settings
    )


def _pair(
    y_true: np.ndarray,
    preds: list[np.ndarray],
    reps: Replicates,
    i: int,
    j: int,
    model_names: list[str],
    class_names: list[str],
    confidence: float,
    alpha: float,
    settings: ComparisonSettings,
) -> PairComparison:
    name_a, name_b = model_names[i], model_names[j]
    k = len(class_names)
    point_a = point_estimates(y_true, preds[i], k)
    point_b = point_estimates(y_true, preds[j], k)
    correct_a = preds[i] == y_true
    correct_b = preds[j] == y_true
    table = paired_table(correct_a, correct_b)
    test = mcnemar_exact(table)

    difference: dict[str, Interval] = {}
    for metric, reps_a, reps_b in (
        ("accuracy", reps.accuracy(i), reps.accuracy(j)),
        ("f1_macro", reps.f1_macro(i), reps.f1_macro(j)),
    ):
        estimate = point_b[metric] - point_a[metric]
        difference[metric] = interval(estimate, reps_b - reps_a, confidence)

    recall_diff = reps.recall(j) - reps.recall(i)  # (R, k), NaN where a class is absent
    low, high = quantiles(recall_diff, confidence)
    raw_p = [
        mcnemar_exact(paired_table(correct_a[y_true == c], correct_b[y_true == c]))["pvalue"]
        for c in range(k)
    ]
    holm_p = multipletests(raw_p, alpha=alpha, method="holm")[1]
    per_class = []
    for c, name in enumerate(class_names):
        recall_a, recall_b = float(point_a["recall"][c]), float(point_b["recall"][c])
        per_class.append(
            ClassDifference(
                class_name=name,
                support=int(np.count_nonzero(y_true == c)),
                recall_a=recall_a,
                recall_b=recall_b,
                difference=recall_b - recall_a,
                ci_low=float(low[c]),
                ci_high=float(high[c]),
                pvalue=float(raw_p[c]),
                pvalue_holm=float(holm_p[c]),
                significant=bool(holm_p[c] < alpha),
            )
        )

    significant = bool(test["pvalue"] < alpha)
    better = None
    if significant:
        better = name_b if point_b["accuracy"] > point_a["accuracy"] else name_a
    pair = PairComparison(
        a=name_a,
        b=name_b,
        n=int(y_true.size),
        table=PairedTable(**table),
        mcnemar=McNemar(**test),
        accuracy={
            name_a: interval(point_a["accuracy"], reps.accuracy(i), confidence),
            name_b: interval(point_b["accuracy"], reps.accuracy(j), confidence),
        },
        f1_macro={
            name_a: interval(point_a["f1_macro"], reps.f1_macro(i), confidence),
            name_b: interval(point_b["f1_macro"], reps.f1_macro(j), confidence),
        },
        difference=Differences(**difference),
        per_class=per_class,
        significant_classes=[row.class_name for row in per_class if row.significant],
        significant=significant,
        better=better,
        verdict="",
        settings=settings.model_copy(),
    )
    return pair.model_copy(update={"verdict": verdict(pair)})


def format_pvalue(p: float) -> str:
    """Format a p-value for a sentence: ``"p < 0.001"`` or ``"p = 0.041"`` (2 significant digits).

    Args:
        p: The p-value.

    Returns:
        The formatted text, including ``p``.
    """
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    if "." not in text:
        text += ".0"
    return f"p = {text}"


def verdict(pair: PairComparison | Mapping[str, Any]) -> str:
    """One sentence summarising a :func:`compare_pair` result; the better model comes first.

    Examples: ``"resnet50 beats cnn by 4.1 points of accuracy (95% CI 3.0 to 5.2; McNemar
    p < 0.001); 3 of 10 classes differ significantly (Holm)"`` and ``"no significant difference
    between cnn and resnet50 (accuracy difference 0.3 points, 95% CI -0.5 to 1.1; McNemar
    p = 0.41)"``, where a non-significant difference is the second name minus the first.

    Args:
        pair: A :func:`compare_pair` result, or a mapping with the keys of its JSON (``a``,
            ``b``, ``difference.accuracy``, ``mcnemar.pvalue``, ``significant``,
            ``settings.confidence``, ``per_class[].significant``): only these are read.

    Returns:
        The sentence.

    Raises:
        ValueError: If a mapping lacks the keys a compare_pair result has.
    """
    if isinstance(pair, PairComparison):
        name_a, name_b, significant = pair.a, pair.b, pair.significant
        est, low, high = (100 * getattr(pair.difference.accuracy, k) for k in _INTERVAL)
        p, level = pair.mcnemar.pvalue, pair.settings.confidence
        n_sig, n_classes = sum(1 for row in pair.per_class if row.significant), len(pair.per_class)
    else:
        try:
            name_a, name_b = pair["a"], pair["b"]
            diff = pair["difference"]["accuracy"]
            p = pair["mcnemar"]["pvalue"]
            significant = pair["significant"]
            level = pair["settings"]["confidence"]
            per_class = pair["per_class"]
            est, low, high = (100 * diff[key] for key in _INTERVAL)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"verdict needs a compare_pair result, missing {exc}") from exc
        n_sig, n_classes = sum(1 for row in per_class if row["significant"]), len(per_class)
    ci = f"{100 * level:g}% CI"
    if not significant:
        return (
            f"no significant difference between {name_a} and {name_b} (accuracy difference "
            f"{_points(est)} points, {ci} {_points(low)} to {_points(high)}; McNemar "
            f"{format_pvalue(p)})"
        )
    if est < 0:  # a is better: flip b - a into a - b
        winner, loser, est, low, high = name_a, name_b, -est, -high, -low
    else:
        winner, loser = name_b, name_a
    sentence = (
        f"{winner} beats {loser} by {_points(est)} points of accuracy "
        f"({ci} {_points(low)} to {_points(high)}; McNemar {format_pvalue(p)})"
    )
    if n_sig:
        sentence += f"; {n_sig} of {n_classes} classes differ significantly (Holm)"
    return sentence


def _points(value: float) -> str:
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


__all__ = [
    "ALPHA",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "MIN_RESAMPLES",
    "compare_all",
    "compare_pair",
    "format_pvalue",
    "mcnemar_exact",
    "paired_table",
    "verdict",
]
