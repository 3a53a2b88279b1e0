"""How the models fare against the champion over time: figures for the report's "vs champion" section.

* :func:`plot_accuracy_trend`: one line per model with its test accuracy and interval over the last
  completed comparable nightly runs, oldest on the left. The x axis is the run order, labelled with the
  run's date and short id (thinned, always keeping the newest run, when there are many runs). Gate
  decisions are drawn on top of the points: a gold star where the model was promoted, a red "X" where
  the gate found a regression, a hollow amber triangle where it was worse but within the noise band, a
  hollow green diamond where it became the first champion and a hollow grey circle where the run was
  not comparable. A gap in a line means the model was missing from that run or had no accuracy
  recorded. With ``bands``, each model's champion noise band (the accuracy range within which a
  challenger's change counts as retraining noise) is a lightly shaded horizontal region in the model's
  colour across the plot, labelled "<model> noise band" in the legend. With no runs the figure says
  "no earlier comparable runs".
* :func:`champion_figures`: the section's figures, the trend and the per-class recall changes
  (:mod:`compare_models.report.recall_changes`), with their captions.

Each function writes one PNG (creating its folder) at a fixed DPI on a white background and returns its
path. As in :mod:`compare_models.report.diagnostics`, figures are built with ``matplotlib.figure.Figure`` and
the Agg canvas, never ``pyplot``: no figure is registered globally (none can be left open), the
process-wide backend is untouched and drawing is safe from worker threads.

Malformed input raises ``ValueError`` naming the run or model and the field at fault.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from compare_models.report import figures
from compare_models.report import recall_changes as recall_figure
from compare_models.report.learning_curve import caption as learning_curve_caption
from compare_models.report.learning_curve import curves_of, plot_learning_curves
from compare_models.runs.decision import (
    DECISIONS,
    FIRST,
    NOT_COMPARABLE,
    PROMOTED,
    REGRESSION,
    WITHIN_NOISE,
)
from compare_models.runs.record import RunRecord
from compare_models.runs.track_history import band_source, noise_bands, recall_changes, trend_points

MAX_RUN_LABELS = 20  # most labelled runs on the trend's x axis before labels are thinned
MIN_ACCURACY_SPAN = 0.05  # the trend's y axis spans at least 5 points of accuracy

BAND_ALPHA = 0.13  # opacity of a noise band's shading: light, so lines and markers stay legible

# decision -> (legend label, scatter style); decisions not listed here get no marker.
_DECISION_STYLE: dict[str, tuple[str, dict[str, Any]]] = {
    PROMOTED: (
        "promoted",
        {"marker": "*", "s": 220, "facecolor": "#d4a72c", "edgecolor": "black"},
    ),
    REGRESSION: (
        "regression",
        {"marker": "X", "s": 110, "facecolor": "#cf222e", "edgecolor": "white"},
    ),
    WITHIN_NOISE: (
        "within noise",
        {"marker": "v", "s": 120, "facecolor": "none", "edgecolor": "#bf8700", "linewidths": 1.6},
    ),
    FIRST: (
        "first champion",
        {"marker": "D", "s": 130, "facecolor": "none", "edgecolor": "#1a7f37", "linewidths": 1.8},
    ),
    NOT_COMPARABLE: (
        "not comparable",
        {"marker": "o", "s": 150, "facecolor": "none", "edgecolor": "0.45", "linewidths": 1.2},
    ),
}
_RUN_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})-\d{6}-(\w+)$")  # "20261126-020000-ab12cd34"


# --------------------------------------------------------------------------------------------
# Accuracy trend
# --------------------------------------------------------------------------------------------


def plot_accuracy_trend(
    points: Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    confidence: float = 0.95,
    bands: Mapping[str, tuple[float, float]] | None = None,
) -> Path:
    """Each model's test accuracy with its interval over the last comparable runs.

    Every model gets one line (markers with error bars for the interval) over the run order; the
    gate decisions are marked on the points (see the module docstring). A model missing from a run,
    or whose ``accuracy`` is ``None``, has no point there and its line is broken; a decision recorded
    without an accuracy is not drawn either. The interval bar spans ``ci_low..ci_high`` even where a
    (percentile bootstrap) interval does not contain the estimate. One point is enough to render.

    Args:
        points: Completed comparable runs, oldest first, each
            ``{"run_id": str, "completed_at": ISO 8601 str | datetime | None,
            "models": {name: {"accuracy": {"estimate", "ci_low", "ci_high"} | None,
            "decision": one of DECISIONS | None}}}``. ``completed_at`` and ``decision`` may be
            absent; accuracies are fractions in ``[0, 1]``.
        path: Where to write the PNG.
        confidence: The intervals' confidence level, named in the title.
        bands: Per model, the ``(low, high)`` accuracy range its champion's noise band spans
            (fractions in ``[0, 1]``), drawn as a shaded region across the plot in the model's
            colour; ``None`` or empty draws none (and the figure is the same as without it).

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On malformed points: not a sequence of mappings, a missing or repeated
            ``run_id``, an unparseable or out-of-order ``completed_at``, an accuracy that is not
            finite or outside ``[0, 1]``, ``ci_low > ci_high``, or an unknown decision; on
            malformed bands: not a mapping of model name -> ``(low, high)``, a bound that is not
            finite or outside ``[0, 1]``, ``low > high``, or a model that is in no run.
    """
    runs = _validate_points(points)
    spans = _validate_bands(bands, runs)
    if not runs:
        return _save(
            figures.message_figure("Accuracy trend: no earlier comparable runs.", constrained=True),
            path,
        )

    n = len(runs)
    fig = figures.figure(min(16.0, max(7.0, 3.0 + 0.22 * n)), 5.0, constrained=True)
    ax = fig.add_subplot()
    x = np.arange(n)
    used: set[str] = set()
    drawn = False
    for m, (name, values, estimate) in enumerate(_model_series(runs)):
        colour = f"C{m % 10}"
        if _plot_model(ax, x, name, colour, values, estimate):
            drawn = True
            used |= _mark_decisions(ax, x, values, estimate)
        if name in spans:  # after the line, so the legend lists it below the model's line
            _draw_band(ax, name, colour, spans[name])
    if not drawn:
        _note_no_accuracy(ax)
    _add_trend_legend(ax, used)
    ticks = _label_runs(ax, [run["label"] for run in runs])
    _format_accuracy_axis(ax)
    ax.set_title(_trend_title(n, ticks, confidence), fontsize=10)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _model_series(
    runs: Sequence[Mapping[str, Any]],
) -> list[tuple[str, list[Any], np.ndarray]]:
    """Per model, in order of first appearance: its ``(accuracy, decision)`` in each run (``None``
    where it is missing) and its estimates (NaN where there is none)."""
    names: list[str] = []
    for run in runs:
        names.extend(name for name in run["models"] if name not in names)
    series = []
    for name in names:
        values = [run["models"].get(name) for run in runs]
        estimate = np.array([np.nan if v is None or v[0] is None else v[0][0] for v in values])
        series.append((name, values, estimate))
    return series


def _plot_model(
    ax: Axes, x: np.ndarray, name: str, colour: str, values: list[Any], estimate: np.ndarray
) -> bool:
    """Draw one model's line and interval bars; ``False`` if it has no accuracy to draw."""
    line = {"color": colour, "linewidth": 1.4, "marker": "o", "markersize": 5}
    present = np.isfinite(estimate)
    if not present.any():
        # Keep the model in the legend so a reader sees it was expected but never measured.
        ax.plot([], [], **line, label=f"{name} (no accuracy)")
        return False
    low = np.array([v[0][1] if p else np.nan for v, p in zip(values, present, strict=True)])
    high = np.array([v[0][2] if p else np.nan for v, p in zip(values, present, strict=True)])
    # NaNs break the line where the model has no point, so gaps stay visible.
    ax.plot(x, estimate, **line, zorder=2, label=name)
    # The bar is drawn about the interval's middle: a percentile bootstrap interval need not contain
    # the estimate, and error bars measured from the estimate could not show that.
    ax.errorbar(
        x[present],
        (low[present] + high[present]) / 2,
        yerr=(high[present] - low[present]) / 2,
        fmt="none",
        ecolor=colour,
        capsize=3,
        elinewidth=1.0,
        zorder=2,
    )
    return True


