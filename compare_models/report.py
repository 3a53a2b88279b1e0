"""Render the model comparison as figures, CSV tables and one self-contained HTML page.

The report is the thing a person actually opens after a run, so it has to
stand on its own: images are embedded as base64 ``data:`` URIs and the CSS is
inline, which means the single ``index.html`` can be downloaded from S3 or
attached to a ticket and still display fully with no network access.

This module only knows about :class:`ModelResult` (plain Python data), so it
can be tested without Prefect, TensorFlow or S3. The orchestration layer
turns its return values into Prefect artifacts and uploads the files.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

# Headless workers have no display; pick the file-only backend before pyplot
# is imported so that importing this module never tries to open a window.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from compare_models.evaluation import comparison_table, metrics_tables  # noqa: E402

#: Resolution of every saved figure: sharp on screen, files stay ~100 kB.
DPI = 110

#: Metrics drawn in the grouped bar chart, with their display labels.
BAR_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "Accuracy"),
    ("precision_macro", "Precision (macro)"),
    ("recall_macro", "Recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("roc_auc_macro", "ROC AUC (macro)"),
)

#: Columns of the human-facing comparison tables (HTML and markdown).
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("precision_macro", "precision (macro)"),
    ("recall_macro", "recall (macro)"),
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

SYNTHETIC_BANNER = "SYNTHETIC DATA — not CIFAR-10 results"
BUDGET_BANNER = (
    "STOPPED BY BUDGET — {}; re-run with the same run id to continue from the checkpoints"
)


def _budget_note(run_info: Mapping[str, object]) -> str | None:
    """The models the run's time budget stopped early, if any ("-" or absent: none)."""
    note = str(run_info.get("stopped_by_budget", "-"))
    return None if note in ("-", "") else note


@dataclass(frozen=True)
class ModelResult:
    """Everything the report needs to know about one trained model.

    Attributes:
        name: short model identifier, e.g. "cnn" or "resnet50"; used in
            titles, table rows and file names.
        history: Keras ``History.history``: metric name -> one value per epoch
            (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``).
        metrics: the record returned by ``compare_models.evaluation.evaluate_predictions``.
        train_seconds: wall-clock training time.
        parameters: number of model parameters.
    """

    name: str
    history: dict
    metrics: dict
    train_seconds: float
    parameters: int


@dataclass(frozen=True)
class Sections:
    """The report's optional sections, beyond the per-model metrics.

    Attributes:
        comparison: ``compare_models.comparison.compare_all``'s record (verdicts, intervals,
            paired tables, per-class tests), with ``calibration`` {model: {"ece"}} added and,
            with replicas, ``recipes`` (``run_record.RecipeComparison``: each model's test
            accuracy per seed, its mean and std, and each pair's Welch test over seeds).
        disagreement: figures already written into the report folder (gallery, confident
            mistakes, reliability diagram) with their captions.
        replay: how far a replay landed from its original run.
        gate: each model's decision against its champion (``compare_models.champions.gate``),
            with its noise ``band`` (``run_record.NoiseBand``) where the gate used one.
        gate_figures: the champion section's figures (accuracy trend, recall changes).
        data: for a folder source, what changed in the data (``run_record.DataChanges``);
            ``data_figures``: its class-balance figure.
        replicas: with ``train.replicas`` > 1, per model, every replica in seed order:
            ``{model: [{"replica": int, "seed": int | None, "val_accuracy": float | None,
            "test_accuracy": float | None, "kept": bool}]}``; ``kept`` marks the one the run
            keeps (best on validation data).
    """

    comparison: Mapping | None = None
    disagreement: Sequence[tuple[Path, str]] = ()
    replay: Mapping | None = None
    gate: Mapping | None = None
    gate_figures: Sequence[tuple[Path, str]] = ()
    replicas: Mapping | None = None
    data: Mapping | None = None
    data_figures: Sequence[tuple[Path, str]] = ()

    @property
    def figures(self) -> list[tuple[Path, str]]:
        return [*self.disagreement, *self.gate_figures, *self.data_figures]


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


def _is_synthetic(run_info: Mapping[str, object]) -> bool:
    """Synthetic runs must never be mistaken for real CIFAR-10 numbers."""
    return str(run_info.get("data_source_kind", "")).strip().lower() == "synthetic"


