"""Unit tests for compare_models.evaluation.metrics: hand-checked numbers, edge cases, validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compare_models.evaluation.metrics import (
    MAX_ROC_POINTS,
    SCALAR_METRICS,
    comparison_table,
    evaluate_predictions,
    metrics_tables,
)
from compare_models.evaluation.records import Evaluation

CLASSES = ["cat", "dog", "frog"]
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Tiny example, checked by hand.
#
#   sample  true  probabilities (cat, dog, frog)  predicted
#     0      0    0.7  0.2  0.1                    0  ok
#     1      0    0.3  0.6  0.1                    1  wrong
#     2      1    0.2  0.7  0.1                    1  ok
#     3      1    0.1  0.3  0.6                    2  wrong
#     4      2    0.1  0.1  0.8                    2  ok
#     5      2    0.2  0.2  0.6                    2  ok
#
# Confusion matrix (rows true, columns predicted):
#     [[1, 1, 0],
#      [0, 1, 1],
#      [0, 0, 2]]
# accuracy  = 4 / 6 = 2/3
# precision = cat 1/1, dog 1/2, frog 2/3    -> macro (1 + 1/2 + 2/3) / 3 = 13/18
# recall    = cat 1/2, dog 1/2, frog 2/2    -> macro (1/2 + 1/2 + 1) / 3 = 2/3
# F1        = cat 2/3, dog 1/2, frog 4/5    -> macro (2/3 + 1/2 + 4/5) / 3 = 59/90
# Every class has support 2, so the weighted averages equal the macro ones.
#
# AUC for "dog" (one-vs-rest): positives score 0.7 and 0.3, negatives score
# 0.2, 0.6, 0.1, 0.2. Of the 2 x 4 = 8 positive/negative pairs the positive
# ranks higher in 4 (for 0.7) + 3 (for 0.3) = 7, so AUC = 7/8 = 0.875.
# "cat": positives 0.7, 0.3 beat every negative (0.2, 0.1, 0.1, 0.2) -> 1.0.
# "frog": positives 0.8, 0.6 vs negatives 0.1, 0.1, 0.1, 0.6: 4 + 3.5 (one
# tie counts 1/2) = 7.5/8 = 0.9375. Macro AUC = (1 + 0.875 + 0.9375) / 3 = 0.9375.
Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PROB = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.3, 0.6],
        [0.1, 0.1, 0.8],
        [0.2, 0.2, 0.6],
    ]
)


@pytest.fixture(scope="module")
def tiny_metrics() -> Evaluation:
    return evaluate_predictions(Y_TRUE, Y_PROB, CLASSES)


def test_hand_checked_scalars(tiny_metrics: Evaluation) -> None:
    assert tiny_metrics.n_samples == 6
    assert tiny_metrics.class_names == CLASSES
    assert tiny_metrics.accuracy == pytest.approx(2 / 3)
    assert tiny_metrics.precision_macro == pytest.approx(13 / 18)
    assert tiny_metrics.recall_macro == pytest.approx(2 / 3)
    assert tiny_metrics.f1_macro == pytest.approx(59 / 90)
    assert tiny_metrics.precision_weighted == pytest.approx(13 / 18)
    assert tiny_metrics.recall_weighted == pytest.approx(2 / 3)
    assert tiny_metrics.f1_weighted == pytest.approx(59 / 90)
    assert tiny_metrics.roc_auc_macro == pytest.approx(0.9375)
    assert 0.5 < tiny_metrics.roc_auc_micro <= 1.0


def test_hand_checked_confusion_matrix(tiny_metrics: Evaluation) -> None:
    assert tiny_metrics.confusion_matrix == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert np.allclose(
        tiny_metrics.confusion_matrix_normalized,
        [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]],
    )


def test_hand_checked_per_class(tiny_metrics: Evaluation) -> None:
    per_class = tiny_metrics.per_class
    assert [row.class_name for row in per_class] == CLASSES
    stored_keys = set(per_class[0].model_dump(by_alias=True))
    assert stored_keys == {"class", "precision", "recall", "f1", "support", "auc"}
    assert [row.support for row in per_class] == [2, 2, 2]
    assert [row.precision for row in per_class] == pytest.approx([1.0, 0.5, 2 / 3])
    assert [row.recall for row in per_class] == pytest.approx([0.5, 0.5, 1.0])
    assert [row.f1 for row in per_class] == pytest.approx([2 / 3, 0.5, 0.8])
    assert [row.auc for row in per_class] == pytest.approx([1.0, 0.875, 0.9375])


def test_roc_curves_and_report_text(tiny_metrics: Evaluation) -> None:
    curves = tiny_metrics.roc_curves
    assert set(curves) == {*CLASSES, "micro"}
    for curve in curves.values():
        assert len(curve.fpr) == len(curve.tpr)
        assert (curve.fpr[0], curve.tpr[0]) == (0.0, 0.0)
        assert (curve.fpr[-1], curve.tpr[-1]) == (1.0, 1.0)
    report = tiny_metrics.classification_report
    assert "dog" in report and "0.6667" in report and "macro avg" in report


def test_perfect_predictions() -> None:
    y_true = np.array([0, 1, 2, 0, 1, 2])
    metrics = evaluate_predictions(y_true, np.eye(3)[y_true] * 0.9 + 0.0333, CLASSES)
    assert metrics.accuracy == 1.0
    assert metrics.f1_macro == 1.0
    assert metrics.roc_auc_macro == 1.0
    assert metrics.roc_auc_micro == 1.0
    assert all(row.auc == 1.0 for row in metrics.per_class)


def test_two_classes_keep_one_column_per_class() -> None:
    metrics = evaluate_predictions(
        np.array([0, 1, 1]), np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]), ["no", "yes"]
    )
    assert metrics.accuracy == pytest.approx(2 / 3)
    assert [row.auc for row in metrics.per_class] == [1.0, 1.0]
    assert set(metrics.roc_curves) == {"no", "yes", "micro"}


def test_class_absent_from_y_true() -> None:
    # "frog" never occurs in y_true: its AUC is undefined and must not drag
    # the macro average; "dog" AUC here: positives 0.7, 0.3 vs negatives
    # 0.2, 0.6 -> (2 + 1) / 4 = 0.75, so macro = (1.0 + 0.75) / 2.
    metrics = evaluate_predictions(Y_TRUE[:4], Y_PROB[:4], CLASSES)
    frog = metrics.per_class[2]
    assert frog.auc is None
    assert frog.support == 0
    assert metrics.roc_auc_macro == pytest.approx((1.0 + 0.75) / 2)
    assert "frog" not in metrics.roc_curves
    assert "micro" in metrics.roc_curves
    assert metrics.confusion_matrix_normalized[2] == [0.0, 0.0, 0.0]
    json.dumps(metrics.model_dump(mode="json", by_alias=True), allow_nan=False)


def test_single_class_present_has_no_macro_auc() -> None:
    metrics = evaluate_predictions(np.array([1, 1]), Y_PROB[:2], CLASSES)
    assert metrics.roc_auc_macro is None
    assert all(row.auc is None for row in metrics.per_class)
    assert isinstance(metrics.roc_auc_micro, float)


def test_json_round_trip(tiny_metrics: Evaluation) -> None:
    text = json.dumps(tiny_metrics.model_dump(mode="json", by_alias=True), allow_nan=False)
    assert Evaluation.model_validate_json(text) == tiny_metrics


def test_long_roc_curves_are_thinned() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 3000)
    y_prob = rng.dirichlet(np.ones(3), 3000)
    metrics = evaluate_predictions(y_true, y_prob, CLASSES)
    micro = metrics.roc_curves["micro"]
    assert len(micro.fpr) <= MAX_ROC_POINTS
    assert (micro.fpr[0], micro.tpr[0]) == (0.0, 0.0)
    assert (micro.fpr[-1], micro.tpr[-1]) == (1.0, 1.0)
    assert micro.fpr == sorted(micro.fpr)


@pytest.mark.parametrize(
    ("y_true", "y_prob", "class_names", "message"),
    [
        (np.array([], dtype=int), np.empty((0, 3)), CLASSES, r"y_true is empty"),
        (Y_TRUE, Y_PROB[:5], CLASSES, r"y_prob has shape \(5, 3\); expected \(n, k\) = \(6, 3\)"),
        (
            Y_TRUE,
            Y_PROB[:, :2],
            CLASSES,
            r"y_prob has shape \(6, 2\); expected \(n, k\) = \(6, 3\)",
        ),
        (Y_TRUE, Y_PROB[:, 0], CLASSES, r"y_prob must be 2-D"),
        (Y_TRUE.reshape(-1, 1), Y_PROB, CLASSES, r"y_true must be 1-D"),
        (np.array([0, 1, 2, 3, 0, 1]), Y_PROB, CLASSES, r"range 0\.\.2.*\[3\]"),
        (np.array([0, -1, 2, 0, 1, 2]), Y_PROB, CLASSES, r"range 0\.\.2.*\[-1\]"),
        (Y_TRUE + 0.5, Y_PROB, CLASSES, r"non-integer values.*integer class indices"),
        (Y_TRUE.astype(bool), Y_PROB, CLASSES, r"dtype bool.*integer class indices"),
        (Y_TRUE, np.where(np.eye(6, 3, dtype=bool), np.nan, Y_PROB), CLASSES, r"NaN"),
        (Y_TRUE, np.where(np.eye(6, 3, dtype=bool), np.inf, Y_PROB), CLASSES, r"infinite"),
        (Y_TRUE, Y_PROB, ["cat", "cat", "frog"], r"unique.*'cat'"),
        (np.zeros(6, dtype=int), Y_PROB[:, :1], ["cat"], r"at least 2 classes"),
    ],
    ids=[
        "empty",
        "fewer-rows",
        "fewer-columns",
        "1d-prob",
        "column-labels",
        "label-too-big",
        "label-negative",
        "non-integer-float-labels",
        "bool-labels",
        "nan",
        "inf",
        "duplicate-names",
        "one-class",
    ],
)
def test_validation_errors(y_true, y_prob, class_names, message) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(y_true, y_prob, class_names)


def test_integer_valued_float_labels_are_accepted(tiny_metrics: Evaluation) -> None:
    # Was a refusal ("float-labels"); floats such as 2.0 are now class indices, as in sklearn.
    assert evaluate_predictions(Y_TRUE.astype(float), Y_PROB, CLASSES) == tiny_metrics


def test_metrics_tables(tiny_metrics: Evaluation) -> None:
    tables = metrics_tables(tiny_metrics)
    assert set(tables) == {"summary", "per_class", "confusion_matrix"}

    summary = tables["summary"]
    assert summary.shape == (1, 1 + len(SCALAR_METRICS))
    assert summary.loc[0, "accuracy"] == pytest.approx(2 / 3)

    per_class = tables["per_class"]
    assert per_class.shape == (3, 6)
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support", "auc"]
    assert list(per_class["class"]) == CLASSES

    matrix = tables["confusion_matrix"]
    assert matrix.shape == (3, 3)
    assert matrix.index.name == "true" and matrix.columns.name == "predicted"
    assert list(matrix.index) == CLASSES and list(matrix.columns) == CLASSES
    assert matrix.loc["dog", "frog"] == 1


def test_comparison_table(tiny_metrics: Evaluation) -> None:
    absent = evaluate_predictions(Y_TRUE[:4], Y_PROB[:4], CLASSES)
    table = comparison_table({"cnn": tiny_metrics, "resnet50": absent})
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == ["cnn", "resnet50"]
    assert list(table.columns) == list(SCALAR_METRICS)
    assert table.loc["cnn", "accuracy"] == pytest.approx(2 / 3)
    assert table.loc["resnet50", "roc_auc_macro"] == pytest.approx(0.875)


def test_model_metrics_keep_the_scalars_and_each_class_recall(tiny_metrics: Evaluation) -> None:
    from compare_models.evaluation.metrics import SCALAR_METRICS, model_metrics

    headline = model_metrics(tiny_metrics)
    assert {key: getattr(headline, key) for key in SCALAR_METRICS} == {
        key: getattr(tiny_metrics, key) for key in SCALAR_METRICS
    }
    assert headline.recall_per_class == [row.recall for row in tiny_metrics.per_class]


def test_an_evaluation_written_before_the_record_still_reads() -> None:
    """`metrics-3cca1cb.json` is what the run stored at 3cca1cb, when `evaluate_predictions`
    returned a dict (the class-absent example above, written as `ArtifactStore.put_json` does).
    It reads as an `Evaluation`, dumps back to the same JSON, and equals today's result."""
    stored = json.loads((FIXTURES / "metrics-3cca1cb.json").read_text())
    evaluation = Evaluation.model_validate(stored)
    assert evaluation.per_class[2].class_name == "frog" and evaluation.per_class[2].auc is None
    assert set(evaluation.roc_curves) == {"cat", "dog", "micro"}
    assert evaluation.model_dump(mode="json", by_alias=True) == stored
    assert evaluation == evaluate_predictions(Y_TRUE[:4], Y_PROB[:4], CLASSES)


