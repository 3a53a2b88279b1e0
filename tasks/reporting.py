"""Report and manifest tasks: what a person opens after a run, and the sign it is complete."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from compare_models.config import Settings
from compare_models.report.assemble import WrittenReport, write_report
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.record import ReportFiles, RunRecord
from tasks._store import open_artifacts


def _publish_to_ui(
    record: RunRecord, report: WrittenReport, artifacts: RunArtifacts, settings: Settings
) -> None:
    """What the UI shows on the flow run's Artifacts tab: the summary, the per-class table and
    presigned links to the report and the models."""
    create_markdown_artifact(
        report.summary,
        key="compare-models-summary",
        description=f"Model comparison of run {record.run_id}",
    )
    create_table_artifact(
        report.per_class_rows,
        key="compare-models-per-class",
        description=f"Per-class test metrics of run {record.run_id}",
    )
    seconds = settings.presign_seconds
    expires = f"Presigned link, expires after {seconds // 3600} h"
    store = artifacts.store
    create_link_artifact(
        store.presign(report.files.files["index.html"], seconds),
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
    written = write_report(record, artifacts)
    _publish_to_ui(record, written, artifacts, settings)
    return written.files


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
