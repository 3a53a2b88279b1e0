"""Unit tests for compare_models.statistics.paired: known answers, independent checks, validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score
from statsmodels.stats.multitest import multipletests

from compare_models.statistics.bootstrap import bootstrap as _bootstrap
from compare_models.statistics.bootstrap import macro_f1_from_counts as _macro_f1_from_counts
from compare_models.statistics.paired import (
    DEFAULT_RESAMPLES,
    MIN_RESAMPLES,
    compare_all,
    compare_pair,
    format_pvalue,
    mcnemar_exact,
    paired_table,
    verdict,
)
from compare_models.statistics.records import Comparison

CLASSES = ["cat", "dog", "frog"]
TEN = [f"class{i}" for i in range(10)]
FAST = MIN_RESAMPLES  # the smallest allowed, to keep the tests quick


def one_hot(pred: np.ndarray, k: int, confidence: float = 0.9) -> np.ndarray:
    """Probabilities whose arg-max is ``pred``."""
    prob = np.full((pred.size, k), (1.0 - confidence) / (k - 1))
    prob[np.arange(pred.size), pred] = confidence
    return prob


def wrong(y: np.ndarray, k: int) -> np.ndarray:
    """A wrong prediction for every label."""
    return (y + 1) % k


def _pair(y, a, b, **kwargs):
    """`compare_pair` of models "a" and "b" over CLASSES, with the fewest resamples allowed."""
    options = dict(name_a="a", name_b="b", class_names=CLASSES, n_resamples=FAST)
    options.update(kwargs)
    return compare_pair(y, a, b, **options)


def synthetic(n: int, k: int, accuracy: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels (fixed) and probabilities of a model right on about ``accuracy`` of them."""
    y = np.random.default_rng(123).integers(0, k, n)
    rng = np.random.default_rng(seed)
    pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), pred] += 4.0
    prob = np.exp(logits)
    return y, prob / prob.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Paired table and McNemar
# --------------------------------------------------------------------------------------------


def test_paired_table_counts_by_hand():
    a = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    assert paired_table(a, b) == {
        "both_right": 2,
        "only_a_right": 1,
        "only_b_right": 1,
        "both_wrong": 2,
    }


def test_identical_models_have_no_discordant_pairs_and_p_one():
    y, prob = synthetic(500, 3, 0.7, seed=1)
    pair = compare_pair(
        y, prob, prob.copy(), name_a="cnn", name_b="twin", class_names=CLASSES, n_resamples=FAST
    )
    assert pair.table.only_a_right == pair.table.only_b_right == 0
    assert pair.mcnemar.model_dump() == {
        "pvalue": 1.0,
        "statistic": 0.0,
        "test": "McNemar exact (binomial)",
        "discordant": 0,
    }
    for metric in ("accuracy", "f1_macro"):
        assert getattr(pair.difference, metric).model_dump() == {
            "estimate": 0.0,
            "ci_low": 0.0,
            "ci_high": 0.0,
        }
    assert all(row.difference == row.ci_low == row.ci_high == 0.0 for row in pair.per_class)
    assert all(row.pvalue == 1.0 for row in pair.per_class)
    assert not pair.significant
    assert pair.better is None
    assert pair.significant_classes == []
    assert pair.verdict.startswith("no significant difference between cnn and twin")
    assert "McNemar p = 1.0" in pair.verdict


def test_complementary_models_table():
    n, count = 40, 15
    y = np.arange(n) % 3
    pred_a = np.where(np.arange(n) < count, y, wrong(y, 3))
    pred_b = np.where(np.arange(n) < count, wrong(y, 3), y)
    pair = _pair(y, one_hot(pred_a, 3), one_hot(pred_b, 3))
    assert pair.table.model_dump() == {
        "both_right": 0,
        "only_a_right": count,
        "only_b_right": n - count,
        "both_wrong": 0,
    }
    assert pair.mcnemar.discordant == n
    assert pair.mcnemar.statistic == count


