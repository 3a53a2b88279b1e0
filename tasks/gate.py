"""The champion gate and the regression alert: each new model judged against the model in
use, and a person told when one regresses."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from compare_models import champions
from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef
from compare_models.publish import budget_notes, test_labels
from compare_models.run_comparison import stored_predictions
from tasks._store import open_store

REGRESSED_EVENT = "compare-models.model.regressed"


class RegressionFound(RuntimeError):
    """A model regressed and the run's gate policy says to fail (the run is still published)."""


@task(name="gate")
def gate(
    run_id: str,
    params: RunParams,
    dataset: DatasetRef,
    trained: dict[str, dict],
    metrics: dict[str, dict],
    compared: dict[str, Any],
) -> dict[str, dict[str, Any]]:
    """Judges each model against its champion on the run's track; promotes where the policy says so."""
    if not params.gate.enabled:
        return {}
    settings, store = open_store()
    logger = get_run_logger()
    y_true = test_labels(store, dataset, settings.cache_dir)
    probs = stored_predictions(store, trained)
    decisions = {}
    for model in params.models:
        entry = champions.entry_for(
            run_id,
            model,
            trained,
            dataset.model_dump(mode="json"),
            metrics,
            compared["comparison"]["models"],
            reason="",
            by="compare-models gate",
        )
        decisions[model] = champions.gate(
            store,
            track=params.gate.track,
            run_id=run_id,
            model=model,
            entry=entry,
            y_true=y_true,
            probs=probs[model],
            class_names=dataset.class_names,
            policy=params.gate,
            comparison=params.comparison,
            hold=budget_notes(trained).get(model),
        )
        decision = decisions[model]
        log = logger.warning if decision["decision"] == champions.REGRESSION else logger.info
        log(
            "%s vs champion (track %s): %s: %s",
            model,
            params.gate.track,
            decision["decision"],
            decision["reason"],
        )
    create_markdown_artifact(
        champions.markdown(decisions, track=params.gate.track),
        key="compare-models-gate",
        description=f"Run {run_id} against the champions of track {params.gate.track}",
    )
    return decisions


@task(name="alert")
def alert(
    run_id: str, params: RunParams, decisions: dict[str, dict[str, Any]], manifest_uri: str
) -> list[str]:
    """Emits `compare-models.model.regressed` for each regression (an automation turns it into a
    notification); with `gate.fail_on_regression`, fails the flow run afterwards."""
    regressed = [m for m, d in decisions.items() if d["decision"] == champions.REGRESSION]
    for model in regressed:
        decision = decisions[model]
        pair = decision.get("comparison") or {}
        emit_event(
            event=REGRESSED_EVENT,
            resource={
                "prefect.resource.id": f"compare-models.run.{run_id}.{model}",
                "prefect.resource.name": f"{run_id} {model}",
                "compare-models.run-id": run_id,
                "compare-models.model": model,
            },
            related=[
                {
                    "prefect.resource.id": f"compare-models.run.{run_id}",
                    "prefect.resource.role": "run",
                },
                {
                    "prefect.resource.id": f"compare-models.model.{model}",
                    "prefect.resource.role": "model",
                },
            ],
            payload={
                "run_id": run_id,
                "model": model,
                "track": params.gate.track,
                "reason": decision["reason"],
                "champion_run_id": decision["champion_run_id"],
                "manifest": manifest_uri,
                "accuracy_difference": pair.get("difference", {}).get("accuracy"),
                "mcnemar_pvalue": pair.get("mcnemar", {}).get("pvalue"),
                "worse_classes": [
                    c["class"]
                    for c in pair.get("per_class", [])
                    if c["significant"] and c["difference"] < 0
                ],
            },
        )
        get_run_logger().warning("regression of %s emitted as %s", model, REGRESSED_EVENT)
    if regressed and params.gate.fail_on_regression:
        raise RegressionFound(
            f"regression of {', '.join(regressed)} against the champion (track {params.gate.track}); the "
            f"run is published ({manifest_uri}); gate.fail_on_regression is set"
        )
    return regressed
