"""Training one model: plain Keras `fit` with callbacks around it. No Prefect in here.

This module imports Keras at the top, on the backend KERAS_BACKEND names (TensorFlow by
default, or JAX: `compare_models.training.backend`): only training processes import it (the parent
flow uses the Keras-free `compare_models.training.jobs`). One call of `train` trains one
model (one replica of it) in the current process and publishes, under the run prefix (see
`layout`; `<name>` is the job's `name`: the model's, or `<model>.r<k>` for replica k >= 1):

    runs/<run>/models/<name>.keras              the trained model (Keras format)
    runs/<run>/training/<name>/predictions.npz  test-set probabilities for evaluation
    runs/<run>/training/<name>/history.json     history + result, written last
    runs/<run>/checkpoints/<name>/...           per-epoch checkpoint, removed on success

Everything around `fit` is a Keras callback (`compare_models.training.callbacks`, one per
module): the epoch log, the NaN guard, the S3 checkpoints, the time budget and the drills
(`compare_models.training.drills`, put in place by their one hook, `callbacks.drill.rig`).
Publishing the finished model is `compare_models.training.publish`.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare_models.training import backend

backend.prepare_environment()  # before Keras starts its backend (threads, GPU memory)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from compare_models.config import TrainingRuntime
from compare_models.data.dataset import read_split
from compare_models.data.shard_windows import WindowedShardReader
from compare_models.device import available_cpus
from compare_models.models import registry
from compare_models.models.networks import compile_model, learning_rate_schedule
from compare_models.models.weights import local_weights
from compare_models.runs import fingerprint
from compare_models.storage import layout
from compare_models.storage.errors import StoreUnavailable
from compare_models.storage.store import ArtifactStore
from compare_models.tracking.live import TrainingLog, training_log
from compare_models.training.backend import configure_device
from compare_models.training.batches import OrderedBatches, training_input
from compare_models.training.callbacks import drill
from compare_models.training.callbacks.budget_stop import BudgetStop
from compare_models.training.callbacks.epoch_logger import EpochLogger
from compare_models.training.callbacks.mlflow_epochs import MlflowEpochs
from compare_models.training.callbacks.nan_guard import FailOnNaN
from compare_models.training.callbacks.s3_checkpoint import S3Checkpoint
from compare_models.training.jobs import (
    Logger,
    TrainingDiverged,
    TrainingJob,
    TrainingResult,
    check_recipe,
    publish_result,
    stored_result,
    threads_from_share,
)
from compare_models.training.publish import publish_model, refuse_diverged

# ── device set-up ──────────────────────────────────────────────────────────────


def default_threads(share: float | None = None) -> int:
    """This process's share of the CPUs it may use (`device.available_cpus`: the cgroup CPU
    quota of a container / Kubernetes limit, the affinity mask, the host's cores, whichever is
    smallest). A worker running N trainings at once sets COMPARE_MODELS_WORKER_SLOTS=N (the
    same as its --limit): there a job's `share` of the cores (`TrainingJob.cpu_share`: a run's
    trainings split the cores by model cost) decides, else an even split between the slots. A
    worker with one slot (a Kubernetes pod per training) gives its one training every core."""
    slots = max(1, int(os.environ.get("COMPARE_MODELS_WORKER_SLOTS", "1")))
    if share is not None and slots > 1:
        return threads_from_share(share, available_cpus())
    return max(1, available_cpus() // slots)


def peak_rss_mb() -> float:
    """Peak resident memory of this process's own program, MiB: Linux's VmHWM. Not
    ru_maxrss, which Linux carries over from the parent at fork and keeps across exec, so a
    training started by a large process reported that process's peak. Elsewhere ru_maxrss (KiB
    on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ── training ───────────────────────────────────────────────────────────────────


@dataclass
class _Fitted:
    model: keras.Model
    history: dict[str, list[float]]
    resumed_from: int
    seconds: float
    started_at: float
    nan_at: tuple[int, int] | None

    @property
    def diverged(self) -> bool:
        """The loss went NaN/inf, or the history has no finite loss."""
        return self.nan_at is not None or not all(
            math.isfinite(v) for v in self.history.get("loss", [math.nan])
        )