@pytest.mark.parametrize(
    "b,c",
    [(0, 0), (0, 1), (1, 0), (3, 7), (7, 3), (5, 5), (10, 30), (120, 80), (0, 25), (400, 460)],
)
def test_mcnemar_pvalue_matches_scipy_binomtest(b, c):
    table = {"both_right": 50, "only_a_right": b, "only_b_right": c, "both_wrong": 9}
    result = mcnemar_exact(table)
    expected = 1.0 if b + c == 0 else binomtest(min(b, c), b + c, 0.5).pvalue
    assert result["pvalue"] == pytest.approx(expected, abs=1e-12)
    assert result["discordant"] == b + c
    assert result["statistic"] == min(b, c)


def test_mcnemar_rejects_bad_tables():
    with pytest.raises(ValueError, match="missing"):
        mcnemar_exact({"both_right": 1, "only_a_right": 2})
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_exact({"both_right": 1, "only_a_right": -2, "only_b_right": 1, "both_wrong": 0})
    with pytest.raises(ValueError, match="non-negative integer"):
        mcnemar_exact({"both_right": 1, "only_a_right": 2.5, "only_b_right": 1, "both_wrong": 0})


def test_paired_table_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same images"):
        paired_table(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="booleans"):
        paired_table(np.array([0, 2, 1]), np.array([1, 1, 1]))


