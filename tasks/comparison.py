"""The comparison task: how sure the comparison is, what the run depended on, and (for a
replay) how far it landed from its original run."""

from __future__ import annotations

from prefect import get_run_logger, task

from compare_models.report import diagnostics
from compare_models.runs import fingerprint
from compare_models.runs.record import ComparisonStep, Fingerprint, RunRecord
from compare_models.runs.replay import replay_comparison
from compare_models.statistics.paired import compare_all
from compare_models.statistics.recipes import compare_recipes
from compare_models.statistics.records import Calibration
from tasks._store import open_artifacts


@task(name="compare")
def compare(record: RunRecord) -> ComparisonStep:
    """Paired statistics of the models (`metrics/comparison.json`), the run's fingerprint,
    and with `params.replay_of` the replay's distance from its original (`metrics/replay.json`)."""
    _, artifacts = open_artifacts(record)
    logger, settings = get_run_logger(), record.params.comparison
    y_true, probs = artifacts.test_labels(), artifacts.model_predictions(record.models)
    comparison = compare_all(
        y_true,
        probs,
        class_names=record.dataset.class_names,
        n_resamples=settings.resamples,
        seed=settings.seed,
        confidence=settings.confidence,
        alpha=settings.alpha,
    )
    comparison.calibration = {
        m: Calibration(ece=diagnostics.expected_calibration_error(y_true, p))
        for m, p in probs.items()
    }
    if any(len(r) >= 2 for r in record.replica_metrics.values()):
        comparison.recipes = compare_recipes(
            {
                m: ([t.seed for t in record.replicas[m]], [r.accuracy for r in replicas])
                for m, replicas in record.replica_metrics.items()
            },
            confidence=settings.confidence,
            alpha=settings.alpha,
        )
    artifacts.save_comparison(comparison)
    for verdict in comparison.verdicts:
        logger.info("%s", verdict)
    for pair in comparison.recipes.pairs if comparison.recipes else []:
        logger.info("%s", pair.verdict)
    run_fingerprint = Fingerprint.model_validate(
        fingerprint.run_fingerprint(
            orchestrator=fingerprint.host(),
            params=record.params.model_dump(mode="json"),
            dataset=record.dataset.model_dump(mode="json"),
            trainings={m: t.device for m, t in record.models.items()},
        )
    )
    replay = None
    if record.params.replay_of:
        replay = replay_comparison(
            artifacts, record.params.replay_of, probs, run_fingerprint, settings
        )
        logger.info("replay of %s: %s", record.params.replay_of, replay.summary)
    return ComparisonStep(comparison=comparison, fingerprint=run_fingerprint, replay=replay)
