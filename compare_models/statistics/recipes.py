"""Recipes compared across seeds: with `train.replicas` of 2 or more, each model is trained
with several seeds, and the question becomes whether one *recipe* (architecture and training)
beats another beyond the seed-to-seed spread, not whether one trained model beats another.

The test is Welch's t-test on the replicas' test accuracies (`scipy.stats.ttest_ind` with
unequal variances), with its interval for the difference of the means. Almost stochastic
order (`deepsig.aso`, Dror et al. 2019) was tried: with the 2-5 seeds a nightly can afford it
gave degenerate answers (epsilon_min 1.0 both ways for overlapping samples) and took 12-42 s
a pair here, and importing it loads every deep-learning framework installed.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import ttest_ind

from compare_models.statistics.records import Interval, RecipeComparison, RecipePair, RecipeSummary


def summarise(seeds: Sequence[int], accuracies: Sequence[float]) -> RecipeSummary:
    values = np.asarray(accuracies, dtype=np.float64)
    return RecipeSummary(
        seeds=list(seeds),
        accuracies=values.tolist(),
        mean=float(values.mean()),
        std=float(values.std(ddof=1)) if values.size > 1 else 0.0,
    )


def compare_two(
    a: str, b: str, models: Mapping[str, RecipeSummary], *, confidence: float, alpha: float
) -> RecipePair:
    """Recipe b against recipe a over their seeds."""
    x, y = models[a].accuracies, models[b].accuracies
    estimate = models[b].mean - models[a].mean
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # no spread at all: the t statistic is undefined
        same = estimate == 0
        interval = Interval(estimate=estimate, ci_low=estimate, ci_high=estimate)
        pvalue = 1.0 if same else 0.0
    else:
        test = ttest_ind(y, x, equal_var=False)
        ci = test.confidence_interval(confidence)
        interval = Interval(estimate=estimate, ci_low=float(ci.low), ci_high=float(ci.high))
        pvalue = float(test.pvalue)
    significant = pvalue < alpha
    better = (b if estimate > 0 else a) if significant else None
    level = f"{100 * confidence:g}%"
    span = (
        f"{100 * estimate:+.2f} points ({level} CI {100 * interval.ci_low:+.2f} to "
        f"{100 * interval.ci_high:+.2f}), Welch p = {pvalue:.3g}, {len(x)} and {len(y)} seeds"
    )
    if better is None:
        verdict = (
            f"recipes {a} and {b}: mean accuracy {b} - {a} {span}: the difference between the "
            "architectures does not exceed the seed variance"
        )
    else:
        verdict = (
            f"recipe {better} beats {a if better == b else b} across seeds: mean accuracy {b} - {a} "
            f"{span}: the difference exceeds the seed variance"
        )
    return RecipePair(
        a=a, b=b, difference=interval, pvalue=pvalue, significant=significant, better=better,
        verdict=verdict,
    )  # fmt: skip


def compare_recipes(
    runs: Mapping[str, tuple[Sequence[int], Sequence[float]]], *, confidence: float, alpha: float
) -> RecipeComparison:
    """Every model's recipe summary, and every pair of models with 2 or more replicas each
    compared over seeds. `runs`: model -> (seeds, test accuracies), in replica order."""
    models = {m: summarise(seeds, accuracies) for m, (seeds, accuracies) in runs.items()}
    names = [m for m, s in models.items() if len(s.accuracies) >= 2]
    pairs = [
        compare_two(a, b, models, confidence=confidence, alpha=alpha)
        for a, b in itertools.combinations(names, 2)
    ]
    return RecipeComparison(models=models, pairs=pairs)