# --------------------------------------------------------------------------------------------
# A clearly better model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def much_better():
    """1,000 images: "weak" is right on 60%, "strong" on 90% (and wherever weak is right)."""
    n, k = 1000, 10
    y = np.arange(n) % k
    idx = np.arange(n)
    decile = (idx // k) % 10  # spreads right/wrong evenly over the classes
    weak = np.where(decile < 6, y, wrong(y, k))
    strong = np.where(decile < 9, y, wrong(y, k))
    return y, one_hot(weak, k, 0.6), one_hot(strong, k, 0.95)


@pytest.mark.parametrize("order", ["weak-first", "strong-first"])
def test_much_better_model_is_significant_and_named_first(much_better, order):
    y, weak, strong = much_better
    if order == "weak-first":
        pair = compare_pair(
            y, weak, strong, name_a="weak", name_b="strong", class_names=TEN, n_resamples=FAST
        )
        sign = 1
    else:
        pair = compare_pair(
            y, strong, weak, name_a="strong", name_b="weak", class_names=TEN, n_resamples=FAST
        )
        sign = -1
    assert pair.significant is True
    assert pair.better == "strong"
    assert pair.mcnemar.pvalue < 0.001
    # difference is b minus a
    assert pair.difference.accuracy.estimate == pytest.approx(sign * 0.3)
    assert pair.verdict.startswith("strong beats weak by 30.0 points of accuracy (95% CI ")
    assert "McNemar p < 0.001" in pair.verdict
    # each class has 100 images, 30 discordant all one way: p = 2 * 0.5**30, significant after Holm
    assert pair.significant_classes == TEN
    assert pair.verdict.endswith("; 10 of 10 classes differ significantly (Holm)")
    low, high = pair.difference.accuracy.ci_low, pair.difference.accuracy.ci_high
    assert low <= sign * 0.3 <= high
    assert 0 < sign * low and 0 < sign * high  # the interval excludes zero


def test_verdict_text_for_no_significant_difference():
    pair = {
        "a": "cnn",
        "b": "resnet50",
        "significant": False,
        "mcnemar": {"pvalue": 0.4123},
        "difference": {"accuracy": {"estimate": 0.003, "ci_low": -0.005, "ci_high": 0.011}},
        "settings": {"confidence": 0.95},
        "per_class": [],
    }
    assert verdict(pair) == (
        "no significant difference between cnn and resnet50 (accuracy difference 0.3 points, "
        "95% CI -0.5 to 1.1; McNemar p = 0.41)"
    )


def test_verdict_flips_interval_when_a_is_better():
    pair = {
        "a": "resnet50",
        "b": "cnn",
        "significant": True,
        "mcnemar": {"pvalue": 1e-9},
        "difference": {"accuracy": {"estimate": -0.041, "ci_low": -0.052, "ci_high": -0.030}},
        "settings": {"confidence": 0.95},
        "per_class": [{"significant": True}] * 3 + [{"significant": False}] * 7,
    }
    assert verdict(pair) == (
        "resnet50 beats cnn by 4.1 points of accuracy (95% CI 3.0 to 5.2; McNemar p < 0.001); "
        "3 of 10 classes differ significantly (Holm)"
    )


def test_verdict_requires_a_pair():
    with pytest.raises(ValueError, match="compare_pair result"):
        verdict({"a": "x"})


@pytest.mark.parametrize(
    "p,text",
    [
        (0.0, "p < 0.001"),
        (0.000999, "p < 0.001"),
        (0.001, "p = 0.001"),
        (0.0123, "p = 0.012"),
        (0.41, "p = 0.41"),
        (1.0, "p = 1.0"),
    ],
)
def test_format_pvalue(p, text):
    assert format_pvalue(p) == text


# --------------------------------------------------------------------------------------------
# Bootstrap
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_models():
    y, prob_a = synthetic(2000, 10, 0.7, seed=1)
    _, prob_b = synthetic(2000, 10, 0.75, seed=2)
    return y, prob_a, prob_b


def test_bootstrap_is_reproducible_with_seed_and_varies_across_seeds(two_models):
    y, prob_a, prob_b = two_models
    kwargs = dict(name_a="a", name_b="b", class_names=TEN, n_resamples=FAST)
    first = compare_pair(y, prob_a, prob_b, seed=7, **kwargs)
    again = compare_pair(y, prob_a, prob_b, seed=7, **kwargs)
    other = compare_pair(y, prob_a, prob_b, seed=8, **kwargs)
    assert first == again
    assert first.difference != other.difference
    # the point estimates and tests do not depend on the seed, only the intervals do
    assert first.difference.accuracy.estimate == other.difference.accuracy.estimate
    assert first.mcnemar == other.mcnemar


def test_intervals_contain_estimates(two_models):
    y, prob_a, prob_b = two_models
    pair = compare_pair(
        y, prob_a, prob_b, name_a="a", name_b="b", class_names=TEN, n_resamples=FAST
    )
    intervals = [pair.difference.accuracy, pair.difference.f1_macro]
    intervals += [getattr(pair, m)[name] for m in ("accuracy", "f1_macro") for name in ("a", "b")]
    for iv in intervals:
        assert iv.ci_low <= iv.estimate <= iv.ci_high
        assert iv.ci_low < iv.ci_high
    for row in pair.per_class:
        assert row.ci_low <= row.difference <= row.ci_high


def _intervals_of(y, prob, **settings):
    """One model's intervals: compare_all with that model alone."""
    return compare_all(y, {"a": prob}, class_names=TEN, **settings).models["a"]


def test_wider_confidence_gives_wider_interval(two_models):
    y, prob_a, _ = two_models
    narrow = _intervals_of(y, prob_a, n_resamples=FAST, confidence=0.8).accuracy
    wide = _intervals_of(y, prob_a, n_resamples=FAST, confidence=0.99).accuracy
    assert wide.ci_low < narrow.ci_low and narrow.ci_high < wide.ci_high


def test_accuracy_interval_width_is_plausible(two_models):
    """The bootstrap standard error of an accuracy is close to sqrt(p (1 - p) / n)."""
    y, prob_a, _ = two_models
    acc = _intervals_of(y, prob_a).accuracy
    p, n = acc.estimate, y.size
    expected_width = 2 * 1.959964 * np.sqrt(p * (1 - p) / n)
    assert acc.ci_high - acc.ci_low == pytest.approx(expected_width, rel=0.15)


def test_macro_f1_estimate_equals_sklearn(two_models):
    y, prob_a, _ = two_models
    pred = prob_a.argmax(axis=1)
    expected = f1_score(y, pred, average="macro", labels=range(10), zero_division=0)
    assert _intervals_of(y, prob_a, n_resamples=FAST).f1_macro.estimate == pytest.approx(
        expected, abs=1e-12
    )


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_macro_f1_matches_sklearn_including_absent_classes(seed):
    """The by-hand macro-F1 used on resamples equals sklearn's on unresampled counts."""
    rng = np.random.default_rng(seed)
    k = 6
    y = rng.integers(0, 4, 60)  # classes 4 and 5 never occur
    pred = np.where(rng.random(60) < 0.5, y, rng.integers(0, 5, 60))  # class 5 never predicted
    support = np.bincount(y, minlength=k)[None].astype(float)
    predicted = np.bincount(pred, minlength=k)[None].astype(float)
    hits = np.bincount(y[pred == y], minlength=k)[None].astype(float)
    ours = _macro_f1_from_counts(support, predicted, hits)[0]
    assert ours == pytest.approx(
        f1_score(y, pred, average="macro", labels=range(k), zero_division=0), abs=1e-12
    )


def test_bootstrap_counts_add_up(two_models):
    y, prob_a, prob_b = two_models
    preds = [prob_a.argmax(axis=1), prob_b.argmax(axis=1)]
    reps = _bootstrap(y, preds, 10, 1000, seed=0)
    assert reps.support.shape == (1000, 10)
    assert reps.hits.shape == reps.predicted.shape == (2, 1000, 10)
    assert np.all(reps.support.sum(axis=1) == y.size)
    assert np.all(reps.predicted.sum(axis=2) == y.size)
    assert np.all(reps.hits <= np.minimum(reps.support, reps.predicted))
    # the resampled accuracies centre on the observed ones
    assert reps.accuracy(0).mean() == pytest.approx((preds[0] == y).mean(), abs=0.005)


def test_holm_adjustment_matches_statsmodels(two_models):
    y, prob_a, prob_b = two_models
    pair = compare_pair(
        y, prob_a, prob_b, name_a="a", name_b="b", class_names=TEN, n_resamples=FAST
    )
    raw = [row.pvalue for row in pair.per_class]
    adjusted = [row.pvalue_holm for row in pair.per_class]
    assert all(h >= p for h, p in zip(adjusted, raw, strict=True))
    np.testing.assert_allclose(
        adjusted, multipletests(raw, alpha=0.05, method="holm")[1], rtol=0, atol=0
    )
    assert [r.significant for r in pair.per_class] == [h < 0.05 for h in adjusted]
    # per-class raw p-values are McNemar on that class's images
    pred_a, pred_b = prob_a.argmax(axis=1), prob_b.argmax(axis=1)
    for c, row in enumerate(pair.per_class):
        mask = y == c
        b = int(np.sum((pred_a == y) & (pred_b != y) & mask))
        d = int(np.sum((pred_a != y) & (pred_b == y) & mask))
        expected = 1.0 if b + d == 0 else binomtest(min(b, d), b + d, 0.5).pvalue
        assert row.pvalue == pytest.approx(expected, abs=1e-12)
        assert row.support == int(mask.sum())
        assert row.recall_a == pytest.approx(np.mean(pred_a[mask] == c))
        assert row.difference == pytest.approx(row.recall_b - row.recall_a)


def test_absent_class_gives_zero_interval_and_p_one():
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])  # class 2 never occurs
    pred_a = np.array([0, 1, 1, 1, 0, 1, 0, 0])
    pred_b = y.copy()
    pair = _pair(y, one_hot(pred_a, 3), one_hot(pred_b, 3))
    frog = pair.per_class[2]
    assert frog.support == 0
    assert frog.difference == frog.ci_low == frog.ci_high == 0.0
    assert frog.pvalue == 1.0
    json.dumps(pair.model_dump(mode="json", by_alias=True), allow_nan=False)


