"""Training one model: plain Keras `fit` with callbacks around it. No Prefect in here.

This module imports Keras at the top: only training processes import it (the parent
flow uses the TensorFlow-free `compare_models.training_jobs`). One call of `train` trains one
model in the current process and publishes, under the run prefix (see `layout`):

    runs/<run>/models/<model>.keras              the trained model (Keras format)
    runs/<run>/training/<model>/predictions.npz  test-set probabilities for evaluation
    runs/<run>/training/<model>/history.json     history + result, written last
    runs/<run>/checkpoints/<model>/...           per-epoch checkpoint, removed on success

Everything around `fit` is a Keras callback: `EpochLogger` (one line per epoch to the
caller's logger, so in a flow run the lines land in Prefect's logs), `FailOnNaN` (remembers
where the loss went bad), `S3Checkpoint` (per-epoch checkpoints a retried training resumes
from) and `FaultAfterEpoch` (fault injection for resume drills).
"""

from __future__ import annotations

import logging
import math
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from compare_models import fingerprint, layout, registry
from compare_models.config import Settings, TrainParams
from compare_models.data.dataset import load_split
from compare_models.device import (
    REQUIRE_GPU_ENV,
    available_cpus,
    check_gpu_requirement,
    describe_gpus,
    env_flag,
    gpu_device_nodes,
)
from compare_models.models import compile_model, learning_rate_schedule, load_model
from compare_models.store import ArtifactStore
from compare_models.training_jobs import (
    FAIL_AFTER_EPOCH_ENV,
    TrainingDiverged,
    TrainingJob,
    TrainingResult,
    check_recipe,
    publish_result,
    stored_result,
    threads_from_share,
)
from compare_models.weights import local_weights

Logger = logging.Logger | Any  # a logging.Logger or Prefect's run logger


class InjectedFault(RuntimeError):
    pass


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


def configure_device(
    threads: int, *, require_gpu: bool | None = None, allow_cpu: bool | None = None
) -> dict[str, Any]:
    """Thread pools from our share of the cores; on GPUs memory growth and mixed precision.

    TensorFlow sizes its pools from the host, not from a container's CPU quota, and two
    trainings side by side would each take every core: so we set them explicitly. Must
    run before TensorFlow executes anything.

    A training on the GPU pool (`require_gpu`, default: COMPARE_MODELS_REQUIRE_GPU, set by the
    train-model/gpu deployment) that sees no GPU raises `device.NoGPUError` unless CPU training
    is allowed (`allow_cpu`, default: Settings.allow_gpu_less_training). Returns what is used:
    {"device": "gpu" | "cpu", "gpus": TF device names, "gpu_names": e.g. ["NVIDIA H100 80GB HBM3"],
    "threads", "precision"}, stored in the training's result and the run's manifest.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if require_gpu is None:
        require_gpu = env_flag(REQUIRE_GPU_ENV)
    if allow_cpu is None:
        allow_cpu = (
            Settings().allow_gpu_less_training
        )  # COMPARE_MODELS_ALLOW_CPU_TRAINING (environment or .env)
    check_gpu_requirement(
        gpus, required=require_gpu, allowed_cpu=allow_cpu, device_nodes=gpu_device_nodes()
    )
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    # On CPU fp32 is fastest here (bf16 gave 1.00x, XLA was 13x slower: see DESIGN.md).
    policy = os.environ.get("COMPARE_MODELS_PRECISION") or ("mixed_float16" if gpus else "float32")
    keras.mixed_precision.set_global_policy(policy)
    return {
        "device": "gpu" if gpus else "cpu",
        "gpus": [g.name for g in gpus],
        "gpu_names": describe_gpus(tf, gpus),
        "threads": threads,
        "precision": policy,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


# ── callbacks ──────────────────────────────────────────────────────────────────


class EpochLogger(keras.callbacks.Callback):
    """Logs one line per epoch (metrics, seconds, images/s) and reports progress."""

    def __init__(
        self,
        logger: Logger,
        model_name: str,
        epochs: int,
        n_train: int,
        on_epoch: Callable[[int, int, dict], None] | None = None,
    ):
        super().__init__()
        self.logger, self.model_name, self.epochs, self.n_train, self.on_epoch = (
            logger,
            model_name,
            epochs,
            n_train,
            on_epoch,
        )
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        logs = {k: float(v) for k, v in (logs or {}).items()}
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))
        self.logger.info(
            "%s epoch %d/%d %s (%.1f s, %.0f images/s)",
            self.model_name,
            epoch + 1,
            self.epochs,
            shown,
            seconds,
            self.n_train / seconds,
        )
        if self.on_epoch is not None:
            self.on_epoch(epoch + 1, self.epochs, logs)


class FailOnNaN(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN` that remembers where the loss went bad, so we can fail loudly."""

    def __init__(self):
        super().__init__()
        self.nan_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.nan_at is None:
            self.nan_at = (self._epoch + 1, batch + 1)
        super().on_batch_end(batch, logs)


