"""Assembling a run's report from its record: each model's result, the sections the record
holds (statistics, replay, gate, replicas, data changes), the figures drawn from the stored
predictions and the track's history, rendered into a folder and stored with the run.

`write_report` is what the report task calls; it returns where the report is and what the
Prefect UI shows beside it (the markdown summary and the per-class table).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from compare_models.report import trends
from compare_models.report.class_balance import plot_class_balance
from compare_models.report.data import ReplicaRow
from compare_models.report.diagnostics import diagnostic_figures
from compare_models.report.header import model_results, report_title, run_info
from compare_models.report.render import (
    ModelResult,
    Sections,
    markdown_summary,
    per_class_table_rows,
    render_report,
)
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.record import ReportFiles, RunRecord


@dataclasses.dataclass(frozen=True)
class WrittenReport:
    """A stored report: its files, and what the Prefect UI shows beside it."""

    files: ReportFiles
    summary: str = dataclasses.field(repr=False)
    per_class_rows: list[dict[str, Any]] = dataclasses.field(repr=False)


def replicas_section(record: RunRecord) -> dict[str, list[ReplicaRow]] | None:
    """The report's replicas section: per model, each replica's seed and accuracies, marking
    the one the run keeps (`record.models`, the replica best on validation data)."""
    if not record.replicas:
        return None
    section = {}
    for model, trainings in record.replicas.items():
        kept = record.models.get(model)
        metrics = record.replica_metrics.get(model, [])
        section[model] = [
            ReplicaRow(
                replica=t.replica,
                seed=t.seed,
                val_accuracy=t.final_val_accuracy,
                test_accuracy=metrics[i].accuracy if i < len(metrics) else None,
                kept=kept is not None and t.replica == kept.replica,
            )
            for i, t in enumerate(trainings)
        ]
    return section


def record_sections(record: RunRecord) -> Sections:
    """The sections the record itself holds, as the renderer reads them (no figures)."""
    return Sections(
        comparison=record.comparison,
        replay=record.replay,
        gate=record.gate,
        replicas=replicas_section(record),
        data=record.data_changes,
    )


def sections(record: RunRecord, artifacts: RunArtifacts, out_dir: Path) -> Sections:
    """The report's sections beyond the per-model metrics, their figures drawn into `out_dir`."""
    images, y_true = artifacts.test_split()
    probs = artifacts.model_predictions(record.models)
    gate_figures = (
        trends.champion_figures(
            artifacts.completed_runs(),
            current=record,
            last=record.params.gate.trend_runs,
            out_dir=out_dir,
        )
        if record.gate
        else []
    )
    data_figures = (
        [
            (
                plot_class_balance(record.data_changes, out_dir / "class_balance.png"),
                "Each class's images per split in this run's dataset version",
            )
        ]
        if record.data_changes
        else []
    )
    return dataclasses.replace(
        record_sections(record),
        disagreement=diagnostic_figures(images, y_true, probs, record.dataset.class_names, out_dir),
        gate_figures=gate_figures,
        data_figures=data_figures,
    )


def model_results_of(record: RunRecord, artifacts: RunArtifacts) -> list[ModelResult]:
    """Each model's result, with the full evaluation metrics the run stored."""
    return model_results(
        record, {m: artifacts.metrics(record.models[m].name) for m in record.params.models}
    )


def write_report(record: RunRecord, artifacts: RunArtifacts) -> WrittenReport:
    """Renders the run's HTML report (figures, tables, page) and stores it with the run."""
    results = model_results_of(record, artifacts)
    title, info = report_title(record), run_info(record)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        out_dir = Path(tmp)
        render_report(
            results,
            out_dir,
            title=title,
            run_info=info,
            sections=sections(record, artifacts, out_dir),
        )
        files = artifacts.save_report(out_dir)
    return WrittenReport(
        files=files,
        summary=markdown_summary(
            results, title=title, run_info=info, sections=record_sections(record)
        ),
        per_class_rows=per_class_table_rows(results),
    )
