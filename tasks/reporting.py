"""Report and manifest tasks: what a person opens after a run, and the sign it is complete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from compare_models import history
from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef
from compare_models.publish import (
    build_manifest,
    model_results,
    move_latest,
    publish_report,
    report_title,
    run_info,
    run_summary,
    write_manifest,
)
from compare_models.report import Sections, markdown_summary, per_class_table_rows
from compare_models.run_comparison import diagnostic_figures, load_test_split, stored_predictions
from tasks._store import open_store


@task(name="report")
def report(
    run_id: str,
    params: RunParams,
    dataset: DatasetRef,
    trained: dict[str, dict],
    metrics: dict[str, dict],
    compared: dict[str, Any],
    decisions: dict[str, dict],
) -> dict[str, str]:
    """Renders and uploads the HTML report; the Prefect artifacts link to it. Returns {file: key}."""
    settings, store = open_store()
    results = model_results(params, trained, metrics)
    title, info = report_title(run_id, dataset), run_info(run_id, params, dataset, trained)
    images, y_true = load_test_split(store, dataset, settings.cache_dir)
    probs = stored_predictions(store, trained)
    current = {
        "run_id": run_id,
        "metrics": metrics,
        "comparison": compared["comparison"],
        "gate": decisions,
    }

    def sections(out_dir: Path) -> Sections:
        gate_figures = (
            history.champion_figures(
                history.completed_manifests(store),
                track=params.gate.track,
                dataset=dataset.model_dump(),
                current=current,
                last=params.gate.trend_runs,
                decisions=decisions,
                out_dir=out_dir,
            )
            if decisions
            else []
        )
        return Sections(
            comparison=compared["comparison"],
            replay=compared["replay"],
            gate=decisions,
            disagreement=diagnostic_figures(images, y_true, probs, dataset.class_names, out_dir),
            gate_figures=gate_figures,
        )

    keys = publish_report(store, run_id, results, title=title, run_info=info, sections=sections)

    # What the UI shows on the flow run's Artifacts tab.
    summary = markdown_summary(
        results,
        title=title,
        run_info=info,
        sections=Sections(
            comparison=compared["comparison"], replay=compared["replay"], gate=decisions
        ),
    )
    create_markdown_artifact(
        summary, key="compare-models-summary", description=f"Model comparison of run {run_id}"
    )
    create_table_artifact(
        per_class_table_rows(results),
        key="compare-models-per-class",
        description=f"Per-class test metrics of run {run_id}",
    )
    seconds = settings.presign_seconds
    expires = f"Presigned link, expires after {seconds // 3600} h"
    create_link_artifact(
        store.presign(keys["index.html"], seconds),
        link_text=f"HTML report of {run_id}",
        key="compare-models-report",
        description=expires,
    )
    for m in params.models:
        create_link_artifact(
            store.presign(trained[m]["model_key"], seconds),
            link_text=f"{m}.keras of {run_id}",
            key=f"compare-models-model-{m}",
            description=expires,
        )
    return keys


@task(name="manifest")
def manifest(
    run_id: str,
    params: RunParams,
    dataset: DatasetRef,
    trained: dict[str, dict],
    metrics: dict[str, dict],
    compared: dict[str, Any],
    decisions: dict[str, dict],
    report_keys: dict[str, str],
    weights_key: str | None,
) -> dict[str, Any]:
    """Writes `manifest.json` last (the run is then complete and immutable) and moves `runs/latest.json`."""
    _, store = open_store()
    body = build_manifest(
        flow_run_id=str(flow_run.id) if flow_run.id else None,
        params=params,
        dataset=dataset,
        weights_key=weights_key,
        trained=trained,
        metrics=metrics,
        report_uri=store.uri(report_keys["index.html"]),
        report_files=report_keys,
        extra={**compared, "gate": decisions},
    )
    manifest_uri = write_manifest(store, run_id, body)
    move_latest(store, run_id, manifest_uri)
    return run_summary(store, run_id, body, manifest_uri, dataset)
