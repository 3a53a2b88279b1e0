"""`train-model`: one model's training as a flow run of its own, in a process of its own.

TensorFlow is not safe for two concurrent `fit`s in one process and never gives GPU
memory back, so each model trains in a separate process. The parent flow starts this
module as ``python -m flows.train_model JOB.json RESULT.json``; the flow run it creates
shows the per-epoch log lines (from a Keras callback) and a progress artifact in the
Prefect UI.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run

from tasks.config import Settings
from tasks.store import ArtifactStore
from tasks.training import TrainingJob, train


@flow(name="train-model", flow_run_name="{job.run_id}-{job.model}", log_prints=False, persist_result=False)
def train_model(job: TrainingJob) -> dict:
    logger = get_run_logger()
    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    progress = create_progress_artifact(0.0, description=f"{job.model}: epochs completed of {job.train.epochs}")

    def on_epoch(done: int, total: int, logs: dict) -> None:
        update_progress_artifact(progress, 100.0 * done / total)

    result = train(job, store, settings.cache_dir, logger, on_epoch=on_epoch,
                   before_publish=lambda: ensure_still_running(flow_run.id, logger))
    return dict(result.__dict__)


class Superseded(RuntimeError):
    """This flow run was declared finished (e.g. Crashed by the zombie-run automation while
    it was in fact alive) and a newer attempt may own the run's keys: do not publish."""


def ensure_still_running(flow_run_id, logger) -> None:
    """Raises Superseded when the server no longer sees this flow run as Running. An API
    that cannot be reached is not a reason to throw away a finished training: then it only warns."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception as exc:
        logger.warning("could not read this flow run's state before publishing (%s); publishing anyway", exc)
        return
    if state is not None and not state.is_running():
        raise Superseded(f"this flow run is {state.name} on the server ({state.message or 'no message'}); a newer "
                         "attempt may be training this model, so this one publishes nothing")


def main(argv: list[str]) -> int:
    """Subprocess entry point: read the job, run the flow, write the result (or the error)."""
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = TrainingJob.model_validate_json(job_path.read_text())
    try:
        result = train_model(job)
    except BaseException as exc:  # report any failure to the parent, then exit non-zero
        result_path.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}))
        return 1
    result_path.write_text(json.dumps({"result": result}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
