"""Report and manifest tasks: what a person opens after a run, and the sign it is complete."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from compare_models.config import Settings
from compare_models.gate.data_changes import plot_class_balance
from compare_models.report import trends
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
from tasks._store import open_artifacts


def _replicas(record: RunRecord) -> dict[str, list[dict]] | None:
    """The report's replicas section: per model, each replica's seed and accuracies, marking
    the one the run keeps (`record.models`, the replica best on validation data)."""
    if not record.replicas:
        return None
    section = {}
    for model, trainings in record.replicas.items():
        kept = record.models.get(model)
        metrics = record.replica_metrics.get(model, [])
        section[model] = [
            {
                "replica": t.replica,
                "seed": t.seed,
                "val_accuracy": t.final_val_accuracy,
                "test_accuracy": metrics[i].accuracy if i < len(metrics) else None,
                "kept": kept is not None and t.replica == kept.replica,
            }
            for i, t in enumerate(trainings)
        ]
    return section


def _sections(record: RunRecord, artifacts: RunArtifacts, out_dir: Path) -> Sections:
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
        _record_sections(record),
        disagreement=diagnostic_figures(images, y_true, probs, record.dataset.class_names, out_dir),
        gate_figures=gate_figures,
        data_figures=data_figures,
    )


def _record_sections(record: RunRecord) -> Sections:
    """The sections the record itself holds, as the renderer reads them (no figures)."""
    return Sections(
        comparison=record.comparison.model_dump(mode="json", by_alias=True),
        replay=record.replay.model_dump(mode="json", by_alias=True) if record.replay else None,
        gate={m: d.model_dump(mode="json", by_alias=True) for m, d in record.gate.items()},
        replicas=_replicas(record),
        data=record.data_changes.model_dump(mode="json") if record.data_changes else None,
    )


def _publish_to_ui(
    record: RunRecord,
    results: list[ModelResult],
    files: ReportFiles,
    artifacts: RunArtifacts,
    settings: Settings,
) -> None:
    """What the UI shows on the flow run's Artifacts tab: the summary, the per-class table and
    presigned links to the report and the models."""
    summary = markdown_summary(
        results,
        title=report_title(record),
        run_info=run_info(record),
        sections=_record_sections(record),
    )
    create_markdown_artifact(
        summary,
        key="compare-models-summary",
        description=f"Model comparison of run {record.run_id}",
    )
    create_table_artifact(
        per_class_table_rows(results),
        key="compare-models-per-class",
        description=f"Per-class test metrics of run {record.run_id}",
    )
    seconds = settings.presign_seconds
    expires = f"Presigned link, expires after {seconds // 3600} h"
    store = artifacts.store
    create_link_artifact(
        store.presign(files.files["index.html"], seconds),
        link_text=f"HTML report of {record.run_id}",
        key="compare-models-report",
        description=expires,
    )
    for m in record.params.models:
        create_link_artifact(
            store.presign(record.models[m].model_key, seconds),
            link_text=f"{record.models[m].name}.keras of {record.run_id}",
            key=f"compare-models-model-{m}",
            description=expires,
        )


@task(name="report")
def report(record: RunRecord) -> ReportFiles:
    """Renders and uploads the HTML report; the Prefect artifacts link to it."""
    settings, artifacts = open_artifacts(record)
    results = model_results(
        record, {m: artifacts.metrics(record.models[m].name) for m in record.params.models}
    )
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        out_dir = Path(tmp)
        render_report(
            results,
            out_dir,
            title=report_title(record),
            run_info=run_info(record),
            sections=_sections(record, artifacts, out_dir),
        )
        files = artifacts.save_report(out_dir)
    _publish_to_ui(record, results, files, artifacts, settings)
    return files


@task(name="manifest")
def manifest(record: RunRecord) -> tuple[RunRecord, str]:
    """Writes `manifest.json` last (the run is then complete and immutable) and moves
    `runs/latest.json`. Returns the completed record and the manifest's URI."""
    _, artifacts = open_artifacts(record)
    record = record.model_copy(update={"flow_run_id": str(flow_run.id) if flow_run.id else None})
    complete, manifest_uri = artifacts.save_record(record)
    artifacts.move_latest(manifest_uri)
    artifacts.close()
    return complete, manifest_uri