class S3Checkpoint(keras.callbacks.Callback):
    """Saves model + optimizer state and the history so far to S3 after every epoch.

    The state file is written after the model file, so a checkpoint is never half-made:
    `state.json` always names an epoch whose model file is complete. The final epoch is
    not checkpointed: the finished model is published right after `fit` (a crash in
    between costs that one epoch, like a crash during it). `history` is the caller's
    dict, extended in place with each epoch's logs.
    """

    def __init__(
        self,
        store: ArtifactStore,
        run_id: str,
        model_name: str,
        history: dict[str, list[float]],
        workdir: Path,
        final_epoch: int,
        recipe: str,
    ):
        super().__init__()
        self.store, self.run_id, self.model_name = store, run_id, model_name
        self.history, self.workdir, self.final_epoch, self.recipe = (
            history,
            workdir,
            final_epoch,
            recipe,
        )

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not all(math.isfinite(v) for v in self.history.get("loss", [])):
            return  # never checkpoint a diverged model
        if epoch + 1 >= self.final_epoch:
            return
        path = self.workdir / f"checkpoint-{epoch + 1}.keras"
        key = layout.checkpoint_epoch_key(self.run_id, self.model_name, epoch + 1)
        save_and_upload(self.model, path, self.store, key)
        self.store.put_json(
            {"epoch": epoch + 1, "model_key": key, "history": self.history, "recipe": self.recipe},
            layout.checkpoint_state_key(self.run_id, self.model_name),
            overwrite=True,
        )
        path.unlink(missing_ok=True)
        self.store.delete_prefix(
            layout.checkpoint_epochs_prefix(self.run_id, self.model_name), keep=[key]
        )


class BudgetStop(keras.callbacks.Callback):
    """Stops `fit` at the end of the epoch in which the run's deadline passed (after the
    epoch's checkpoint, which `S3Checkpoint` stored just before: callbacks run in order)."""

    def __init__(self, deadline: float, logger: Logger, model_name: str, epochs: int):
        super().__init__()
        self.deadline, self.logger, self.model_name, self.epochs = (
            deadline,
            logger,
            model_name,
            epochs,
        )
        self.stopped_after: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if time.time() >= self.deadline and epoch + 1 < self.epochs:
            self.stopped_after = epoch + 1
            self.model.stop_training = True
            self.logger.warning(
                "%s: the run's time budget is spent: stopping after epoch %d of %d (checkpoint kept; "
                "re-run with the same run id to continue)",
                self.model_name,
                epoch + 1,
                self.epochs,
            )


class FaultAfterEpoch(keras.callbacks.Callback):
    """Fails the training right after `after_epoch` completed (and was checkpointed)."""

    def __init__(self, after_epoch: int):
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.after_epoch:
            raise InjectedFault(
                f"injected fault after epoch {self.after_epoch} ({FAIL_AFTER_EPOCH_ENV})"
            )


# ── checkpoints and publishing ─────────────────────────────────────────────────