def _draw_band(ax: Axes, name: str, colour: str, span: tuple[float, float]) -> None:
    """Shade the model's noise band across the whole plot, beneath the lines and markers."""
    low, high = span
    ax.axhspan(
        low,
        high,
        facecolor=colour,
        alpha=BAND_ALPHA,
        linewidth=0,
        zorder=0.5,
        label=f"{name} noise band",
    )


def _mark_decisions(ax: Axes, x: np.ndarray, values: list[Any], estimate: np.ndarray) -> set[str]:
    """Mark one model's gate decisions on its points; return the decisions marked."""
    present = np.isfinite(estimate)
    used = set()
    for decision, (_, style) in _DECISION_STYLE.items():
        hit = present & np.array([v is not None and v[1] == decision for v in values])
        if hit.any():
            used.add(decision)
            ax.scatter(x[hit], estimate[hit], zorder=3, **style)
    return used


def _note_no_accuracy(ax: Axes) -> None:
    ax.text(
        0.5,
        0.5,
        "no accuracy recorded in these runs",
        transform=ax.transAxes,
        ha="center",
        va="center",
    )
    ax.set_ylim(0.0, 1.0)


def _add_trend_legend(ax: Axes, used: set[str]) -> None:
    """The models' lines, then one entry per decision marked on any of them."""
    handles, labels = ax.get_legend_handles_labels()
    for decision, (label, style) in _DECISION_STYLE.items():
        if decision in used:
            handles.append(_legend_marker(style))
            labels.append(label)
    ax.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False
    )


