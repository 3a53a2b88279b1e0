"""The learning curve the gate judged a model by, on a folder that grows: drawn from the run's
record (`CurveBand` in the gate's noise band), never by calling the gate.

One panel per model whose band came from the curve: the earlier runs (accuracy against their
training images), the fitted curve, the interval for a new run's residual around it (shaded,
`LearningCurve.residual_half_width`), and tonight's run, marked with its decision. The x axis is
the number of training images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.ticker import FuncFormatter, PercentFormatter

from compare_models.report import figures
from compare_models.runs.decision import REGRESSION, CurveBand, GateDecision


def curves_of(decisions: Mapping[str, GateDecision]) -> dict[str, CurveBand]:
    """The models whose band came from a learning curve, with it."""
    return {
        m: d.band.curve
        for m, d in decisions.items()
        if d.band is not None and d.band.curve is not None
    }


def plot_learning_curves(
    decisions: Mapping[str, GateDecision],
    accuracies: Mapping[str, float],
    path: str | Path,
) -> Path:
    """One panel per model of `decisions` judged on a learning curve; `accuracies` are
    tonight's test accuracies per model."""
    curves = curves_of(decisions)
    if not curves:
        return figures.save(
            figures.message_figure("Learning curve: no band came from one.", constrained=True),
            path,
            facecolor="white",
        )
    fig = figures.figure(6.0 * len(curves), 4.5, constrained=True)
    for i, (model, band) in enumerate(curves.items()):
        ax = fig.add_subplot(1, len(curves), i + 1)
        fit = band.fit
        sizes = [p.train_images for p in fit.points]
        grid = np.linspace(min(sizes) * 0.9, max(band.train_images, max(sizes)) * 1.08, 200)
        curve, width = fit(grid), fit.residual_half_width(grid, band.test_images)
        ax.fill_between(grid, curve - width, curve + width, alpha=0.18, color="tab:blue",
                        label=f"{100 * fit.coverage:g}% interval for a new run")  # fmt: skip
        ax.plot(grid, curve, color="tab:blue", label=f"fitted {fit.form} curve")
        ax.scatter(sizes, [p.value for p in fit.points], color="black", s=22, zorder=3,
                   label=f"earlier runs ({len(sizes)})")  # fmt: skip
        tonight = accuracies.get(model)
        if tonight is not None:
            regressed = decisions[model].decision == REGRESSION
            ax.scatter([band.train_images], [figures.finite(tonight, f"{model} accuracy")],
                       marker="X" if regressed else "*", s=140, zorder=4,
                       color="tab:red" if regressed else "goldenrod",
                       label=f"tonight ({decisions[model].decision})")  # fmt: skip
        ax.errorbar([band.train_images], [band.predicted], yerr=[band.residual_points],
                    fmt="none", ecolor="tab:blue", capsize=4)  # fmt: skip
        ax.set_title(f"{model}: accuracy against training images", fontsize=10)
        ax.set_xlabel("training images")
        ax.set_ylabel("test accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    return figures.save(fig, path, facecolor="white")


def caption(decisions: Mapping[str, GateDecision]) -> str:
    """What the figure shows, with each curve's parameters and tonight's prediction."""
    parts = [
        f"{m}: {band.fit.describe()}; at {band.train_images:,} training images it predicts "
        f"{100 * band.predicted:.2f}% ± {100 * band.residual_points:.2f} points"
        for m, band in curves_of(decisions).items()
    ]
    return (
        "Learning curve: test accuracy against training images on the growing folder, the curve "
        "fitted to the recipe's earlier runs and the interval a new run's accuracy falls in; "
        + "; ".join(parts)
    )
