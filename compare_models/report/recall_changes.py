"""The report's per-class recall changes against the champion.

* :func:`plot_recall_changes`: a heat map of per-class recall changes against the champion, one row per
  model ("cnn (vs <champion run id>)") and one column per class. Cells are blue where the challenger
  recalls the class better and red where it recalls it worse (a diverging colormap centred at 0 with
  symmetric limits), annotated with the change in percentage points ("+3.1"); changes that stay
  significant after the Holm correction are bold and starred. With no models the figure says "no
  champion to compare with".

The PNG is written at `figures.DPI` on white, without pyplot (see `compare_models.report.trends`).
Malformed input raises ``ValueError`` naming the model and the field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from compare_models.report import figures

MIN_RECALL_LIMIT = 0.05  # colour limits of the recall heat map are at least +-5 points


def plot_recall_changes(changes: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Heat map of per-class recall changes (challenger minus champion), one row per model.

    Colours use the ``RdBu`` diverging colormap centred at 0 with symmetric limits
    ``+-max(largest |difference|, 0.05)``; cells show the change in percentage points and
    significant ones (after the Holm correction) are bold with a ``*``.

    Args:
        changes: Model name -> ``{"class_names": [str, ...], "difference": [float, ...],
            "significant": [bool, ...], "champion_run_id": str | None}``; differences are fractions
            in ``[-1, 1]`` and every model must list the same classes in the same order.
            ``champion_run_id`` may be absent.
        path: Where to write the PNG.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On malformed changes: lists of different lengths, a difference that is not
            finite or outside ``[-1, 1]``, a non-boolean significance flag, class names that are
            not unique strings or differ between models.
    """
    rows = _validate_changes(changes)
    if not rows:
        return _save(
            figures.message_figure(
                "Per-class recall vs champion: no champion to compare with.", constrained=True
            ),
            path,
        )

    classes = rows[0][1]
    diff = np.array([row[2] for row in rows])
    significant = np.array([row[3] for row in rows], dtype=bool)
    limit = max(MIN_RECALL_LIMIT, float(np.abs(diff).max()))
    n_models, n_classes = diff.shape

    fig = figures.figure(max(6.0, 3.6 + 0.72 * n_classes), 2.1 + 0.5 * n_models, constrained=True)
    ax = fig.add_subplot()
    image = ax.imshow(diff, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for r in range(n_models):
        for c in range(n_classes):
            points = round(diff[r, c] * 100, 1)
            text = "0.0" if points == 0 else f"{points:+.1f}"
            bold = bool(significant[r, c])
            ax.text(
                c,
                r,
                text + ("*" if bold else ""),
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if bold else "normal",
                color="white" if abs(diff[r, c]) > 0.6 * limit else "black",
            )
    ax.set_xticks(np.arange(n_classes), classes, rotation=45, ha="right", fontsize=8)
    labels = [
        name if champion is None else f"{name} (vs {champion})" for name, _, _, _, champion in rows
    ]
    ax.set_yticks(np.arange(n_models), labels, fontsize=8)
    ax.tick_params(length=0)
    colorbar = fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    colorbar.ax.yaxis.set_major_formatter(
        FuncFormatter(lambda v, _: f"{v * 100:+.0f}" if v else "0")
    )
    colorbar.set_label("recall change (points)", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    ax.set_title(
        "Per-class recall change vs champion (challenger − champion, percentage points)\n"
        "* significant after Holm correction",
        fontsize=10,
    )
    return _save(fig, path)


def _validate_changes(
    changes: Mapping[str, Mapping[str, Any]],
) -> list[tuple[str, list[str], list[float], list[bool], str | None]]:
    """Check the heat map's input; return ``(model, class names, differences, significant, champion)`` rows."""
    if not isinstance(changes, Mapping):
        raise ValueError(
            f"changes must be a mapping of model name -> recall change, got {type(changes).__name__}"
        )
    rows = []
    for name, change in changes.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        where = f"model {name!r}"
        if not isinstance(change, Mapping):
            raise ValueError(
                f"recall change of {where} must be a mapping, got {type(change).__name__}"
            )
        for key in ("class_names", "difference", "significant"):
            value = change.get(key)
            if isinstance(value, str | bytes) or not isinstance(value, Sequence | np.ndarray):
                raise ValueError(f"{key} of {where} must be a list, got {type(value).__name__}")
        classes = list(change["class_names"])
        if (
            not classes
            or not all(isinstance(c, str) and c for c in classes)
            or len(set(classes)) != len(classes)
        ):
            raise ValueError(
                f"class_names of {where} must be a non-empty list of unique non-empty strings"
            )
        lengths = {key: len(change[key]) for key in ("class_names", "difference", "significant")}
        if len(set(lengths.values())) != 1:
            raise ValueError(
                f"class_names, difference and significant of {where} must have equal lengths, got {lengths}"
            )
        difference = []
        for cls, value in zip(classes, change["difference"], strict=True):
            number = figures.finite(value, f"difference of class {cls!r} for {where}")
            if not -1.0 <= number <= 1.0:
                raise ValueError(
                    f"difference of class {cls!r} for {where} must be a fraction in [-1, 1], got {number!r}"
                )
            difference.append(number)
        significant = []
        for cls, flag in zip(classes, change["significant"], strict=True):
            if not isinstance(flag, bool | np.bool_):
                raise ValueError(
                    f"significant of class {cls!r} for {where} must be a bool, got {flag!r}"
                )
            significant.append(bool(flag))
        champion = change.get("champion_run_id")
        if champion is not None and (not isinstance(champion, str) or not champion):
            raise ValueError(
                f"champion_run_id of {where} must be a non-empty string or None, got {champion!r}"
            )
        if rows and classes != rows[0][1]:
            raise ValueError(
                f"class_names of {where} differ from those of model {rows[0][0]!r}: every model must list "
                "the same classes in the same order"
            )
        rows.append((name, classes, difference, significant, champion))
    return rows


def _save(fig: Figure, path: str | Path) -> Path:
    """The heat map is saved through this (on white), so tests can inspect it."""
    return figures.save(fig, path, facecolor="white")