def _label_runs(ax: Axes, labels: Sequence[str]) -> list[int]:
    """Label the run axis (thinned when there are many runs); return the labelled run indices."""
    n = len(labels)
    ticks = _thinned_ticks(n, MAX_RUN_LABELS)
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=45, ha="right", fontsize=8)
    ax.set_xticks(np.arange(n), minor=True)
    ax.set_xlim(-0.6, n - 0.4)
    ax.set_xlabel("completed run (oldest → newest)")
    return ticks


def _format_accuracy_axis(ax: Axes) -> None:
    low, high = ax.get_ylim()
    # Keep a lone point or a flat line from being zoomed into noise.
    if high - low < MIN_ACCURACY_SPAN:
        middle = (low + high) / 2
        ax.set_ylim(middle - MIN_ACCURACY_SPAN / 2, middle + MIN_ACCURACY_SPAN / 2)
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    ax.set_ylabel("test accuracy")


def _trend_title(n: int, ticks: Sequence[int], confidence: float) -> str:
    thinned = "" if len(ticks) == n else f"; 1 run in {ticks[1] - ticks[0]} labelled"
    run_word = "run" if n == 1 else "runs"
    return (
        f"Test accuracy over the last {n} comparable {run_word} "
        f"({100 * confidence:g}% intervals{thinned})"
    )


