"""Unit tests for compare_models.evaluation.validation: every refusal, every decided case, every conversion."""

from __future__ import annotations

import numpy as np
import pytest

from compare_models.evaluation.validation import (
    check_class_names,
    check_correct,
    check_labels,
    check_predictions,
    check_probabilities,
)

PROB = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
LABELS = np.array([0, 1, 1])


# --------------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "match"),
    [
        ("cat", r"sequence of names.*got str"),
        ({"cat", "dog"}, r"sequence of names.*got set"),
        ((name for name in ["cat", "dog"]), r"sequence of names.*got generator"),
        ([], r"at least 2 classes, got 0"),
        (["cat"], r"at least 2 classes, got 1"),
        (["cat", 1], r"non-empty strings, got \[1\]"),
        (["cat", ""], r"non-empty strings, got \[''\]"),
        (["cat", "  "], r"non-empty strings, got \['  '\]"),
        (["cat", "dog", "cat"], r"unique, got duplicates \['cat'\]"),
    ],
    ids=[
        "single-string",
        "set",
        "generator",
        "empty",
        "one-class",
        "non-string",
        "empty-name",
        "blank-name",
        "duplicates",
    ],
)
def test_class_names_refused(names, match):
    with pytest.raises(ValueError, match=match):
        check_class_names(names)


def test_class_names_accepted_as_plain_str_list():
    names = check_class_names(np.array(["cat", "dog"]))
    assert names == ["cat", "dog"] and all(type(name) is str for name in names)
    assert check_class_names(("cat", "dog")) == ["cat", "dog"]


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("y", "match"),
    [
        (np.array([[0], [1]]), r"y_true must be 1-D with shape \(n,\), got shape \(2, 1\)"),
        (np.array([], dtype=int), r"y_true is empty"),
        (np.array([True, False]), r"dtype bool.*not a class index"),
        (np.array([0.0, 0.5]), r"non-integer values \[0\.5\]"),
        (np.array([0.0, np.nan]), r"NaN or infinity"),
        (np.array([0.0, np.inf]), r"NaN or infinity"),
        (np.array(["0", "1"]), r"integer class indices, got dtype <U1"),
        (np.array([0, None], dtype=object), r"integer class indices, got dtype object"),
        (np.array([0, 2]), r"range 0\.\.1 \(one per class name\).*\[2\]"),
        (np.array([-1, 0]), r"range 0\.\.1.*\[-1\]"),
        (np.array([0.0, 1e20]), r"range 0\.\.1.*\[1e\+20\]"),
    ],
    ids=[
        "2d",
        "empty",
        "bool",
        "non-integer-float",
        "nan",
        "inf",
        "strings",
        "object",
        "too-big",
        "negative",
        "huge-float",
    ],
)
def test_labels_refused(y, match):
    with pytest.raises(ValueError, match=match):
        check_labels(y, 2)


def test_integer_valued_float_labels_become_int64():
    labels = check_labels(np.array([0.0, 1.0, 1.0]), 2)
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 1]


def test_integer_labels_of_any_width_become_int64():
    assert check_labels(np.array([0, 1], dtype=np.uint8), 2).dtype == np.int64
    assert check_labels([1, 0], 2).tolist() == [1, 0]


# --------------------------------------------------------------------------------------------
# Probabilities
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prob", "match"),
    [
        (PROB.astype(str), r"y_prob must be numeric \(integer or float\), got dtype <U"),
        (PROB > 0.5, r"y_prob must be numeric.*got dtype bool"),
        (PROB.astype(complex), r"y_prob must be numeric.*got dtype complex128"),
        (PROB[:, 0], r"y_prob must be 2-D with shape \(n, k\), got shape \(3,\)"),
        (PROB[:2], r"y_prob has shape \(2, 2\); expected \(n, k\) = \(3, 2\)"),
        (np.hstack([PROB, PROB]), r"y_prob has shape \(3, 4\); expected \(n, k\) = \(3, 2\)"),
        (np.where(PROB == 0.9, np.nan, PROB), r"y_prob contains NaN or infinite values in 1 row"),
        (np.where(PROB == 0.9, np.inf, PROB), r"y_prob contains NaN or infinite values in 1 row"),
    ],
    ids=["strings", "bool", "complex", "1d", "fewer-rows", "more-columns", "nan", "inf"],
)
def test_probabilities_refused(prob, match):
    with pytest.raises(ValueError, match=match):
        check_probabilities(prob, 3, 2)


