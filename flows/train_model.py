"""`train-model`: one model's training as a flow run of its own, in a process of its own.

TensorFlow is not safe for two concurrent `fit`s in one process and never gives GPU
memory back, so each model trains in a separate process: a `train-model/gpu` flow run on
the GPU work pool, or ``python -m flows.train_model JOB.json RESULT.json`` started by the
parent (the `local` trainer). The flow run shows the per-epoch log lines (from a Keras
callback) and a progress artifact in the Prefect UI.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run

from compare_models.config import Settings
from compare_models.device import BACKEND_ENV, training_backend
from compare_models.models import registry
from compare_models.storage.store import ArtifactStore
from compare_models.training.jobs import TrainingJob, TrainingResult
from tasks.child_runs import ensure_still_running

#: Installed for the parent's evaluation and report, optional for Keras, unused by a training:
#: Keras imports them when present (scikit-learn for its scikit-learn wrapper, matplotlib for
#: its plotting utilities), a noticeable part of every training process's start (see
#: docs/benchmarks.md).
UNUSED_IN_TRAINING = ("sklearn", "matplotlib")


def _in_a_process_of_its_own() -> bool:
    """Whether this process exists only to run this flow: `python -m flows.train_model` (the
    local trainer) or `python -m prefect.engine` (a process worker's flow run)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec is not None and spec.name in ("flows.train_model", "prefect.engine")


@contextlib.contextmanager
def keras_without_unused_imports():
    """While Keras loads in a training's own process, importing UNUSED_IN_TRAINING fails at once
    (Keras catches the ImportError); afterwards they import as usual (a plugin model may need
    them). Nothing changes where they are loaded already or where the process runs other code
    too (a test or a notebook calling the flow)."""
    skipped = (
        [name for name in UNUSED_IN_TRAINING if name not in sys.modules]
        if _in_a_process_of_its_own()
        else []
    )
    for name in skipped:
        sys.modules[name] = None
    try:
        yield
    finally:
        for name in skipped:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


@flow(
    name="train-model",
    flow_run_name="{job.run_id}-{job.name}",
    log_prints=False,
    persist_result=False,
)
def train_model(job: TrainingJob) -> TrainingResult:
    """Train one model (one replica of it) of a run and publish it (model, predictions,
    history) to S3 under the training's name (`job.name`)."""
    # Keras loads here, in the training process, not when the flow is deployed or imported: on
    # the backend KERAS_BACKEND names, else (a machine without a GPU) the model's faster one.
    if "keras" not in sys.modules:
        os.environ[BACKEND_ENV] = training_backend(registry.get(job.model).cpu_backend)
    with keras_without_unused_imports():
        from compare_models.training.fit import train

    logger = get_run_logger()
    settings = Settings()  # once for this training process: the store, the cache, the CPU allowance
    store = ArtifactStore.from_settings(settings, outage_minutes=job.store_outage_minutes)
    store.check()
    progress = create_progress_artifact(
        0.0, description=f"{job.label}: epochs completed of {job.train.epochs}"
    )
    result = train(
        job,
        store,
        settings.cache_dir,
        logger,
        allow_cpu=settings.allow_gpu_less_training,
        on_epoch=lambda done, total, logs: report_progress(progress, 100.0 * done / total, logger),
        before_publish=lambda: ensure_still_running(flow_run.id, logger),
    )
    return result


def report_progress(artifact_id, percent: float, logger) -> None:
    """Updates the progress artifact; a Prefect API that cannot be reached (past the client's
    own retries) costs this update only: the training goes on, and the next epoch's update
    sends the progress so far (it is a total, not an increment)."""
    try:
        update_progress_artifact(artifact_id, percent)
    except Exception as exc:
        logger.warning(
            "progress %.0f%% not sent to the Prefect API (%s); training goes on",
            percent,
            type(exc).__name__,
        )


def die_with_parent() -> None:
    """On Linux, get SIGKILL when the process that started this one dies (a cancelled or killed
    parent flow run), so no training is left orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def main(argv: list[str]) -> int:
    """Subprocess entry point: read the job, run the flow, write the result (or the error)."""
    die_with_parent()
    job_path, result_path = Path(argv[0]), Path(argv[1])
    job = TrainingJob.model_validate_json(job_path.read_text())
    try:
        result = train_model(job)
    except BaseException as exc:  # report any failure to the parent, then exit non-zero
        result_path.write_text(
            json.dumps(
                {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            )
        )
        return 1
    result_path.write_text(json.dumps({"result": result.model_dump(mode="json")}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