def _fmt_metric(value: object) -> str:
    """Four decimals for metrics; "n/a" where a metric is undefined (None/NaN)."""
    if value is None:
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(number) else f"{number:.4f}"


def _fmt_parameters(value: int) -> str:
    """Thousands separators make 23,587,712 readable at a glance."""
    return f"{int(value):,}"


def _fmt_seconds(value: float) -> str:
    """Training time to a tenth of a second; more digits would be noise."""
    return f"{float(value):.1f}"


def _safe_filename(name: str) -> str:
    """Model names go into file names; keep them portable and S3-key friendly."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


def _metric_or_nan(metrics: Mapping[str, object], key: str) -> float:
    """Undefined metrics (None) become NaN so matplotlib skips them."""
    value = metrics.get(key)
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]


def _save(fig: Figure, path: Path) -> Path:
    """Write a figure and always release it, so long runs do not leak memory."""
    try:
        fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    finally:
        plt.close(fig)
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
    fig, axes = plt.subplots(
        len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False, layout="constrained"
    )
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
    fig, axes = plt.subplots(
        1,
        len(results),
        figsize=(5.6 * len(results) + 1.0, 5.4),
        squeeze=False,
        layout="constrained",
    )
    image = None
    for ax, result in zip(axes[0], results, strict=True):
        matrix = np.asarray(result.metrics["confusion_matrix_normalized"], dtype=float)
        names = list(result.metrics["class_names"])
        image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0)
        ticks = np.arange(len(names))
        ax.set_xticks(ticks, labels=names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(ticks, labels=names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{result.name} (accuracy {_fmt_metric(result.metrics['accuracy'])})")
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
    fig, axes = plt.subplots(
        1, len(results), figsize=(6.0 * len(results), 5.6), squeeze=False, layout="constrained"
    )
    for ax, result in zip(axes[0], results, strict=True):
        curves = result.metrics["roc_curves"]
        auc_by_class = {row["class"]: row["auc"] for row in result.metrics["per_class"]}
        colours = plt.get_cmap("tab10" if len(auc_by_class) <= 10 else "tab20")
        for index, name in enumerate(result.metrics["class_names"]):
            curve = curves.get(name)
            if curve is None:  # class absent from the test labels: AUC undefined
                continue
            ax.plot(
                curve["fpr"],
                curve["tpr"],
                linewidth=1.2,
                color=colours(index % colours.N),
                label=f"{name} (AUC {_fmt_metric(auc_by_class.get(name))})",
            )
        micro = curves["micro"]
        ax.plot(
            micro["fpr"],
            micro["tpr"],
            color="black",
            linestyle="--",
            linewidth=2.2,
            label=f"micro (AUC {_fmt_metric(result.metrics['roc_auc_micro'])})",
        )
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(
            f"{result.name}: ROC (macro AUC {_fmt_metric(result.metrics['roc_auc_macro'])})"
        )
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def plot_comparison(results: Sequence[ModelResult], path: Path) -> Path:
    """Grouped bars: one group per headline metric, one bar per model."""
    results = _validate_results(results)
    fig, ax = plt.subplots(figsize=(max(8.0, 2.2 * len(BAR_METRICS)), 4.8), layout="constrained")
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
        for entry in result.metrics["per_class"]:
            rows.append(
                {
                    "model": result.name,
                    "class": entry["class"],
                    "precision": round(float(entry["precision"]), 4),
                    "recall": round(float(entry["recall"]), 4),
                    "f1": round(float(entry["f1"]), 4),
                    "support": int(entry["support"]),
                    "auc": None if entry["auc"] is None else round(float(entry["auc"]), 4),
                }
            )
    return rows


# --------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: 0.2rem; }
.verdict { font-size: 1.1rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.92rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.7rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: 0.9rem; }
pre { background: #f6f8fa; padding: 0.8rem; overflow-x: auto; font-size: 0.85rem; }
.banner { background: #fff3cd; border: 3px solid #d4a72c; color: #7a4d00; font-size: 1.4rem;
          font-weight: 700; padding: 0.9rem 1.2rem; margin: 1rem 0; text-align: center; }
tr.decision-regression { background: #ffebe9; color: #82071e; }
tr.decision-within-noise { background: #fff8c5; color: #633c01; }
tr.decision-promoted, tr.decision-first-champion { background: #dafbe1; color: #116329; }
tr.kept { font-weight: 600; background: #ddf4ff; }
.note { color: #57606a; }
"""


