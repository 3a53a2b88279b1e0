"""The comparison task: how sure the comparison is, what the run depended on, and (for a
replay) how far it landed from its original run."""

from __future__ import annotations

from prefect import get_run_logger, task

from compare_models.runs.comparison_step import compare_run
from compare_models.runs.record import ComparisonStep, RunRecord
from tasks._store import open_artifacts


@task(name="compare")
def compare(record: RunRecord) -> ComparisonStep:
    """Paired statistics of the models (`metrics/comparison.json`), the run's fingerprint,
    and with `params.replay_of` the replay's distance from its original (`metrics/replay.json`)."""
    _, artifacts = open_artifacts(record)
    logger = get_run_logger()
    step = compare_run(record, artifacts)
    for verdict in step.comparison.verdicts:
        logger.info("%s", verdict)
    for pair in step.comparison.recipes.pairs if step.comparison.recipes else []:
        logger.info("%s", pair.verdict)
    if step.replay:
        logger.info("replay of %s: %s", record.params.replay_of, step.replay.summary)
    return step
