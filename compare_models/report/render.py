"""Render the model comparison as figures, CSV tables and one self-contained HTML page.

The report is the thing a person actually opens after a run, so it has to
stand on its own: images are embedded as base64 ``data:`` URIs and the CSS is
inline, which means the single ``index.html`` can be downloaded from S3 or
attached to a ticket and still display fully with no network access. The page
itself is rendered from Jinja2 templates by ``compare_models.report.page``.

This module only knows about :class:`ModelResult` (typed records), so it
can be tested without Prefect, TensorFlow or S3. The orchestration layer
turns its return values into Prefect artifacts and uploads the files.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from compare_models.evaluation.metrics import comparison_table, metrics_tables
from compare_models.evaluation.records import Evaluation
from compare_models.report.data import ModelResult, Sections
from compare_models.report.figures import DPI, figure
from compare_models.report.format import (
    BUDGET_BANNER,
    SYNTHETIC_BANNER,
    TABLE_METRICS,
    band_text,
    budget_note,
    ci,
    fmt_metric,
    fmt_parameters,
    fmt_seconds,
    is_synthetic,
    models_verdict,
)
from compare_models.report.page import render_page

#: Metrics drawn in the grouped bar chart, with their display labels.
BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("precision_macro", "Precision (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("roc_auc_macro", "ROC AUC (macro)"),
)

#: History keys Keras may use for the accuracy curve, first match wins.
ACCURACY_KEYS: tuple[str, ...] = (
    "accuracy",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "acc",
)


# --------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------


def _validate_results(results: Sequence[ModelResult]) -> list[ModelResult]:
    """Reject inputs that would produce an empty or ambiguous report."""
    results = list(results)
    if not results:
        raise ValueError("results is empty: expected at least 1 ModelResult")
    names = [result.name for result in results]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"model names must be unique, got duplicates {duplicates}")
    return results


def _safe_filename(name: str) -> str:
    """Model names go into file names; keep them portable and S3-key friendly."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _metric_or_nan(evaluation: Evaluation, key: str) -> float:
    """Undefined metrics (None) become NaN so matplotlib skips them."""
    value = evaluation.scalar(key)
    return float("nan") if value is None else float(value)


def _save(fig: Figure, path: Path) -> Path:
    """Write a figure (the convention of `report.figures`: its own canvas, its DPI), cropped to what
    it draws, on white."""
    fig.savefig(path, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return path


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def _plot_series(ax, history: Mapping[str, Sequence[float]], key: str, label: str) -> bool:
    """Plot one history series against 1-based epochs; report whether it existed.

    Markers are always drawn so that a single-epoch run shows a point instead
    of an invisible zero-length line.
    """
    values = history.get(key)
    if not values:
        return False
    epochs = np.arange(1, len(values) + 1)
    ax.plot(epochs, np.asarray(values, dtype=float), marker="o", markersize=4, label=label)
    return True


def plot_learning_curves(results: Sequence[ModelResult], path: Path) -> Path:
    """One row per model: loss (left) and accuracy (right), train vs validation."""
    results = _validate_results(results)
    fig = figure(11, 3.6 * len(results), constrained=True)
    axes = fig.subplots(len(results), 2, squeeze=False)
    for row, result in zip(axes, results, strict=True):
        loss_ax, acc_ax = row
        acc_key = next((k for k in ACCURACY_KEYS if result.history.get(k)), "accuracy")
        n_epochs = max((len(v) for v in result.history.values() if v), default=1)
        panels = (
            (loss_ax, "loss", "Loss"),
            (acc_ax, acc_key, "Accuracy"),
        )
        for ax, key, label in panels:
            plotted = [
                _plot_series(ax, result.history, key, "train"),
                _plot_series(ax, result.history, f"val_{key}", "validation"),
            ]
            ax.set_title(f"{result.name}: {label.lower()}")
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            # Whole epochs only, with half an epoch of margin: otherwise a
            # one-epoch run gets a meaningless axis like 0.95 .. 1.05.
            ax.set_xlim(0.5, n_epochs + 0.5)
            if n_epochs <= 20:
                ax.set_xticks(np.arange(1, n_epochs + 1))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if any(plotted):
                ax.legend(loc="best", fontsize=8)
            else:
                ax.text(
                    0.5,
                    0.5,
                    "no history recorded",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="grey",
                )
    return _save(fig, path)


def plot_confusion_matrices(results: Sequence[ModelResult], path: Path) -> Path:
    """Row-normalised confusion matrices side by side, each cell annotated.

    Normalising by row (true class) shows per-class recall on the diagonal and
    makes models comparable even when the test sets differ in size.
    """
    results = _validate_results(results)
    fig = figure(5.6 * len(results) + 1.0, 5.4, constrained=True)
    axes = fig.subplots(1, len(results), squeeze=False)
    image = None
    for ax, result in zip(axes[0], results, strict=True):
        matrix = np.asarray(result.metrics.confusion_matrix_normalized, dtype=float)
        names = list(result.metrics.class_names)
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(ticks, labels=names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{result.name} (accuracy {fmt_metric(result.metrics.accuracy)})")
        fontsize = 10 if len(names) <= 5 else 7
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if value > 0.5 else "black",
                in_layout=False,  # inside its cell: no layout pass needs to measure it
            )
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="fraction of true class")
    return _save(fig, path)


