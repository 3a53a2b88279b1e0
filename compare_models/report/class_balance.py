"""The data section's figure: each class's images per split of the run's dataset version
(drawn by the report, never the gate), on `report.figures`' canvas and DPI like every figure."""

from __future__ import annotations

from pathlib import Path

from compare_models.report import figures
from compare_models.runs.record import DataChanges


def plot_class_balance(changes: DataChanges, path: Path) -> Path:
    """A stacked bar chart of each class's images per split."""
    classes = list(changes.counts)
    fig = figures.figure(max(5.0, 0.6 * len(classes) + 2), 3.5)
    ax = fig.subplots()
    bottom = [0] * len(classes)
    for split in ("train", "val", "test"):
        values = [changes.counts[c].get(split, 0) for c in classes]
        ax.bar(classes, values, bottom=bottom, label=split)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_ylabel("images")
    ax.set_title(f"Class balance, version {changes.version_id[:12]}")
    ax.legend()
    ax.tick_params(axis="x", rotation=45 if len(classes) > 6 else 0)
    fig.tight_layout()
    return figures.save(fig, path)
