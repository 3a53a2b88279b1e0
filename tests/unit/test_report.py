"""Unit tests for compare_models.report: files, self-contained HTML, escaping, summaries."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: tests must never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from compare_models.evaluation import evaluate_predictions  # noqa: E402
from compare_models.report import (  # noqa: E402
    SYNTHETIC_BANNER,
    ModelResult,
    markdown_summary,
    per_class_table_rows,
    render_report,
)

CLASSES = ["airplane", "automobile", "bird", "cat"]
FIGURES = ["learning_curves.png", "confusion_matrices.png", "roc_curves.png", "comparison.png"]


def _model(name: str, *, seed: int, epochs: int, skill: float) -> ModelResult:
    """A model whose probabilities lean towards the true class by `skill`."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, len(CLASSES), 120)
    logits = rng.normal(size=(120, len(CLASSES))) + skill * np.eye(len(CLASSES))[y_true]
    y_prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    history = {
        "loss": list(np.linspace(1.5, 0.8, epochs)),
        "accuracy": list(np.linspace(0.4, 0.7, epochs)),
        "val_loss": list(np.linspace(1.6, 1.0, epochs)),
        "val_accuracy": list(np.linspace(0.35, 0.6, epochs)),
    }
    return ModelResult(
        name=name,
        history=history,
        metrics=evaluate_predictions(y_true, y_prob, CLASSES),
        train_seconds=12.34 * (seed + 1),
        parameters=1_234_567 * (seed + 1),
    )


@pytest.fixture(scope="module")
def two_models() -> list[ModelResult]:
    return [
        _model("cnn", seed=0, epochs=3, skill=1.5),
        _model("resnet50", seed=1, epochs=3, skill=2.5),
    ]


@pytest.fixture(scope="module")
def two_model_report(tmp_path_factory, two_models) -> tuple[Path, list[Path], str]:
    out_dir = tmp_path_factory.mktemp("report") / "nested" / "out"
    run_info = {"data_source_kind": "cifar10", "epochs": 3, "note": "<script>alert(1)</script>"}
    paths = render_report(two_models, out_dir, title="CNN vs ResNet50", run_info=run_info)
    return out_dir, paths, (out_dir / "index.html").read_text(encoding="utf-8")


def test_all_files_written(two_model_report) -> None:
    out_dir, paths, _ = two_model_report
    expected = {
        *FIGURES,
        "comparison.csv",
        "per_class_cnn.csv",
        "per_class_resnet50.csv",
        "index.html",
    }
    assert {path.name for path in paths} == expected
    assert all(path.parent == out_dir and path.is_file() for path in paths)
    assert paths[-1].name == "index.html"


def test_pngs_are_valid(two_model_report) -> None:
    out_dir, _, _ = two_model_report
    for name in FIGURES:
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name


def test_figures_are_closed(two_model_report) -> None:
    assert plt.get_fignums() == []


def test_csv_tables(two_model_report, two_models) -> None:
    out_dir, _, _ = two_model_report
    comparison = pd.read_csv(out_dir / "comparison.csv", index_col="model")
    assert list(comparison.index) == ["cnn", "resnet50"]
    assert comparison.loc["cnn", "accuracy"] == pytest.approx(two_models[0].metrics["accuracy"])
    assert {"roc_auc_macro", "parameters", "train_seconds"} <= set(comparison.columns)
    per_class = pd.read_csv(out_dir / "per_class_resnet50.csv")
    assert list(per_class.columns) == [
        "model",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "auc",
    ]
    assert list(per_class["class"]) == CLASSES
    assert set(per_class["model"]) == {"resnet50"}


def test_html_contains_values_and_is_self_contained(two_model_report, two_models) -> None:
    _, _, page = two_model_report
    assert "<title>CNN vs ResNet50</title>" in page
    for result in two_models:
        assert result.name in page
        assert f"{result.metrics['accuracy']:.4f}" in page
        assert f"{result.metrics['f1_macro']:.4f}" in page
        assert f"{result.metrics['per_class'][0]['recall']:.4f}" in page
        assert f"{result.parameters:,}" in page
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "<pre>" in page and "macro avg" in page
    assert "http://" not in page and "https://" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_html_escapes_run_info(two_model_report) -> None:
    _, _, page = two_model_report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_synthetic_banner_for_real_data(two_model_report) -> None:
    _, _, page = two_model_report
    assert SYNTHETIC_BANNER not in page


def test_single_model_single_epoch_synthetic(tmp_path: Path) -> None:
    result = _model("cnn", seed=3, epochs=1, skill=1.0)
    paths = render_report(
        [result], tmp_path, title="Smoke run", run_info={"data_source_kind": "synthetic"}
    )
    assert {path.name for path in paths} == {
        *FIGURES,
        "comparison.csv",
        "per_class_cnn.csv",
        "index.html",
    }
    for name in FIGURES:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER in page
    assert f"{result.metrics['accuracy']:.4f}" in page
    assert plt.get_fignums() == []


def test_rejects_empty_and_duplicate_models(tmp_path: Path, two_models) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        render_report([], tmp_path, title="x", run_info={})
    with pytest.raises(ValueError, match="unique.*'cnn'"):
        render_report([two_models[0], two_models[0]], tmp_path, title="x", run_info={})


def test_markdown_summary(two_models) -> None:
    text = markdown_summary(
        two_models, title="CNN vs ResNet50", run_info={"data_source_kind": "cifar10", "epochs": 3}
    )
    assert text.startswith("# CNN vs ResNet50")
    assert (
        "| model | accuracy | precision (macro) | recall (macro) | F1 (macro) | "
        "ROC AUC (macro) | parameters | training s |" in text
    )
    for result in two_models:
        row = next(line for line in text.splitlines() if line.startswith(f"| {result.name} |"))
        assert f"{result.metrics['accuracy']:.4f}" in row
        assert f"{result.metrics['roc_auc_macro']:.4f}" in row
        assert f"{result.parameters:,}" in row
    assert "**epochs**: 3" in text
    assert SYNTHETIC_BANNER not in text
    synthetic = markdown_summary(
        two_models[:1], title="t", run_info={"data_source_kind": "synthetic"}
    )
    assert SYNTHETIC_BANNER in synthetic


def test_per_class_table_rows(two_models) -> None:
    rows = per_class_table_rows(two_models)
    assert len(rows) == 2 * len(CLASSES)
    assert set(rows[0]) == {"model", "class", "precision", "recall", "f1", "support", "auc"}
    assert [row["model"] for row in rows[: len(CLASSES)]] == ["cnn"] * len(CLASSES)
    first = two_models[0].metrics["per_class"][0]
    assert rows[0]["class"] == "airplane"
    assert rows[0]["precision"] == round(first["precision"], 4)
    assert rows[0]["auc"] == round(first["auc"], 4)
    assert isinstance(rows[0]["support"], int)