def plot_roc_curves(results: Sequence[ModelResult], path: Path) -> Path:
    """One-vs-rest ROC curve per class plus the micro average, one panel per model."""
    results = _validate_results(results)
    fig = figure(6.0 * len(results), 5.6, constrained=True)
    axes = fig.subplots(1, len(results), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        curves = result.metrics.roc_curves
        auc_by_class = {row.class_name: row.auc for row in result.metrics.per_class}
        colours = matplotlib.colormaps["tab10" if len(auc_by_class) <= 10 else "tab20"]
        for index, name in enumerate(result.metrics.class_names):
            curve = curves.get(name)
            if curve is None:  # class absent from the test labels: AUC undefined
                continue
            ax.plot(
                curve.fpr,
                curve.tpr,
                linewidth=1.2,
                color=colours(index % colours.N),
                label=f"{name} (AUC {fmt_metric(auc_by_class.get(name))})",
            )
        micro = curves["micro"]
        ax.plot(
            micro.fpr,
            micro.tpr,
            color="black",
            linestyle="--",
            linewidth=2.2,
            label=f"micro (AUC {fmt_metric(result.metrics.roc_auc_micro)})",
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"{result.name}: ROC (macro AUC {fmt_metric(result.metrics.roc_auc_macro)})")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_comparison(results: Sequence[ModelResult], path: Path) -> Path:
    """Grouped bars: one group per headline metric, one bar per model."""
    results = _validate_results(results)
    fig = figure(max(8.0, 2.2 * len(BAR_METRICS)), 4.8, constrained=True)
    ax = fig.subplots()
    positions = np.arange(len(BAR_METRICS))
    width = 0.8 / len(results)
    for index, result in enumerate(results):
        values = [_metric_or_nan(result.metrics, key) for key, _ in BAR_METRICS]
        offsets = positions - 0.4 + width * (index + 0.5)
        bars = ax.bar(offsets, np.nan_to_num(values), width, label=result.name)
        ax.bar_label(
            bars,
            labels=["n/a" if math.isnan(v) else f"{v:.3f}" for v in values],
            fontsize=7,
            padding=2,
        )
    ax.set_xticks(positions, labels=[label for _, label in BAR_METRICS])
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel("score")
    ax.set_title("Model comparison on the test set")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=9)
    return _save(fig, path)


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def _comparison_frame(results: Sequence[ModelResult]) -> pd.DataFrame:
    """comparison_table plus the cost side of the trade-off (size and time)."""
    table = comparison_table({result.name: result.metrics for result in results})
    table["parameters"] = [int(result.parameters) for result in results]
    table["train_seconds"] = [float(result.train_seconds) for result in results]
    return table


def _per_class_frame(result: ModelResult) -> pd.DataFrame:
    """Long-form per-class table with the model name on every row."""
    frame = metrics_tables(result.metrics)["per_class"]
    frame.insert(0, "model", result.name)
    return frame


def per_class_table_rows(results: Sequence[ModelResult]) -> list[dict]:
    """Per-class metrics of every model as rows, rounded for display.

    Shaped for a Prefect table artifact: a list of flat dicts with keys
    model, class, precision, recall, f1, support, auc (None if undefined).
    """
    rows: list[dict] = []
    for result in _validate_results(results):
        for entry in result.metrics.per_class:
            rows.append(
                {
                    "model": result.name,
                    "class": entry.class_name,
                    "precision": round(entry.precision, 4),
                    "recall": round(entry.recall, 4),
                    "f1": round(entry.f1, 4),
                    "support": entry.support,
                    "auc": None if entry.auc is None else round(entry.auc, 4),
                }
            )
    return rows


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def render_report(
    results: Sequence[ModelResult],
    out_dir: Path,
    *,
    title: str,
    run_info: Mapping[str, object],
    sections: Sections | None = None,
) -> list[Path]:
    """Write every figure, table and the HTML page for a run into out_dir.

    Files: learning_curves.png, confusion_matrices.png, roc_curves.png,
    comparison.png, comparison.csv (comparison_table plus ``parameters`` and
    ``train_seconds``), per_class_<model>.csv per model, and index.html with
    all images embedded. Works for any number of models (at least one).

    `sections` adds the optional sections (see `Sections`); their figures, already written
    into out_dir, are embedded and listed among the written files.

    Returns:
        The written paths, in the order above (index.html last).
    """
    results = _validate_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    figures = [
        (
            plot_learning_curves(results, out_dir / "learning_curves.png"),
            "Learning curves: loss and accuracy per epoch, training vs validation",
        ),
        (
            plot_comparison(results, out_dir / "comparison.png"),
            "Headline test-set metrics per model",
        ),
        (
            plot_confusion_matrices(results, out_dir / "confusion_matrices.png"),
            "Confusion matrices, normalised by true class (diagonal = per-class recall)",
        ),
        (
            plot_roc_curves(results, out_dir / "roc_curves.png"),
            "One-vs-rest ROC curves per class with micro average",
        ),
    ]
    written = [path for path, _ in figures]

    comparison_csv = out_dir / "comparison.csv"
    _comparison_frame(results).to_csv(comparison_csv)
    written.append(comparison_csv)
    for result in results:
        per_class_csv = out_dir / f"per_class_{_safe_filename(result.name)}.csv"
        _per_class_frame(result).to_csv(per_class_csv, index=False)
        written.append(per_class_csv)

    index = out_dir / "index.html"
    sections = sections or Sections()
    written += [path for path, _ in sections.figures]
    index.write_text(
        render_page(results, figures, title=title, run_info=run_info, sections=sections),
        encoding="utf-8",
    )
    written.append(index)
    return written


