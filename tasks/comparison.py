"""The comparison task: how sure the comparison is, what the run depended on, and (for a
replay) how far it landed from its original run."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from compare_models import fingerprint
from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef
from compare_models.publish import test_labels
from compare_models.run_comparison import compare_run, replay_comparison, stored_predictions
from tasks._store import open_store


@task(name="compare")
def compare(
    run_id: str, params: RunParams, dataset: DatasetRef, trained: dict[str, dict]
) -> dict[str, Any]:
    """Paired statistics of the models (`metrics/comparison.json`), the run's fingerprint,
    and with `params.replay_of` the replay's distance from its original (`metrics/replay.json`)."""
    settings, store = open_store()
    logger = get_run_logger()
    y_true = test_labels(store, dataset, settings.cache_dir)
    probs = stored_predictions(store, trained)
    comparison = compare_run(store, run_id, y_true, probs, dataset, params.comparison)
    for verdict in comparison["verdicts"]:
        logger.info("%s", verdict)
    run_fingerprint = fingerprint.run_fingerprint(
        orchestrator=fingerprint.host(),
        params=params.model_dump(mode="json"),
        dataset=dataset.model_dump(mode="json"),
        trainings={m: t["device"] for m, t in trained.items()},
    )
    replay = None
    if params.replay_of:
        replay = replay_comparison(
            store,
            params.replay_of,
            run_id,
            y_true,
            probs,
            dataset,
            run_fingerprint,
            params.comparison,
        )
        logger.info("replay of %s: %s", params.replay_of, replay["summary"])
    return {"comparison": comparison, "fingerprint": run_fingerprint, "replay": replay}