def _html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    numeric: Sequence[bool] | None = None,
    row_classes: Sequence[str | None] | None = None,
) -> str:
    """A plain HTML table in which every header and cell is html.escape'd; `row_classes`
    gives each row a CSS class (None: none)."""
    numeric = list(numeric) if numeric is not None else [False] * len(header)
    classes = list(row_classes) if row_classes is not None else [None] * len(rows)
    head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
    body = "\n".join(
        (f'<tr class="{html.escape(css, quote=True)}">' if css else "<tr>")
        + "".join(
            f'<td class="num">{html.escape(str(cell))}</td>'
            if is_num
            else f"<td>{html.escape(str(cell))}</td>"
            for cell, is_num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row, css in zip(rows, classes, strict=True)
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _comparison_html(results: Sequence[ModelResult]) -> str:
    """Headline metrics plus size and training time, one row per model."""
    header = [
        "model",
        *(label for _, label in TABLE_METRICS),
        "ROC AUC (micro)",
        "parameters",
        "training s",
    ]
    rows = [
        [
            result.name,
            *(_fmt_metric(result.metrics.get(key)) for key, _ in TABLE_METRICS),
            _fmt_metric(result.metrics.get("roc_auc_micro")),
            _fmt_parameters(result.parameters),
            _fmt_seconds(result.train_seconds),
        ]
        for result in results
    ]
    return _html_table(header, rows, [False] + [True] * (len(header) - 1))


def _per_class_html(result: ModelResult) -> str:
    header = ["class", "precision", "recall", "F1", "support", "ROC AUC"]
    rows = [
        [
            entry["class"],
            _fmt_metric(entry["precision"]),
            _fmt_metric(entry["recall"]),
            _fmt_metric(entry["f1"]),
            int(entry["support"]),
            _fmt_metric(entry["auc"]),
        ]
        for entry in result.metrics["per_class"]
    ]
    return _html_table(header, rows, [False, True, True, True, True, True])


def _ci(interval: Mapping[str, float], scale: float = 1.0, digits: int = 4) -> str:
    """ "0.6123 (0.6030 to 0.6218)": an estimate with its interval."""
    est, low, high = (float(interval[k]) * scale for k in ("estimate", "ci_low", "ci_high"))
    return f"{est:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def _intervals_html(comparison: Mapping) -> str:
    level = f"{100 * float(comparison['settings']['confidence']):g}%"
    calibration = comparison.get("calibration", {})
    header = ["model", f"accuracy ({level} CI)", f"F1 macro ({level} CI)", "ECE"]
    rows = [
        [
            name,
            _ci(m["accuracy"]),
            _ci(m["f1_macro"]),
            _fmt_metric(calibration.get(name, {}).get("ece")),
        ]
        for name, m in comparison["models"].items()
    ]
    return _html_table(header, rows, [False, True, True, True])


#: With replicas, what the McNemar verdicts are about (the recipes have their own section).
MODELS_LABEL = "these two trained models"


def _pair_html(pair: Mapping, *, label_models: bool = False) -> str:
    table, test = pair["table"], pair["mcnemar"]
    a, b = pair["a"], pair["b"]
    summary = _html_table(
        ["", f"{b} right", f"{b} wrong"],
        [
            [f"{a} right", table["both_right"], table["only_a_right"]],
            [f"{a} wrong", table["only_b_right"], table["both_wrong"]],
        ],
        [False, True, True],
    )
    diff = pair["difference"]
    numbers = _html_table(
        ["statistic", "value"],
        [
            [f"accuracy difference {b} − {a} (points)", _ci(diff["accuracy"], 100, 2)],
            [f"macro-F1 difference {b} − {a} (points)", _ci(diff["f1_macro"], 100, 2)],
            [
                f"{test['test']} p-value ({test['discordant']} discordant images)",
                f"{float(test['pvalue']):.3g}",
            ],
        ],
        [False, True],
    )
    per_class = _html_table(
        [
            "class",
            f"recall {a}",
            f"recall {b}",
            "difference (points, CI)",
            "p",
            "p (Holm)",
            "significant",
        ],
        [
            [
                c["class"],
                _fmt_metric(c["recall_a"]),
                _fmt_metric(c["recall_b"]),
                f"{100 * c['difference']:.1f} ({100 * c['ci_low']:.1f} to {100 * c['ci_high']:.1f})",
                f"{float(c['pvalue']):.3g}",
                f"{float(c['pvalue_holm']):.3g}",
                "yes" if c["significant"] else "no",
            ]
            for c in pair["per_class"]
        ],
        [False, True, True, True, True, True, False],
    )
    return "\n".join(
        [
            f"<h3>{html.escape(a)} vs {html.escape(b)}"
            + (f" ({html.escape(MODELS_LABEL)})" if label_models else "")
            + "</h3>",
            f"<p><strong>{html.escape(_models_verdict(pair['verdict'], label_models))}</strong></p>",
            "<h4>Paired outcomes on the same test images</h4>",
            summary,
            numbers,
            "<h4>Per-class recall</h4>",
            per_class,
        ]
    )


def _models_verdict(verdict: str, label_models: bool) -> str:
    """A McNemar verdict, said to be about the two trained models when recipes are compared too."""
    return f"About {MODELS_LABEL}: {verdict}" if label_models else verdict


def _statistics_html(comparison: Mapping) -> list[str]:
    settings = comparison["settings"]
    recipes = bool(comparison.get("recipes"))
    parts = [
        "<h2>How sure is this comparison?</h2>",
        f"<p>Intervals: {html.escape(str(settings['method']))}, {int(settings['resamples']):,} resamples "
        f"(seed {int(settings['seed'])}). Significance: McNemar's exact test at α = {float(settings['alpha']):g}, "
        "per class with Holm's correction. ECE: expected calibration error of the top-label confidence.</p>",
    ]
    if recipes:
        parts.append(
            f'<p class="note">These tests are about {html.escape(MODELS_LABEL)}: the replica of '
            "each model that the run keeps, on the same test images. Whether one recipe beats "
            "another beyond the seed-to-seed spread is in “Recipes across seeds”.</p>"
        )
    parts += [
        f'<p class="verdict"><strong>{html.escape(_models_verdict(v, recipes))}</strong></p>'
        for v in comparison["verdicts"]
    ]
    parts.append(_intervals_html(comparison))
    parts += [_pair_html(pair, label_models=recipes) for pair in comparison["pairs"]]
    return parts


def _recipes_html(recipes: Mapping, settings: Mapping) -> list[str]:
    """The recipes compared across seeds: each model's accuracies over its seeds, and each
    pair's Welch test of the difference of the means."""
    level = f"{100 * float(settings['confidence']):g}%"
    parts = [
        "<h2>Recipes across seeds</h2>",
        '<p class="note">About the recipes (architecture and training), not one trained model '
        "each: every model was trained with several seeds and each replica tested on the same "
        "images. Welch's t-test on the replicas' test accuracies asks whether one recipe's mean "
        f"beats the other's beyond the seed-to-seed spread (α = {float(settings['alpha']):g}).</p>",
        _html_table(
            ["recipe", "seeds (n)", "test accuracy per seed", "mean ± std"],
            [
                [
                    name,
                    f"{', '.join(str(seed) for seed in m['seeds'])} ({len(m['accuracies'])})",
                    ", ".join(_fmt_metric(a) for a in m["accuracies"]),
                    f"{_fmt_metric(m['mean'])} ± {_fmt_metric(m['std'])}",
                ]
                for name, m in recipes["models"].items()
            ],
            [False, False, True, True],
        ),
    ]
    pairs = recipes["pairs"]
    if not pairs:
        parts.append("<p>No two recipes with two or more seeds each to compare.</p>")
        return parts
    parts += [
        f'<p class="verdict"><strong>Recipes: {html.escape(p["verdict"])}</strong></p>'
        for p in pairs
    ]
    parts.append(
        _html_table(
            [
                "recipes",
                f"mean accuracy b − a (points, {level} CI)",
                "Welch p",
                "significant",
                "better recipe",
            ],
            [
                [
                    f"{p['a']} (a) vs {p['b']} (b)",
                    _ci(p["difference"], 100, 2),
                    f"{float(p['pvalue']):.3g}",
                    "yes" if p["significant"] else "no",
                    p["better"] or "neither",
                ]
                for p in pairs
            ],
            [False, True, True, False, False],
        )
    )
    return parts


KEPT_NOTE = "kept: best on validation data"


def _replicas_html(replicas: Mapping) -> list[str]:
    """Per model, every replica's seed and accuracies, marking the one the run keeps."""
    parts = [
        "<h2>Replicas</h2>",
        '<p class="note">Each model was trained once per seed; the run keeps the replica best '
        "on validation data, and the others measure the recipe's seed-to-seed noise.</p>",
    ]
    for model, rows in replicas.items():
        parts += [
            f"<h3>{html.escape(str(model))}</h3>",
            _html_table(
                ["replica", "seed", "final validation accuracy", "test accuracy", ""],
                [
                    [
                        r["replica"],
                        "-" if r.get("seed") is None else r["seed"],
                        _fmt_metric(r.get("val_accuracy")),
                        _fmt_metric(r.get("test_accuracy")),
                        KEPT_NOTE if r.get("kept") else "",
                    ]
                    for r in rows
                ],
                [True, True, True, True, False],
                ["kept" if r.get("kept") else None for r in rows],
            ),
        ]
    return parts


def _replay_html(replay: Mapping) -> list[str]:
    parts = [
        f"<h2>Replay of run {html.escape(str(replay['original_run_id']))}</h2>",
        f"<p>{html.escape(replay['summary'])}</p>",
    ]
    rows = [
        [
            m,
            r["identical_predictions"],
            f"{r['max_abs_probability_difference']:.3g}",
            f"{100 * r['pair']['difference']['accuracy']['estimate']:+.2f}",
            f"{float(r['pair']['mcnemar']['pvalue']):.3g}",
        ]
        for m, r in replay["models"].items()
    ]
    parts.append(
        _html_table(
            [
                "model",
                "same predicted class on",
                "largest probability change",
                "accuracy replay − original (points)",
                "McNemar p",
            ],
            rows,
            [False, True, True, True, True],
        )
    )
    changed = replay["fingerprint_changes"]
    parts.append("<h3>What changed in the fingerprint</h3>")
    parts.append(
        _html_table(
            ["entry", "original", "replay"],
            [[c["entry"], c["original"], c["replay"]] for c in changed],
        )
        if changed
        else "<p>Nothing: same code, libraries, machine, data, seeds and parameters.</p>"
    )
    return parts


def _embedded_figure(path: Path, caption: str) -> str:
    """An <img> whose PNG lives inside the page, so the HTML needs no other files."""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    text = html.escape(caption)
    return (
        f'<figure><img src="data:image/png;base64,{encoded}" alt="{text}">'
        f"<figcaption>{text}</figcaption></figure>"
    )


def _band_text(band: Mapping | None) -> str:
    """ "±1.20 points (replicas: ...)": a decision's noise band, or "-" where it had none."""
    if not band:
        return "-"
    where = f"({band['source']}: {band['detail']})"
    if band["source"] == "off":
        return f"none {where}"
    text = f"±{100 * float(band['points']):.2f} points {where}"
    per_class = [float(v) for v in (band.get("class_points") or {}).values()]
    if per_class:
        low, high = 100 * min(per_class), 100 * max(per_class)
        spread = f"±{low:.2f}" if low == high else f"±{low:.2f} to ±{high:.2f}"
        text += f"; per class {spread} points"
    return text


def _gate_html(gate: Mapping, figures: Sequence[tuple[Path, str]]) -> list[str]:
    rows, classes = [], []
    for model, d in gate.items():
        pair = d.get("comparison")
        diff = f"{100 * pair['difference']['accuracy']['estimate']:+.2f}" if pair else "-"
        p = f"{float(pair['mcnemar']['pvalue']):.3g}" if pair else "-"
        rows.append(
            [
                model,
                d["decision"],
                d["champion_run_id"] or "-",
                diff,
                p,
                _band_text(d.get("band")),
                d["reason"],
            ]
        )
        classes.append(f"decision-{d['decision']}")
    track = next(iter(gate.values()))["track"] if gate else ""
    return [
        f"<h2>vs champion (track {html.escape(str(track))})</h2>",
        _html_table(
            [
                "model",
                "decision",
                "champion run",
                "accuracy change (points)",
                "McNemar p",
                "noise band",
                "reason",
            ],
            rows,
            [False, False, False, True, True, False, False],
            classes,
        ),
        *(_embedded_figure(path, caption) for path, caption in figures),
    ]


def _data_html(data: Mapping, figures: Sequence[tuple[Path, str]]) -> list[str]:
    """What changed in the data: per class, images per split and added / removed since the
    champion's version and the previous run's, then the skipped files with their reasons."""

    def delta(which: str, c: str) -> str:
        d = data[which].get(c)
        return f"+{d['added']} / -{d['removed']}" if d else "-"

    short = lambda v: (v or "-")[:12]  # noqa: E731
    rows = [
        [c, n.get("train", 0), n.get("val", 0), n.get("test", 0), delta("since_champion", c), delta("since_previous", c)]
        for c, n in data["counts"].items()
    ]  # fmt: skip
    parts = [
        "<h2>What changed in the data</h2>",
        f"<p>Dataset version <code>{html.escape(short(data['version_id']))}</code>; the champion's "
        f"<code>{html.escape(short(data.get('champion_version_id')))}</code>, the previous run's "
        f"<code>{html.escape(short(data.get('previous_version_id')))}</code>. "
        f"{int(data['duplicates'])} duplicate file(s) (used once), {int(data['skipped_total'])} "
        "file(s) skipped.</p>",
        _html_table(
            ["class", "train", "val", "test", "since the champion", "since the previous run"], rows
        ),
        *(_embedded_figure(path, caption) for path, caption in figures),
    ]
    if data["skipped"]:
        parts += [
            "<h3>Skipped files</h3>",
            _html_table(["file", "reason"], [[s["key"], s["reason"]] for s in data["skipped"]]),
        ]
        if data["skipped_total"] > len(data["skipped"]):
            parts.append(
                f"<p>The first {len(data['skipped'])} of {data['skipped_total']}; "
                f"`compare-models dataset {html.escape(short(data['version_id']))} --skipped` lists "
                "every one.</p>"
            )
    return parts


def _index_html(
    results: Sequence[ModelResult],
    figures: Sequence[tuple[Path, str]],
    *,
    title: str,
    run_info: Mapping[str, object],
    sections: Sections,
) -> str:
    """Assemble the self-contained report page."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if _is_synthetic(run_info):
        parts.append(f'<div class="banner" role="alert">{html.escape(SYNTHETIC_BANNER)}</div>')
    if _budget_note(run_info):
        parts.append(
            f'<div class="banner" role="alert">{html.escape(BUDGET_BANNER.format(_budget_note(run_info)))}</div>'
        )
    parts += [
        "<h2>Run</h2>",
        (
            _html_table(["setting", "value"], [[key, value] for key, value in run_info.items()])
            if run_info
            else "<p>No run information supplied.</p>"
        ),
        "<h2>Comparison</h2>",
        _comparison_html(results),
    ]
    if sections.gate:
        parts += _gate_html(sections.gate, sections.gate_figures)
    if sections.comparison is not None:
        parts += _statistics_html(sections.comparison)
    if sections.replicas:
        parts += _replicas_html(sections.replicas)
    if sections.comparison is not None and sections.comparison.get("recipes"):
        parts += _recipes_html(sections.comparison["recipes"], sections.comparison["settings"])
    if sections.disagreement:
        parts += [
            "<h2>Where the models disagree</h2>",
            *(_embedded_figure(path, caption) for path, caption in sections.disagreement),
        ]
    if sections.replay is not None:
        parts += _replay_html(sections.replay)
    if sections.data is not None:
        parts += _data_html(sections.data, sections.data_figures)
    parts += [
        "<h2>Figures</h2>",
        *(_embedded_figure(path, caption) for path, caption in figures),
    ]
    for result in results:
        parts += [
            f"<h2>Model: {html.escape(result.name)}</h2>",
            f"<p>{html.escape(_fmt_parameters(result.parameters))} parameters, "
            f"trained in {html.escape(_fmt_seconds(result.train_seconds))} s, "
            f"{int(result.metrics['n_samples']):,} test samples.</p>",
            "<h3>Per-class metrics</h3>",
            _per_class_html(result),
            "<h3>Classification report</h3>",
            f"<pre>{html.escape(result.metrics['classification_report'])}</pre>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


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
        _index_html(results, figures, title=title, run_info=run_info, sections=sections),
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
    if _is_synthetic(run_info):
        lines += [f"> **{SYNTHETIC_BANNER}**", ""]
    if _budget_note(run_info):
        lines += [f"> **{_md_cell(BUDGET_BANNER.format(_budget_note(run_info)))}**", ""]
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
            *(_fmt_metric(result.metrics.get(key)) for key, _ in TABLE_METRICS),
            _fmt_parameters(result.parameters),
            _fmt_seconds(result.train_seconds),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if len(results) > 1:
        best = max(results, key=lambda result: float(result.metrics["accuracy"]))
        lines += [
            "",
            f"Best test accuracy: **{_md_cell(best.name)}** "
            f"({_fmt_metric(best.metrics['accuracy'])}).",
        ]
    sections = sections or Sections()
    comparison, replay = sections.comparison, sections.replay
    if sections.gate:
        lines += ["", "## vs champion", ""]
        lines += [
            f"- **{_md_cell(model)}: {_md_cell(d['decision'])}**: {_md_cell(d['reason'])}"
            + (f"; noise band {_md_cell(_band_text(d['band']))}" if d.get("band") else "")
            for model, d in sections.gate.items()
        ]
    recipes = comparison.get("recipes") if comparison is not None else None
    if comparison is not None:
        level = f"{100 * float(comparison['settings']['confidence']):g}%"
        lines += ["", "## How sure is this comparison?", ""]
        lines += [
            f"- **{_md_cell(_models_verdict(verdict, bool(recipes)))}**"
            for verdict in comparison["verdicts"]
        ]
        lines += [
            "",
            f"| model | accuracy ({level} CI) | F1 macro ({level} CI) |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| {_md_cell(name)} | {_ci(m['accuracy'])} | {_ci(m['f1_macro'])} |"
            for name, m in comparison["models"].items()
        ]
        for pair in comparison["pairs"]:
            if pair["significant_classes"]:
                lines += [
                    "",
                    f"Classes where {_md_cell(pair['a'])} and {_md_cell(pair['b'])} differ significantly "
                    f"(Holm): {_md_cell(', '.join(pair['significant_classes']))}.",
                ]
    if sections.replicas:
        lines += ["", "## Replicas", ""]
        for model, rows in sections.replicas.items():
            seeds = ", ".join("-" if r.get("seed") is None else str(r["seed"]) for r in rows)
            kept = next((r for r in rows if r.get("kept")), None)
            tests = ", ".join(_fmt_metric(r.get("test_accuracy")) for r in rows)
            lines.append(
                f"- **{_md_cell(model)}**: {len(rows)} replicas (seeds {_md_cell(seeds)}), test "
                f"accuracy {tests}"
                + (
                    f"; kept: replica {_md_cell(kept['replica'])} (best on validation data)"
                    if kept
                    else ""
                )
            )
    if recipes:
        lines += ["", "## Recipes across seeds", ""]
        lines += [
            f"- **{_md_cell(name)}**: mean test accuracy {_fmt_metric(m['mean'])} ± "
            f"{_fmt_metric(m['std'])} over {len(m['accuracies'])} seeds"
            for name, m in recipes["models"].items()
        ]
        lines += [
            f"- **Recipes {_md_cell(p['a'])} vs {_md_cell(p['b'])}**: {_md_cell(p['verdict'])}"
            for p in recipes["pairs"]
        ]
    if replay is not None:
        lines += [
            "",
            f"## Replay of {_md_cell(replay['original_run_id'])}",
            "",
            _md_cell(replay["summary"]),
        ]
    return "\n".join(lines) + "\n"
