"""How the report writes its numbers and notes: shared by the HTML page (its Jinja2 filters)
and the markdown summary, so both say the same thing the same way."""

from __future__ import annotations

import math
from collections.abc import Mapping

from compare_models.runs.decision import NoiseBand
from compare_models.statistics.records import ComparisonSettings, Interval

SYNTHETIC_BANNER = "SYNTHETIC DATA — not CIFAR-10 results"
BUDGET_BANNER = (
    "STOPPED BY BUDGET — {}; re-run with the same run id to continue from the checkpoints"
)

#: With replicas, what the McNemar verdicts are about (the recipes have their own section).
MODELS_LABEL = "these two trained models"

KEPT_NOTE = "kept: best on validation data"

#: Columns of the human-facing comparison tables (HTML and markdown), with their labels.
TABLE_METRICS: tuple[tuple[str, str], ...] = (
    ("accuracy", "accuracy"),
    ("precision_macro", "precision (macro)"),
    ("recall_macro", "recall (macro)"),
    ("f1_macro", "F1 (macro)"),
    ("roc_auc_macro", "ROC AUC (macro)"),
)


def budget_note(run_info: Mapping[str, object]) -> str | None:
    """The models the run's time budget stopped early, if any ("-" or absent: none)."""
    note = str(run_info.get("stopped_by_budget", "-"))
    return None if note in ("-", "") else note


def is_synthetic(run_info: Mapping[str, object]) -> bool:
    """Synthetic runs must never be mistaken for real CIFAR-10 numbers."""
    return str(run_info.get("data_source_kind", "")).strip().lower() == "synthetic"


def fmt_metric(value: object) -> str:
    """Four decimals for metrics; "n/a" where a metric is undefined (None/NaN)."""
    if value is None:
        return "n/a"
    number = float(value)  # type: ignore[arg-type]
    return "n/a" if math.isnan(number) else f"{number:.4f}"


def fmt_parameters(value: int) -> str:
    """Thousands separators make 23,587,712 readable at a glance."""
    return f"{int(value):,}"


def fmt_seconds(value: float) -> str:
    """Training time to a tenth of a second; more digits would be noise."""
    return f"{float(value):.1f}"


def fmt_p(value: object) -> str:
    """A p-value to three significant digits."""
    return f"{float(value):.3g}"  # type: ignore[arg-type]


def ci(interval: Interval, scale: float = 1.0, digits: int = 4) -> str:
    """ "0.6123 (0.6030 to 0.6218)": an estimate with its interval."""
    est, low, high = (interval.estimate * scale, interval.ci_low * scale, interval.ci_high * scale)
    return f"{est:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def level(settings: ComparisonSettings) -> str:
    """ "95%": the confidence level of a comparison's intervals."""
    return f"{100 * settings.confidence:g}%"


def models_verdict(verdict: str, label_models: bool) -> str:
    """A McNemar verdict, said to be about the two trained models when recipes are compared too."""
    return f"About {MODELS_LABEL}: {verdict}" if label_models else verdict


def band_text(band: NoiseBand | None) -> str:
    """ "±1.20 points (replicas: ...)": a decision's noise band, or "-" where it had none."""
    if not band:
        return "-"
    where = f"({band.source}: {band.detail})"
    if band.source == "off":
        return f"none {where}"
    text = f"±{100 * band.points:.2f} points {where}"
    per_class = list(band.class_points.values())
    if per_class:
        low, high = 100 * min(per_class), 100 * max(per_class)
        spread = f"±{low:.2f}" if low == high else f"±{low:.2f} to ±{high:.2f}"
        text += f"; per class {spread} points"
    return text