def build_model(
    job: TrainingJob,
    store: ArtifactStore,
    cache_dir: Path,
    n_train: int,
    runtime: TrainingRuntime | None = None,
) -> keras.Model:
    """The model to fit, freshly built and compiled (a checkpoint's state is restored into it
    by `S3Checkpoint` when `fit` starts), with the runtime's XLA and steps per execution."""
    runtime = runtime or TrainingRuntime()
    params = job.train
    spec = registry.get(job.model)
    weights = local_weights(job.weights_key, store, cache_dir) if spec.takes_weights else None
    steps = params.epochs * math.ceil(n_train / params.batch_size)
    rate = learning_rate_schedule(params.learning_rate, params.lr_schedule, steps)
    # Seeded here, after every download: boto3's downloads draw from Python's global random
    # state (s3transfer names its temporary files by it), and Keras draws the seeds of the
    # layers' initializers from the same state, so a training that found its data in the local
    # cache and one that downloaded it would otherwise start from other weights.
    keras.utils.set_random_seed(params.seed)
    model = spec.build(
        weights,
        num_classes=len(job.dataset.class_names),
        image_size=job.dataset.image_size,
        input_size=params.input_size,
    )
    return compile_model(
        model,
        params.optimizer,
        rate,
        jit_compile=runtime.jit,
        steps_per_execution=runtime.steps_per_execution,
    )


def fit(
    job: TrainingJob,
    model: keras.Model,
    checkpoint: S3Checkpoint | None,
    data: dict,
    logger: Logger,
    on_epoch,
    runtime: TrainingRuntime | None = None,
    drills: list[keras.callbacks.Callback] | None = None,
    tracking: TrainingLog | None = None,
) -> _Fitted:
    """`model.fit` with the callbacks: logging, NaN guard, checkpoints, the time budget and last
    the `drills`' (`callbacks.drill.rig`); from the epoch after `checkpoint`'s last, when it
    restores one."""
    params = job.train
    done = checkpoint.load() if checkpoint is not None else 0
    (x_train, y_train), validation = data["train"], data["val"]
    nan_guard = FailOnNaN()
    callbacks: list[keras.callbacks.Callback] = [
        nan_guard,
        EpochLogger(logger, job.label, params.epochs, len(y_train), on_epoch),
    ]
    if tracking is not None:
        callbacks.append(MlflowEpochs(tracking))
    if checkpoint is not None:
        callbacks.append(checkpoint)
    if job.deadline is not None:
        callbacks.append(BudgetStop(job.deadline, logger, job.label, params.epochs))
    callbacks.extend(drills or [])
    started, started_at = time.perf_counter(), time.time()
    fitted = model.fit(
        training_input(
            x_train,
            y_train,
            params,
            first_epoch=done,
            workers=(runtime or TrainingRuntime()).input_workers,
        ),
        validation_data=validation
        if isinstance(validation[0], np.ndarray)
        else OrderedBatches(*validation, batch_size=params.batch_size),
        epochs=params.epochs,
        # The batches shuffle themselves, by (seed, epoch). Keras' own shuffle of a PyDataset
        # would also reorder its batches by a draw from the process's global random state, so
        # a resumed training (whose state has drawn less) saw them in another order.
        shuffle=False,
        initial_epoch=done,  # what the checkpoint's `on_train_begin` sets too
        callbacks=callbacks,
        verbose=0,
    )
    history = (
        checkpoint.history
        if checkpoint is not None
        else {k: [float(v) for v in vs] for k, vs in fitted.history.items()}
    )
    return _Fitted(
        model, history, done, time.perf_counter() - started, started_at, nan_guard.nan_at
    )


def input_path(x) -> str:
    """How a training reads a split, as its record says: whole in memory, from its shards in
    the local cache, or a window of shards at a time (a split larger than the cache)."""
    if isinstance(x, np.ndarray):
        return "memory"
    return "shard windows" if isinstance(x, WindowedShardReader) else "shards"


def _resume_hint(job: TrainingJob, checkpoint: S3Checkpoint | None) -> str:
    """How to continue a training that the store's outage stopped, and from where."""
    newest = checkpoint.uploader.uploaded if checkpoint is not None else None
    where = (
        f"the newest checkpoint that reached S3 is epoch {newest.epoch} of {job.train.epochs}"
        if newest
        else "no checkpoint of this attempt reached S3"
    )
    return (
        f"Nothing of this training was published; {where}. Once the store answers again, re-run "
        f"with the same run id to resume (`compare-models run --run-id {job.run_id}` with the run's "
        f"other parameters, or the deployment with params.run_id={job.run_id}); a longer "
        "execution.store_outage_minutes waits longer"
    )


