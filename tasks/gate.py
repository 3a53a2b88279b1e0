"""The champion gate and the regression alert: each new model judged against the model in
use, and a person told when one regresses."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import PurePosixPath

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import ValidationError

from compare_models.events import CHAMPION_PROMOTED, MODEL_REGRESSED, ModelRegressed
from compare_models.gate import champions, noise_band
from compare_models.gate.publishing import hand_over
from compare_models.gate.rescoring import request_for, rescore_in_own_process
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.champion_record import ChampionEntry
from compare_models.runs.decision import ExportNote, GateDecision, TestImages
from compare_models.runs.record import RunRecord
from tasks._store import open_artifacts

#: How long re-scoring one champion may take (ResNet50 on 10,000 images on a slow CPU: minutes).
RESCORE_TIMEOUT_S = 3600


class RegressionFound(RuntimeError):
    """A model regressed and the run's gate policy says to fail (the run is still published)."""


@task(name="gate")
def gate(record: RunRecord) -> dict[str, GateDecision]:
    """Judges each model against its champion on the run's track; promotes where the policy says so."""
    policy = record.params.gate
    if not policy.enabled:
        return {}
    _, artifacts = open_artifacts(record)
    logger = get_run_logger()
    probs = artifacts.model_predictions(record.models)
    judge = champions.Judge(
        y_true=artifacts.test_labels(),
        class_names=record.dataset.class_names,
        policy=policy,
        comparison=record.params.comparison,
        predictions=artifacts.predictions,
    )
    decisions = {}
    judge = dataclasses.replace(
        judge,
        rescore=_rescorer(record, artifacts),
        test_images=TestImages(
            count=len(judge.y_true),
            test_indices_sha256=record.dataset.test_indices_sha256,
            version_id=record.dataset.version_id,
        ),
    )
    for model in record.params.models:
        challenger = champions.Challenger(
            run_id=record.run_id,
            model=model,
            entry=champions.entry_for(record, model, reason="", by="compare-models gate"),
            probs=probs[model],
            hold=record.models[model].budget_note,
            band=noise_band.band_for(
                record, model, artifacts.completed_runs(), probs=probs[model], y_true=judge.y_true
            ),
        )
        decision = decisions[model] = champions.gate(artifacts.store, challenger, judge)
        log = logger.warning if decision.decision == champions.REGRESSION else logger.info
        log(
            "%s vs champion (track %s): %s: %s",
            model,
            policy.track,
            decision.decision,
            decision.reason,
        )
    create_markdown_artifact(
        champions.markdown(decisions, track=policy.track),
        key="compare-models-gate",
        description=f"Run {record.run_id} against the champions of track {policy.track}",
    )
    return decisions


def _rescorer(record: RunRecord, artifacts: RunArtifacts) -> Callable[[ChampionEntry], str]:
    """Re-scores a champion entry's model on this run's test images, in a process of its own
    (the parent never loads TensorFlow); a retried gate finds the predictions stored already."""
    store, logger = artifacts.store, get_run_logger()

    def rescore(entry: ChampionEntry) -> str:
        model_key = entry.model_key
        try:
            request = request_for(
                record.run_id,
                entry.run_id,
                PurePosixPath(model_key).stem,
                model_key,
                record.dataset,
                threads=os.cpu_count() or 1,
                store_outage_minutes=record.params.execution.store_outage_minutes,
            )
        except ValidationError:
            raise champions.RescoreFailed(
                f"its model key {model_key[:200]!r} is not a model of a run"
            ) from None
        if store.exists(request.out_key):
            return request.out_key
        if not store.exists(model_key):
            raise champions.RescoreFailed(f"its model {store.uri(model_key)} is no longer stored")
        logger.info(
            "re-scoring champion %s (run %s) on this run's %s test images",
            PurePosixPath(model_key).stem,
            entry.run_id,
            f"{record.dataset.sizes.get('test', 0):,}",
        )
        rescored = rescore_in_own_process(request, timeout=RESCORE_TIMEOUT_S)
        logger.info("champion re-scored: %s", rescored.model_dump_json()[-300:])
        return request.out_key

    return rescore


@task(name="hand over champions")
def hand_over_champions(record: RunRecord) -> dict[str, GateDecision]:
    """For each model this run made its track's champion: its export published as the track's
    next served version (`gate.export`), then `compare-models.champion.promoted` emitted. A
    failed export is logged and noted in the decision, and the champion stays
    (`compare-models export RUN_ID --model M` publishes it later)."""
    promoted = [
        m for m, d in record.gate.items() if d.decision in (champions.FIRST, champions.PROMOTED)
    ]
    if not promoted:
        return record.gate
    _, artifacts = open_artifacts(record)
    logger, decisions = get_run_logger(), dict(record.gate)
    for model in promoted:
        decision = decisions[model]
        handed = hand_over(
            artifacts.store,
            track=record.track,
            entry=champions.entry_for(
                record, model, reason=decision.reason, by="compare-models gate"
            ),
            previous_run_id=decision.champion_run_id,
            how="gate",
            record=record,
            decision=decision,
            evaluation=artifacts.metrics(model),
            threads=os.cpu_count() or 1,
        )
        result = handed.result
        note = ExportNote(
            version=result.version if result else None,
            prefix=artifacts.store.uri(result.prefix) if result else None,
            checks=[c.describe() for c in result.checks] if result else [],
            error=handed.error,
        )
        if note.error:
            logger.error("%s: the champion's export was not published: %s", model, note.error)
        elif result is not None:
            logger.info(
                "%s: published as version %d of %s (%s)",
                model, note.version, note.prefix, "; ".join(note.checks),
            )  # fmt: skip
        logger.info("%s: %s emitted", model, CHAMPION_PROMOTED.name)
        decisions[model] = decision.model_copy(update={"export": note})
    return decisions


@task(name="alert")
def alert(record: RunRecord, manifest_uri: str) -> list[str]:
    """Emits `compare-models.model.regressed` for each regression (an automation turns it into a
    notification); with `gate.fail_on_regression`, fails the flow run afterwards."""
    run_id, track = record.run_id, record.track
    regressed = [m for m, d in record.gate.items() if d.decision == champions.REGRESSION]
    for model in regressed:
        decision = record.gate[model]
        pair = decision.comparison
        MODEL_REGRESSED.emit(
            ModelRegressed(
                run_id=run_id,
                model=model,
                track=track,
                reason=decision.reason,
                champion_run_id=decision.champion_run_id,
                manifest=manifest_uri,
                accuracy_difference=pair.difference.accuracy if pair else None,
                mcnemar_pvalue=pair.mcnemar.pvalue if pair else None,
                worse_classes=pair.worse_classes if pair else [],
            )
        )
        get_run_logger().warning("regression of %s emitted as %s", model, MODEL_REGRESSED.name)
    if regressed and record.params.gate.fail_on_regression:
        raise RegressionFound(
            f"regression of {', '.join(regressed)} against the champion (track {track}); the "
            f"run is published ({manifest_uri}); gate.fail_on_regression is set"
        )
    return regressed