# --------------------------------------------------------------------------------------------
# compare_all and output shape
# --------------------------------------------------------------------------------------------


def test_three_models_give_three_pairs_in_order(two_models):
    y, prob_a, prob_b = two_models
    _, prob_c = synthetic(2000, 10, 0.8, seed=3)
    probs = {"cnn": prob_a, "resnet50": prob_b, "vit": prob_c}
    result = compare_all(y, probs, class_names=TEN, n_resamples=FAST)
    assert [(p.a, p.b) for p in result.pairs] == [
        ("cnn", "resnet50"),
        ("cnn", "vit"),
        ("resnet50", "vit"),
    ]
    assert result.verdicts == [p.verdict for p in result.pairs]
    assert list(result.models) == ["cnn", "resnet50", "vit"]
    # one bootstrap serves everything: the same numbers as the single-model and pairwise calls
    assert result.models["vit"] == _intervals_of(y, prob_c, n_resamples=FAST)
    assert result.pairs[1] == compare_pair(
        y, prob_a, prob_c, name_a="cnn", name_b="vit", class_names=TEN, n_resamples=FAST
    )
    assert result.pairs[1].accuracy["vit"] == result.models["vit"].accuracy


def test_result_is_json_ready_with_documented_shape(two_models):
    y, prob_a, prob_b = two_models
    result = compare_all(y, {"cnn": prob_a, "resnet50": prob_b}, class_names=TEN, n_resamples=FAST)
    # the stored JSON (metrics/comparison.json, the manifest's comparison) and back
    stored = result.model_dump(mode="json", by_alias=True)
    assert json.loads(json.dumps(stored, allow_nan=False)) == stored
    assert Comparison.model_validate(stored) == result
    result = stored
    pair = result["pairs"][0]
    assert set(pair) == {
        "a", "b", "n", "table", "mcnemar", "accuracy", "f1_macro", "difference", "per_class",
        "significant_classes", "significant", "better", "verdict", "settings",
    }  # fmt: skip
    assert set(pair["per_class"][0]) == {
        "class", "support", "recall_a", "recall_b", "difference", "ci_low", "ci_high",
        "pvalue", "pvalue_holm", "significant",
    }  # fmt: skip
    assert set(pair["accuracy"]) == {"cnn", "resnet50"}
    assert set(pair["difference"]) == {"accuracy", "f1_macro"}
    assert result["settings"] == {
        "resamples": FAST,
        "seed": 0,
        "confidence": 0.95,
        "alpha": 0.05,
        "method": "paired bootstrap (percentile) over test images",
    }
    assert pair["settings"] == result["settings"]
    assert DEFAULT_RESAMPLES == 2000


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda y, p: (y[:-1], p, p), r"shape \(6, 3\); expected \(n, k\) = \(5, 3\)"),
        (
            lambda y, p: (y, p, p[:-1]),
            r"probs\['b'\] has shape \(5, 3\); expected \(n, k\) = \(6, 3\)",
        ),
        (lambda y, p: (y, p[:, :2], p), r"probs\['a'\] has shape \(6, 2\)"),
        (lambda y, p: (y.reshape(2, 3), p, p), r"y_true must be 1-D"),
        (lambda y, p: (y + 5, p, p), r"labels must lie in range 0\.\.2"),
        (lambda y, p: (y.astype(float) + 0.5, p, p), r"non-integer"),
        (lambda y, p: (np.array([0, 1, np.nan, 0, 1, 2]), p, p), r"y_true contains NaN"),
        (
            lambda y, p: (y, np.where(np.eye(6, 3, dtype=bool), np.nan, p), p),
            r"probs\['a'\] contains NaN",
        ),
        (lambda y, p: (y[:0], p[:0], p[:0]), r"y_true is empty"),
        (lambda y, p: (y, p.astype(str), p), r"must be numeric"),
    ],
)
def test_bad_inputs_raise_helpful_errors(make, match):
    y = np.array([0, 1, 2, 0, 1, 2])
    p = one_hot(y, 3)
    with pytest.raises(ValueError, match=match):
        _pair(*make(y, p))