def load_checkpoint(job: TrainingJob, store: ArtifactStore, workdir: Path, logger: Logger):
    """(model, epochs_done, history) from the last checkpoint, or None.

    A checkpoint made from another recipe (data, split, parameters) is refused
    (`RecipeMismatch`); one that cannot be read (corrupt state or model file, a key outside
    its folder) is dropped and the model starts afresh, which the log says.
    """
    state_key = layout.checkpoint_state_key(job.run_id, job.model)
    if not store.exists(state_key):
        return None
    try:
        state = store.get_json(state_key)
        recipe = state["recipe"]
    except (
        Exception
    ) as exc:  # unreadable, or from before recipes: nothing to compare, so nothing to resume
        return _start_afresh(
            job, store, logger, f"its state.json is unreadable ({type(exc).__name__}: {exc})"
        )
    check_recipe(job, recipe, "a checkpoint")
    try:
        epoch = int(state["epoch"])
        if (
            state["model_key"] != layout.checkpoint_epoch_key(job.run_id, job.model, epoch)
            or not 0 < epoch < job.train.epochs
        ):
            raise ValueError(f"state.json names {state['model_key']!r} for epoch {epoch}")
        history = {str(k): [float(x) for x in v] for k, v in state["history"].items()}
        path = store.download(state["model_key"], workdir / "resume.keras")
        return load_model(path), epoch, history
    except (
        Exception
    ) as exc:  # any unreadable checkpoint: start this model afresh rather than fail every retry
        return _start_afresh(job, store, logger, f"{type(exc).__name__}: {exc}")


def _start_afresh(job: TrainingJob, store: ArtifactStore, logger: Logger, why: str) -> None:
    logger.warning(
        "%s: the checkpoint in %s cannot be used (%s); training this model afresh",
        job.model,
        store.uri(layout.checkpoint_prefix(job.run_id, job.model)),
        why,
    )
    prune_checkpoints(store, job.run_id, job.model)
    return None


def save_and_upload(model: keras.Model, path: Path, store: ArtifactStore, key: str) -> str:
    model.save(path)
    return store.upload(path, key, overwrite=True)


def withdraw(store: ArtifactStore, key: str, logger: Logger) -> None:
    """Best-effort removal of an object this attempt uploaded but must not leave behind
    (the run has no manifest, so it never looks complete either way)."""
    try:
        store.delete(key)
    except Exception as exc:  # the original failure matters more than the clean-up's
        logger.warning("could not remove %s: %s", store.uri(key), exc)


def prune_checkpoints(store: ArtifactStore, run_id: str, model_name: str) -> None:
    store.delete_prefix(layout.checkpoint_prefix(run_id, model_name))


# ── training ───────────────────────────────────────────────────────────────────


def training_input(
    x: np.ndarray, y: np.ndarray, params: TrainParams, *, seed: int
) -> tf.data.Dataset:
    """Shuffled batches, with random horizontal flips when `params.augment == "flip"`.

    Augmentation lives in the input pipeline, not in the model, so the saved model is
    exactly the report's architecture.
    """
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(y), seed=seed, reshuffle_each_iteration=True
    )
    data = data.batch(params.batch_size)
    if params.augment == "flip":
        # Sequential on purpose: a parallel map draws the flips in whatever order its threads
        # run, so the same seeds gave different models (measured: probabilities of a replay
        # differed by up to 1e-4). One flip per batch is cheap next to the step it feeds.
        data = data.map(
            lambda images, labels: (tf.image.random_flip_left_right(images, seed=seed), labels)
        )
    return data.prefetch(tf.data.AUTOTUNE)


@dataclass
class _Fitted:
    model: keras.Model
    history: dict[str, list[float]]
    resumed_from: int
    seconds: float
    started_at: float
    nan_at: tuple[int, int] | None


def build_or_resume(
    job: TrainingJob,
    store: ArtifactStore,
    cache_dir: Path,
    workdir: Path,
    n_train: int,
    logger: Logger,
) -> tuple[keras.Model, int, dict[str, list[float]]]:
    """The model to fit: the last checkpoint's if there is one, else a freshly built one."""
    params = job.train
    resumed = load_checkpoint(job, store, workdir, logger) if job.checkpoint else None
    if resumed:
        logger.info(
            "%s: resuming from the checkpoint after epoch %d/%d",
            job.model,
            resumed[1],
            params.epochs,
        )
        return resumed
    spec = registry.get(job.model)
    weights = local_weights(job.weights_key, store, cache_dir) if spec.takes_weights else None
    steps = params.epochs * math.ceil(n_train / params.batch_size)
    rate = learning_rate_schedule(params.learning_rate, params.lr_schedule, steps)
    return compile_model(spec.build(weights), params.optimizer, rate), 0, {}


