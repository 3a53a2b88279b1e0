"""The comparison step of a run, assembled in one place: the paired statistics of its models
with their calibration, recipes across seeds when there are replicas, the run's fingerprint, and
for a replay how far it landed from its original. The comparison task calls `compare_run`."""

from __future__ import annotations

from compare_models.evaluation.calibration import expected_calibration_error
from compare_models.runs import fingerprint
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.record import ComparisonStep, RunRecord
from compare_models.runs.replay import replay_comparison
from compare_models.statistics.paired import compare_all
from compare_models.statistics.recipes import compare_recipes
from compare_models.statistics.records import Calibration


def compare_run(record: RunRecord, artifacts: RunArtifacts) -> ComparisonStep:
    """Paired statistics of the models (saved as `metrics/comparison.json`), the run's
    fingerprint, and with `params.replay_of` the replay's distance from its original (saved as
    `metrics/replay.json`)."""
    settings = record.params.comparison
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
        m: Calibration(ece=expected_calibration_error(y_true, p)) for m, p in probs.items()
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
    run_fingerprint = fingerprint.run_fingerprint(
        orchestrator=fingerprint.host(),
        params=record.params.model_dump(mode="json"),
        dataset=record.dataset.model_dump(mode="json"),
        trainings={m: t.device for m, t in record.models.items()},
    )
    replay = None
    if record.params.replay_of:
        replay = replay_comparison(
            artifacts, record.params.replay_of, probs, run_fingerprint, settings
        )
    return ComparisonStep(comparison=comparison, fingerprint=run_fingerprint, replay=replay)