def _validate_points(points: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check the trend's points; return ``{"label", "models": {name: (acc triple | None, decision)}}``."""
    if isinstance(points, str | bytes | Mapping) or not isinstance(points, Sequence):
        raise ValueError(
            f"points must be a sequence of run mappings (oldest first), got {type(points).__name__}"
        )
    runs: list[dict[str, Any]] = []
    seen: set[str] = set()
    previous: datetime | None = None
    for i, point in enumerate(points):
        if not isinstance(point, Mapping):
            raise ValueError(f"points[{i}] must be a mapping, got {type(point).__name__}")
        run_id = point.get("run_id")
        if not isinstance(run_id, str) or not run_id:
            raise ValueError(f"points[{i}] needs a non-empty string run_id, got {run_id!r}")
        if run_id in seen:
            raise ValueError(f"run {run_id!r} appears more than once in points")
        seen.add(run_id)
        completed = _parse_time(point.get("completed_at"), run_id)
        if (
            completed is not None
            and previous is not None
            and _seconds_between(previous, completed) < 0
        ):
            raise ValueError(
                f"points must be ordered oldest first, but run {run_id!r} completed at {completed.isoformat()}, "
                f"before the run listed ahead of it ({previous.isoformat()})"
            )
        previous = completed if completed is not None else previous
        models = point.get("models", {})
        if not isinstance(models, Mapping):
            raise ValueError(f"models of run {run_id!r} must be a mapping of model name -> result")
        clean: dict[str, tuple[tuple[float, float, float] | None, str | None]] = {}
        for name, result in models.items():
            where = f"model {name!r} in run {run_id!r}"
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"model names in run {run_id!r} must be non-empty strings, got {name!r}"
                )
            if not isinstance(result, Mapping):
                raise ValueError(
                    f"{where} must be a mapping with accuracy and decision, got {type(result).__name__}"
                )
            decision = result.get("decision")
            if decision is not None and decision not in DECISIONS:
                raise ValueError(
                    f"{where} has unknown decision {decision!r}; expected one of {DECISIONS} or None"
                )
            clean[name] = (_accuracy(result.get("accuracy"), where), decision)
        runs.append({"label": _run_label(run_id, completed), "models": clean})
    return runs


def _validate_bands(
    bands: Mapping[str, Any] | None, runs: Sequence[Mapping[str, Any]]
) -> dict[str, tuple[float, float]]:
    """Check the noise bands against the validated runs; return ``{model: (low, high)}``."""
    if bands is None:
        return {}
    if not isinstance(bands, Mapping):
        raise ValueError(
            f"bands must be a mapping of model name -> (low, high), got {type(bands).__name__}"
        )
    known = {name for run in runs for name in run["models"]}
    spans: dict[str, tuple[float, float]] = {}
    for name, span in bands.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"band model names must be non-empty strings, got {name!r}")
        where = f"noise band of model {name!r}"
        if name not in known:
            raise ValueError(
                f"{where}: the model is in none of the points (models: {sorted(known)})"
            )
        if isinstance(span, str | bytes | Mapping) or not isinstance(span, Sequence | np.ndarray):
            raise ValueError(f"{where} must be a (low, high) pair, got {type(span).__name__}")
        if len(span) != 2:
            raise ValueError(f"{where} must be a (low, high) pair, got {len(span)} values")
        low = figures.finite(span[0], f"low of {where}")
        high = figures.finite(span[1], f"high of {where}")
        for key, number in (("low", low), ("high", high)):
            if not 0.0 <= number <= 1.0:
                raise ValueError(f"{key} of {where} must be a fraction in [0, 1], got {number!r}")
        if low > high:
            raise ValueError(f"{where} must satisfy low <= high, got low {low!r} > high {high!r}")
        spans[name] = (low, high)
    return spans


def _accuracy(value: Any, where: str) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(
            f"accuracy of {where} must be a mapping or None, got {type(value).__name__}"
        )
    triple = []
    for key in ("estimate", "ci_low", "ci_high"):
        if key not in value:
            raise ValueError(f"accuracy of {where} lacks {key!r}")
        number = figures.finite(value[key], f"accuracy {key} of {where}")
        if not 0.0 <= number <= 1.0:
            raise ValueError(
                f"accuracy {key} of {where} must be a fraction in [0, 1], got {number!r}"
            )
        triple.append(number)
    estimate, low, high = triple
    if low > high:
        raise ValueError(
            f"accuracy of {where} must satisfy ci_low <= ci_high, got ci_low {low!r} > ci_high {high!r}"
        )
    return estimate, low, high