def train(
    job: TrainingJob,
    store: ArtifactStore,
    cache_dir: Path,
    logger: Logger,
    *,
    allow_cpu: bool = False,
    on_epoch=None,
    before_publish: Callable[[], None] | None = None,
) -> TrainingResult:
    """Train `job.model` on the prepared data and publish model, predictions and history
    under the training's name (`job.name`: one per replica).

    `allow_cpu` (the training process's `Settings.allow_gpu_less_training`) lets a training
    that must have a GPU (the GPU pool's) train on the CPU when it sees none (`configure_device`).

    `before_publish()`, when given, runs after `fit` and may raise to stop this attempt
    from publishing (the flow uses it to check that its run was not declared dead and
    superseded meanwhile).
    """
    done_before = stored_result(store, job.run_id, job.name)
    if done_before is not None:
        check_recipe(job, done_before.recipe, "a finished model")
        if not done_before.stopped_by_budget:
            logger.info(
                "%s: already trained in an earlier attempt of run %s; reusing it",
                job.label,
                job.run_id,
            )
            return done_before
        logger.info(
            "%s: %s in an earlier run; continuing from its checkpoint",
            job.label,
            done_before.budget_note,
        )
    # The device, how it computes, and this process's code, libraries and machine: the run's
    # fingerprint.
    runtime = TrainingRuntime()
    device = {
        **configure_device(
            job.threads or default_threads(job.cpu_share),
            allow_cpu=allow_cpu,
            runtime=runtime,
            cache_dir=cache_dir,
        ),
        "jit_compile": runtime.jit_compile,
        "steps_per_execution": runtime.steps_per_execution,
        "input_workers": runtime.input_workers,
        "host": fingerprint.host(),
    }
    data = {
        split: read_split(job.dataset, split, store, cache_dir, runtime.in_memory_mib)
        for split in ("train", "val", "test")
    }
    device["input"] = {split: input_path(x) for split, (x, _) in data.items()}
    drills = drill.rig(job, data, logger)  # the one hook: none in normal operation
    n_train = len(data["train"][1])
    # before `build_model` seeds Keras: nothing MLflow's client draws can change the weights
    tracking = training_log(track=job.track, run_id=job.run_id, training=job.name)

    with tempfile.TemporaryDirectory(prefix=f"train-{job.name}-") as tmp:
        workdir = Path(tmp)
        model = build_model(job, store, cache_dir, n_train, runtime)
        checkpoint = S3Checkpoint(store, job, workdir, logger) if job.checkpoint else None
        needed = True  # whether the checkpoint still matters when this attempt ends
        try:
            if checkpoint is not None:
                checkpoint.set_model(model)  # so that `load` checks the checkpoint fits this model
                checkpoint.load()  # ahead of `fit`, whose input depends on the epoch it resumes from
            logger.info(
                "%s: %s parameters, %s",
                job.label,
                f"{model.count_params():,}",
                {k: v for k, v in device.items() if k != "host"},
            )
            fitted = fit(job, model, checkpoint, data, logger, on_epoch, runtime, drills, tracking)
            if before_publish is not None:
                before_publish()
            if (
                fitted.diverged
                or publish_model(job, fitted.model, data["test"][0], store, workdir, logger) is None
            ):
                refuse_diverged(job, fitted.nan_at, store, logger)
            result = _result(job, fitted, n_train, int(model.count_params()), device)
            publish_result(store, result)
            if tracking is not None:
                tracking.end("FINISHED")
                tracking = None
            needed = checkpoint is not None and not checkpoint.completed
        except TrainingDiverged:
            needed = False  # no place to resume from (`refuse_diverged` removed it)
            raise
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"{job.label}: {exc}. {_resume_hint(job, checkpoint)}") from None
        finally:
            if tracking is not None:  # this attempt failed (a retry marks it running again)
                tracking.end("FAILED")
            if checkpoint is not None:
                checkpoint.close(needed=needed)
    if checkpoint is not None and checkpoint.completed:
        checkpoint.prune()  # published: no longer needed (a budget-stopped model keeps its own)
    return result


def _result(
    job: TrainingJob, fitted: _Fitted, n_train: int, parameters: int, device: dict[str, Any]
) -> TrainingResult:
    """What the training published, for `history.json`."""
    done = fitted.resumed_from
    epochs_done = len(fitted.history.get("loss", []))
    epochs_run = epochs_done - done
    return TrainingResult(
        model=job.model,
        replica=job.replica,
        seed=job.train.seed,
        model_key=layout.model_key(job.run_id, job.name),
        history_key=layout.history_key(job.run_id, job.name),
        predictions_key=layout.predictions_key(job.run_id, job.name),
        history=fitted.history,
        epochs=epochs_done,
        resumed_from_epoch=done,
        fit_seconds=fitted.seconds,
        fit_started_at=fitted.started_at,
        train_images_per_second=epochs_run * n_train / fitted.seconds if epochs_run else 0.0,
        parameters=parameters,
        peak_rss_mb=peak_rss_mb(),
        device=device,
        recipe=job.recipe(),
        planned_epochs=job.train.epochs,
        stopped_by_budget=epochs_done < job.train.epochs,
    )