def fit(
    job: TrainingJob,
    model: keras.Model,
    done: int,
    history: dict[str, list[float]],
    data: dict,
    store: ArtifactStore,
    workdir: Path,
    logger: Logger,
    on_epoch,
) -> _Fitted:
    """`model.fit` from epoch `done` with the callbacks: logging, NaN guard, checkpoints, fault injection."""
    params = job.train
    (x_train, y_train), validation = data["train"], data["val"]
    nan_guard = FailOnNaN()
    callbacks: list[keras.callbacks.Callback] = [
        nan_guard,
        EpochLogger(logger, job.model, params.epochs, len(y_train), on_epoch),
    ]
    if job.checkpoint:
        callbacks.append(
            S3Checkpoint(
                store, job.run_id, job.model, history, workdir, params.epochs, job.recipe()
            )
        )
    if job.deadline is not None:
        callbacks.append(BudgetStop(job.deadline, logger, job.model, params.epochs))
    if os.environ.get(FAIL_AFTER_EPOCH_ENV) and job.attempt == 1:
        callbacks.append(FaultAfterEpoch(int(os.environ[FAIL_AFTER_EPOCH_ENV])))
    started, started_at = time.perf_counter(), time.time()
    fitted = model.fit(
        training_input(x_train, y_train, params, seed=params.seed + done),
        validation_data=validation,
        epochs=params.epochs,
        initial_epoch=done,
        callbacks=callbacks,
        verbose=0,
    )
    if not job.checkpoint:
        history = {k: [float(v) for v in vs] for k, vs in fitted.history.items()}
    return _Fitted(
        model, history, done, time.perf_counter() - started, started_at, nan_guard.nan_at
    )


def _diverged(fitted: _Fitted) -> bool:
    return fitted.nan_at is not None or not all(
        math.isfinite(v) for v in fitted.history.get("loss", [math.nan])
    )