def test_a_new_evaluation_is_stored_with_the_keys_of_before(tiny_metrics: Evaluation) -> None:
    stored = tiny_metrics.model_dump(mode="json", by_alias=True)
    before = json.loads((FIXTURES / "metrics-3cca1cb.json").read_text())
    assert (
        set(stored)
        == set(before)
        == {
            "n_samples",
            "class_names",
            *SCALAR_METRICS,
            "per_class",
            "roc_curves",
            "confusion_matrix",
            "confusion_matrix_normalized",
            "classification_report",
        }
    )
    assert [set(row) for row in stored["per_class"]] == [set(before["per_class"][0])] * 3
    assert set(before["per_class"][0]) == {"class", "precision", "recall", "f1", "support", "auc"}
    assert all(set(curve) == {"fpr", "tpr"} for curve in stored["roc_curves"].values())
    assert isinstance(stored["confusion_matrix"][0][0], int)
    assert isinstance(stored["per_class"][0]["support"], int)


def test_a_newer_writers_fields_are_ignored_and_a_scalar_is_read_by_name(
    tiny_metrics: Evaluation,
) -> None:
    stored = tiny_metrics.model_dump(mode="json", by_alias=True)
    stored["brier"] = 0.1
    stored["per_class"][0]["ece"] = 0.2
    stored["roc_curves"]["micro"]["thresholds"] = [1.0]
    assert Evaluation.model_validate(stored) == tiny_metrics
    assert [tiny_metrics.scalar(key) for key in SCALAR_METRICS] == [
        getattr(tiny_metrics, key) for key in SCALAR_METRICS
    ]
    with pytest.raises(KeyError, match="'per_class' is not a scalar metric"):
        tiny_metrics.scalar("per_class")
