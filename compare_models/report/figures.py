"""Figures without pyplot: a matplotlib ``Figure`` on its own Agg canvas, written as a PNG.

Shared by the report's figure modules (:mod:`compare_models.report.diagnostics`,
:mod:`compare_models.report.trends`). Nothing is registered in pyplot's global figure list, so no
figure can be left open, the process-wide backend is untouched (no ``matplotlib.use``) and
drawing is safe from worker threads; :mod:`compare_models.report.diagnostics` says more.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100


def figure(width: float, height: float, *, constrained: bool = False) -> Figure:
    """A `width` x `height` inch figure at `DPI` on its own Agg canvas (with matplotlib's
    constrained layout when `constrained`)."""
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def message_figure(message: str, *, constrained: bool = False) -> Figure:
    """A small figure that only says `message`: what a plot draws when there is nothing to plot."""
    fig = figure(6.0, 1.5, constrained=constrained)
    fig.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    return fig


def save(fig: Figure, path: str | Path, *, facecolor: str | None = None) -> Path:
    """Write `fig` as a PNG at `DPI` to `path`, creating its folder (on a `facecolor` background
    when given, else the figure's own); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    background = {} if facecolor is None else {"facecolor": facecolor}
    fig.savefig(out, format="png", dpi=DPI, **background)
    return out


def finite(value: Any, what: str) -> float:
    """`value` as a float, refusing what is not a finite number (figures draw untrusted records)."""
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        raise ValueError(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be finite, got {number!r}")
    return number