def test_bad_settings_and_model_counts_raise():
    y = np.array([0, 1, 2, 0, 1, 2])
    p = one_hot(y, 3)
    with pytest.raises(ValueError, match="at least 1 model"):
        compare_all(y, {}, class_names=CLASSES)
    single = compare_all(
        y, {"only": p}, class_names=CLASSES
    )  # a one-model run: intervals, no pairs
    assert single.pairs == [] and single.verdicts == [] and list(single.models) == ["only"]
    with pytest.raises(ValueError, match="mapping"):
        compare_all(y, [p, p], class_names=CLASSES)
    with pytest.raises(ValueError, match="must differ"):
        _pair(y, p, p, name_b="a")
    with pytest.raises(ValueError, match="n_resamples must be at least 1000"):
        _pair(y, p, p, n_resamples=10)
    with pytest.raises(ValueError, match="confidence"):
        _pair(y, p, p, confidence=95)
    with pytest.raises(ValueError, match="alpha"):
        _pair(y, p, p, alpha=0)
    with pytest.raises(ValueError, match="class_names must be unique"):
        _pair(y, p, p, class_names=["cat", "cat", "dog"])
    with pytest.raises(ValueError, match=r"\(n, k\) = \(6, 4\)"):
        _pair(y, p, p, class_names=CLASSES + ["bird"])