def test_probabilities_message_uses_the_given_name():
    with pytest.raises(ValueError, match=r"^probs\['cnn'\] has shape"):
        check_probabilities(PROB[:2], 3, 2, name="probs['cnn']")


def test_unit_interval_refused_only_when_asked():
    logits = np.log(PROB)
    assert check_probabilities(logits, 3, 2).min() < 0  # scores are fine for ranking metrics
    with pytest.raises(ValueError, match=r"y_prob must lie in \[0, 1\].*not logits"):
        check_probabilities(logits, 3, 2, unit_interval=True)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], got range 0\.2\.\.1\.8"):
        check_probabilities(PROB * 2, 3, 2, unit_interval=True)


def test_rows_need_not_sum_to_one():
    unnormalised = PROB * 0.5
    assert np.array_equal(check_probabilities(unnormalised, 3, 2, unit_interval=True), unnormalised)


def test_integer_probabilities_become_float64():
    probs = check_probabilities(np.array([[1, 0], [0, 1], [1, 0]]), 3, 2)
    assert probs.dtype == np.float64 and probs.tolist() == [[1, 0], [0, 1], [1, 0]]


# --------------------------------------------------------------------------------------------
# Labels and several models together
# --------------------------------------------------------------------------------------------


def test_predictions_check_labels_first():
    with pytest.raises(ValueError, match="dtype bool"):
        check_predictions(LABELS.astype(bool), {"cnn": PROB[:1]}, 2)


def test_predictions_must_be_a_mapping():
    with pytest.raises(ValueError, match=r"probs must be a mapping.*got list"):
        check_predictions(LABELS, [PROB], 2)


def test_predictions_need_min_models():
    with pytest.raises(
        ValueError, match=r"need at least 2 model\(s\) to compare, got 1: \['cnn'\]"
    ):
        check_predictions(LABELS, {"cnn": PROB}, 2, min_models=2)
    with pytest.raises(ValueError, match=r"need at least 1 model\(s\)"):
        check_predictions(LABELS, {}, 2)


@pytest.mark.parametrize("name", ["", 3], ids=["empty", "non-string"])
def test_predictions_model_names_must_be_non_empty_strings(name):
    with pytest.raises(ValueError, match="model names must be non-empty strings"):
        check_predictions(LABELS, {name: PROB}, 2)


def test_predictions_name_the_offending_model():
    with pytest.raises(ValueError, match=r"probs\['b'\] contains NaN"):
        check_predictions(LABELS, {"a": PROB, "b": np.full((3, 2), np.nan)}, 2)
    with pytest.raises(ValueError, match=r"probs\['b'\] must lie in \[0, 1\]"):
        check_predictions(LABELS, {"a": PROB, "b": PROB - 1}, 2, unit_interval=True)


def test_predictions_return_clean_arrays_in_model_order():
    labels, clean = check_predictions(
        LABELS.astype(float), {"b": PROB, "a": PROB.astype(np.float32)}, 2
    )
    assert labels.dtype == np.int64 and list(clean) == ["b", "a"]
    assert all(p.dtype == np.float64 for p in clean.values())


# --------------------------------------------------------------------------------------------
# Per-image "was the model right" vectors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("correct", "match"),
    [
        (np.ones((2, 2), bool), r"right must be 1-D of shape \(n,\), got shape \(2, 2\)"),
        (np.array([0, 2]), r"right must be booleans \(or 0/1\), got dtype int64"),
        (np.array([0.0, np.nan]), r"right must be booleans \(or 0/1\), got dtype float64"),
        (np.array(["y", "n"]), r"right must be booleans"),
    ],
    ids=["2d", "not-0-1", "nan", "strings"],
)
def test_correct_refused(correct, match):
    with pytest.raises(ValueError, match=match):
        check_correct(correct, "right")


def test_correct_accepts_bools_and_zero_one():
    assert check_correct(np.array([True, False]), "right").tolist() == [True, False]
    converted = check_correct(np.array([1.0, 0.0]), "right")
    assert converted.dtype == np.bool_ and converted.tolist() == [True, False]