def _md_cell(value: object) -> str:
    """Keep a value on one line and stop pipes from splitting table cells."""
    return str(value).replace("\n", " ").replace("|", "\\|")


def markdown_summary(
    results: Sequence[ModelResult],
    *,
    title: str,
    run_info: Mapping[str, object],
    sections: Sections | None = None,
) -> str:
    """A compact markdown digest of the run, for a Prefect markdown artifact."""
    results = _validate_results(results)
    lines = [f"# {_md_cell(title)}", ""]
    if is_synthetic(run_info):
        lines += [f"> **{SYNTHETIC_BANNER}**", ""]
    if budget_note(run_info):
        lines += [f"> **{_md_cell(BUDGET_BANNER.format(budget_note(run_info)))}**", ""]
    if run_info:
        lines += [f"- **{_md_cell(key)}**: {_md_cell(value)}" for key, value in run_info.items()]
        lines.append("")
    header = ["model", *(label for _, label in TABLE_METRICS), "parameters", "training s"]
    lines += [
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for result in results:
        cells = [
            _md_cell(result.name),
            *(fmt_metric(result.metrics.scalar(key)) for key, _ in TABLE_METRICS),
            fmt_parameters(result.parameters),
            fmt_seconds(result.train_seconds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(results) > 1:
        best = max(results, key=lambda result: result.metrics.accuracy)
        lines += [
            "",
            f"Best test accuracy: **{_md_cell(best.name)}** ({fmt_metric(best.metrics.accuracy)}).",
        ]
    sections = sections or Sections()
    comparison, replay = sections.comparison, sections.replay
    if sections.gate:
        lines += ["", "## vs champion", ""]
        lines += [
            f"- **{_md_cell(model)}: {_md_cell(d.decision)}**: {_md_cell(d.reason)}"
            + (f"; noise band {_md_cell(band_text(d.band))}" if d.band else "")
            for model, d in sections.gate.items()
        ]
    recipes = comparison.recipes if comparison is not None else None
    if comparison is not None:
        level = f"{100 * comparison.settings.confidence:g}%"
        lines += ["", "## How sure is this comparison?", ""]
        lines += [
            f"- **{_md_cell(models_verdict(verdict, bool(recipes)))}**"
            for verdict in comparison.verdicts
        ]
        lines += [
            "",
            f"| model | accuracy ({level} CI) | F1 macro ({level} CI) |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {_md_cell(name)} | {ci(m.accuracy)} | {ci(m.f1_macro)} |"
            for name, m in comparison.models.items()
        ]
        for pair in comparison.pairs:
            if pair.significant_classes:
                lines += [
                    "",
                    f"Classes where {_md_cell(pair.a)} and {_md_cell(pair.b)} differ significantly "
                    f"(Holm): {_md_cell(', '.join(pair.significant_classes))}.",
                ]
    if sections.replicas:
        lines += ["", "## Replicas", ""]
        for model, rows in sections.replicas.items():
            seeds = ", ".join("-" if r.seed is None else str(r.seed) for r in rows)
            kept = next((r for r in rows if r.kept), None)
            tests = ", ".join(fmt_metric(r.test_accuracy) for r in rows)
            lines.append(
                f"- **{_md_cell(model)}**: {len(rows)} replicas (seeds {_md_cell(seeds)}), test "
                f"accuracy {tests}"
                + (
                    f"; kept: replica {_md_cell(kept.replica)} (best on validation data)"
                    if kept
                    else ""
                )
            )
    if recipes:
        lines += ["", "## Recipes across seeds", ""]
        lines += [
            f"- **{_md_cell(name)}**: mean test accuracy {fmt_metric(m.mean)} ± "
            f"{fmt_metric(m.std)} over {len(m.accuracies)} seeds"
            for name, m in recipes.models.items()
        ]
        lines += [
            f"- **Recipes {_md_cell(p.a)} vs {_md_cell(p.b)}**: {_md_cell(p.verdict)}"
            for p in recipes.pairs
        ]
    if replay is not None:
        lines += [
            "",
            f"## Replay of {_md_cell(replay.original_run_id)}",
            "",
            _md_cell(replay.summary),
        ]
    return "\n".join(lines) + "\n"