def _parse_time(value: Any, run_id: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(
        f"completed_at of run {run_id!r} must be an ISO 8601 timestamp or None, got {value!r}"
    )


def _seconds_between(a: datetime, b: datetime) -> float:
    """Seconds from ``a`` to ``b``; naive timestamps are compared as if in the same zone as aware ones."""
    if (a.tzinfo is None) != (b.tzinfo is None):
        a, b = a.replace(tzinfo=None), b.replace(tzinfo=None)
    return (b - a).total_seconds()


def _run_label(run_id: str, completed: datetime | None) -> str:
    """``"2026-11-26 ab12cd34"``: the completion date (else the run id's date) and the id's random suffix."""
    match = _RUN_ID.match(run_id)
    short = match.group(4)[:8] if match else (run_id if len(run_id) <= 16 else run_id[:15] + "…")
    if completed is not None:
        date = completed.strftime("%Y-%m-%d")
    elif match:
        date = f"{match.group(1)}-{match.group(2)}-{match.group(3)}"
    else:
        return short
    return f"{date} {short}"


def _thinned_ticks(n: int, max_labels: int) -> list[int]:
    """Evenly spaced run indices, at most ``max_labels`` of them, always including the newest run."""
    step = max(1, math.ceil(n / max_labels))
    return list(range(n - 1, -1, -step))[::-1]


def _legend_marker(style: Mapping[str, Any]) -> Line2D:
    return Line2D(
        [],
        [],
        linestyle="none",
        marker=style["marker"],
        markersize=math.sqrt(style["s"]),
        markerfacecolor=style["facecolor"],
        markeredgecolor=style["edgecolor"],
        markeredgewidth=style.get("linewidths", 1.0),
    )


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: str | Path) -> Path:
    """Every figure here is saved through this (on white), so tests can inspect it."""
    return figures.save(fig, path, facecolor="white")


__all__ = ["DECISIONS", "champion_figures", "plot_accuracy_trend"]


def champion_figures(
    records: list[RunRecord], *, current: RunRecord, last: int, out_dir: Path
) -> list[tuple[Path, str]]:
    """The report's "vs champion" figures: the accuracy trend of the track, the learning curve
    where a model's band came from one, and, for models compared with a champion, the
    per-class recall changes."""
    points = trend_points(records, current=current, last=last)
    level = f"{100 * current.confidence:g}%"
    # Only models with a point in the current run can carry a band (the plot refuses others).
    bands = {m: b for m, b in noise_bands(current.gate).items() if m in current.metrics}
    caption = (
        f"Test accuracy ({level} CI) over the last {len(points)} comparable run(s) of track "
        f"{current.track}, with promotions, regressions and changes within the noise band"
    )
    if bands:
        sources = "; ".join(f"{m}: {band_source(current.gate[m].band)}" for m in bands)
        caption += (
            "; shaded: the champion's noise band (its accuracy ± the band's half-width), "
            f"from {sources}"
        )
    figures = [
        (
            plot_accuracy_trend(
                points,
                out_dir / "accuracy_trend.png",
                confidence=current.confidence,
                bands=bands,
            ),
            caption,
        )
    ]
    if curves_of(current.gate):
        figures.append(
            (
                plot_learning_curves(
                    current.gate,
                    {m: current.metrics[m].accuracy for m in current.metrics},
                    out_dir / "learning_curve.png",
                ),
                learning_curve_caption(current.gate),
            )
        )
    figures.append(
        (
            recall_figure.plot_recall_changes(
                recall_changes(current.gate), out_dir / "recall_changes.png"
            ),
            "Per-class recall change against the champion (points; * significant after Holm)",
        )
    )
    return figures