def predict_in_full_batches(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict(x)` with the last batch padded to full size (the padding's outputs dropped).

    Keras traces its predict function for the shape of the first batch and again, with the
    batch dimension relaxed, for a shorter last one (with XLA on a GPU: a second compile);
    padding spares that, for at most one batch of extra compute. Measured here (ResNet50,
    1,000 test images at batch 256 after `fit`, 2 threads, 5 alternating pairs): 4.6 s
    against 5.3 s on average for the first `predict`, with a large spread (3.3-6.0 s).
    """
    batch_size = min(batch_size, len(x)) or 1
    missing = -len(x) % batch_size
    if missing:
        x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), dtype=x.dtype)])
    return model.predict(x, batch_size=batch_size, verbose=0)[: len(x) - missing]


def publish_model(
    job: TrainingJob,
    fitted: _Fitted,
    x_test: np.ndarray,
    store: ArtifactStore,
    workdir: Path,
    logger: Logger,
) -> np.ndarray | None:
    """Uploads the model while the test set is predicted; returns the predictions.

    Saving and uploading (300 MB for ResNet50 with its optimizer state) runs in a thread
    beside `predict`; both only read the weights. If either fails, the model is withdrawn:
    no model is left without its predictions. A diverged model is not published (None).
    """
    if _diverged(fitted):
        return None
    model_key, model_path = layout.model_key(job.run_id, job.model), workdir / f"{job.model}.keras"
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"publish-{job.model}"
        ) as publisher:
            uploaded = publisher.submit(save_and_upload, fitted.model, model_path, store, model_key)
            y_prob = predict_in_full_batches(fitted.model, x_test, max(job.train.batch_size, 256))
            predicted = time.perf_counter() - started
            uploaded.result()
    except BaseException:
        withdraw(store, model_key, logger)
        raise
    logger.info(
        "%s: %d test images predicted in %.1f s, the model (%.0f MB) saved and uploaded beside it: %.1f s in all",
        job.model,
        len(x_test),
        predicted,
        model_path.stat().st_size / 1e6,
        time.perf_counter() - started,
    )
    if not np.isfinite(y_prob).all():
        return None
    np.savez_compressed(workdir / "predictions.npz", y_prob=y_prob.astype(np.float32))
    store.upload(
        workdir / "predictions.npz", layout.predictions_key(job.run_id, job.model), overwrite=True
    )
    return y_prob


def refuse_diverged(
    job: TrainingJob, fitted: _Fitted, store: ArtifactStore, logger: Logger
) -> None:
    """Removes what a diverged training left (model, checkpoints) and raises TrainingDiverged."""
    withdraw(
        store, layout.model_key(job.run_id, job.model), logger
    )  # a model with NaN outputs is not published
    if job.checkpoint:
        prune_checkpoints(
            store, job.run_id, job.model
        )  # a diverged model is no place to resume from
    params = job.train
    where = (
        "at epoch {}, batch {}".format(*fitted.nan_at)
        if fitted.nan_at
        else "(its outputs are NaN/inf)"
    )
    raise TrainingDiverged(
        f"{job.model}: training diverged: the loss or the model became NaN/inf {where} (learning rate "
        f"{params.learning_rate}, optimizer {params.optimizer}). Lower the learning rate; nothing was published."
    )


def train(
    job: TrainingJob,
    store: ArtifactStore,
    cache_dir: Path,
    logger: Logger,
    *,
    on_epoch=None,
    before_publish: Callable[[], None] | None = None,
) -> TrainingResult:
    """Train `job.model` on the prepared data and publish model, predictions and history.

    `before_publish()`, when given, runs after `fit` and may raise to stop this attempt
    from publishing (the flow uses it to check that its run was not declared dead and
    superseded meanwhile).
    """
    done_before = stored_result(store, job.run_id, job.model)
    if done_before is not None:
        check_recipe(job, done_before.recipe, "a finished model")
        if not done_before.stopped_by_budget:
            logger.info(
                "%s: already trained in an earlier attempt of run %s; reusing it",
                job.model,
                job.run_id,
            )
            return done_before
        logger.info(
            "%s: %s in an earlier run; continuing from its checkpoint",
            job.model,
            done_before.budget_note,
        )
    # The device and this process's code, libraries and machine: the run's fingerprint.
    device = {
        **configure_device(job.threads or default_threads(job.cpu_share)),
        "host": fingerprint.host(),
    }
    keras.utils.set_random_seed(job.train.seed)
    data = {
        split: load_split(job.dataset, split, store, cache_dir)
        for split in ("train", "val", "test")
    }
    n_train = len(data["train"][1])

    with tempfile.TemporaryDirectory(prefix=f"train-{job.model}-") as tmp:
        workdir = Path(tmp)
        model, done, history = build_or_resume(job, store, cache_dir, workdir, n_train, logger)
        logger.info(
            "%s: %s parameters, %s",
            job.model,
            f"{model.count_params():,}",
            {k: v for k, v in device.items() if k != "host"},
        )
        fitted = fit(job, model, done, history, data, store, workdir, logger, on_epoch)
        if before_publish is not None:
            before_publish()
        if publish_model(job, fitted, data["test"][0], store, workdir, logger) is None:
            refuse_diverged(job, fitted, store, logger)

    epochs_done = len(fitted.history.get("loss", []))
    epochs_run = epochs_done - done
    result = TrainingResult(
        model=job.model,
        model_key=layout.model_key(job.run_id, job.model),
        history_key=layout.history_key(job.run_id, job.model),
        predictions_key=layout.predictions_key(job.run_id, job.model),
        history=fitted.history,
        epochs=epochs_done,
        resumed_from_epoch=done,
        fit_seconds=fitted.seconds,
        fit_started_at=fitted.started_at,
        train_images_per_second=epochs_run * n_train / fitted.seconds if epochs_run else 0.0,
        parameters=int(model.count_params()),
        peak_rss_mb=peak_rss_mb(),
        device=device,
        recipe=job.recipe(),
        planned_epochs=job.train.epochs,
        stopped_by_budget=epochs_done < job.train.epochs,
    )
    publish_result(store, result)
    if (
        job.checkpoint and not result.stopped_by_budget
    ):  # a budget-stopped model continues from its checkpoint
        prune_checkpoints(store, job.run_id, job.model)
    return result
