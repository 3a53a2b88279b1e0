"""Scoring images with a track's champion (the batch prediction's one task)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from compare_models.config import PredictParams
from compare_models.serving.predict import PredictSummary, describe, predict, table_rows
from compare_models.storage import layout
from tasks._store import open_store


@task(name="predict")
def predict_images(params: PredictParams) -> PredictSummary:
    """Scores every image of the source with the champion and publishes a table of the counts
    per predicted class."""
    settings, store = open_store()
    source = params.source or store.uri(layout.incoming_prefix(params.track))
    summary = predict(
        store,
        track=params.track,
        model=params.model,
        source=source,
        policy=params.folder,
        cache_dir=settings.cache_dir,
    )
    logger = get_run_logger()
    logger.info(describe(summary))
    for skipped in summary.skipped_files[:20]:
        logger.warning("skipped %s: %s", skipped.key[:200], skipped.reason)
    create_table_artifact(
        table_rows(summary),
        key="compare-models-predictions",
        description=describe(summary),
    )
    return summary
