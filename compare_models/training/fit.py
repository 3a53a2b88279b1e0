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

Everything around `fit` is a Keras callback: `EpochLogger` (one line per epoch to the
caller's logger, so in a flow run the lines land in Prefect's logs), `FailOnNaN` (remembers
where the loss went bad), `S3Checkpoint` (per-epoch checkpoints a retried training resumes
from) and `FaultAfterEpoch` (fault injection for resume drills).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compare_models.training import backend

backend.prepare_environment()  # before Keras starts its backend (threads, GPU memory)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from compare_models.config import TrainingRuntime
from compare_models.data.dataset import load_split
from compare_models.device import available_cpus
from compare_models.models import registry
from compare_models.models.networks import compile_model, learning_rate_schedule, load_model
from compare_models.models.weights import local_weights
from compare_models.runs import fingerprint
from compare_models.storage import layout  # noqa: E402
from compare_models.storage.store import ArtifactStore, StoreUnavailable, disk_full_error
from compare_models.training.backend import configure_device
from compare_models.training.batches import training_input
from compare_models.training.checkpoint_upload import CheckpointUploader, LocalCheckpoint
from compare_models.training.jobs import (
    EPOCH_PAUSE_ENV,
    FAIL_AFTER_EPOCH_ENV,
    SHUFFLE_LABELS_ENV,
    TrainingDiverged,
    TrainingJob,
    TrainingResult,
    check_recipe,
    publish_result,
    shuffle_labels,
    stored_result,
    threads_from_share,
)

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
    """Backs up the training state to S3 after every epoch and restores it when a later
    attempt of the same training starts: `keras.callbacks.BackupAndRestore`, with the run's
    checkpoint prefix (`layout.checkpoint_prefix`) in place of a local folder.

    `on_train_begin` restores the last checkpoint (the model's weights and optimizer state;
    the history so far) and sets the epoch `fit` starts from; `on_epoch_end` saves one
    (model + optimizer state as a Keras file, then `state.json` with the epoch, the history
    and the recipe) to the local disk and hands it to a background `CheckpointUploader`, so
    that training goes on while it is uploaded, retried through a store outage, or superseded
    by the next epoch's; `close` ends the uploads. The state file is uploaded after the model
    file, so a checkpoint is never half-made: `state.json` always names an epoch whose model
    file is complete, and it is the newest checkpoint that reached S3. The final epoch
    is not checkpointed: the finished model is published right after `fit` (a crash in between
    costs that one epoch, like a crash during it). `on_train_end` decides what becomes of the
    checkpoint (`completed`): when every epoch ran it is no longer needed, and the caller
    removes it (`prune`) once the finished model is published; when `fit` stopped early (the
    run's time budget) it is kept, and a re-run with the same run id continues from it.

    A checkpoint made from another recipe (data, split, parameters) is refused
    (`RecipeMismatch`); one that cannot be read (corrupt state or model file, a key outside
    its folder, a model file that does not fit the model) is dropped and the model starts
    afresh, which the log says. `fit`'s input depends on the epoch it starts from (each
    epoch's order and flips are drawn from it): `load()` reads the checkpoint ahead of `fit`
    and returns that epoch; `on_train_begin` reads it itself when `load()` was not called.

    Example:

    >>> checkpoint = S3Checkpoint(store, job, workdir=Path("/tmp/train-cnn"), logger=logger)
    >>> model = compile_model(registry.get(job.model).build(None), "adam", 1e-3)
    >>> checkpoint.set_model(model)
    >>> done = checkpoint.load()  # 2 after an attempt that failed in epoch 3
    >>> model.fit(
    ...     training_input(x, y, job.train, first_epoch=done),
    ...     epochs=job.train.epochs,
    ...     callbacks=[checkpoint],
    ...     verbose=0,
    ... )
    >>> # Only the epochs after the checkpoint ran; `checkpoint.history` holds all of them.
    >>> len(checkpoint.history["loss"]) == job.train.epochs
    True
    >>> checkpoint.close(needed=not checkpoint.completed)  # after publishing the model
    >>> if checkpoint.completed:  # not stopped early: the checkpoint is done with
    ...     checkpoint.prune()

    Args:
        store: the artifact store holding the run.
        job: the training (run id, model, parameters, recipe; `job.train.epochs` is the
            final epoch).
        workdir: a local scratch folder for the model files on their way to and from S3.
        logger: where the resume and start-afresh lines go.
    """

    def __init__(self, store: ArtifactStore, job: TrainingJob, workdir: Path, logger: Logger):
        super().__init__()
        self.store = store
        self.job = job
        self.workdir = workdir
        self.logger = logger
        self.final_epoch = job.train.epochs
        self.recipe = job.recipe()
        #: every epoch's logs, the restored checkpoint's epochs first
        self.history: dict[str, list[float]] = {}
        #: the epochs the restored checkpoint had done (0: none restored)
        self.resumed_from = 0
        #: set by `on_train_end`: every epoch ran, so the checkpoint is no longer needed
        self.completed = False
        self._current_epoch = 0
        self._loaded = False
        self._restore_path: Path | None = None
        #: the last checkpoint file's size: the room the next one needs on the local disk
        self._checkpoint_bytes: int | None = None
        #: uploads the checkpoints in the background, retrying through store outages
        self.uploader = CheckpointUploader(store, logger, job.label)

    # ── restore ──

    def load(self) -> int:
        """Reads the checkpoint, if any, once: checks its recipe, downloads its model file and
        takes its history. Returns the epoch `fit` resumes from (0: start afresh)."""
        if self._loaded:
            return self.resumed_from
        self._loaded = True
        job, store = self.job, self.store
        state_key = layout.checkpoint_state_key(job.run_id, job.name)
        if not store.exists(state_key):
            return 0
        try:
            state = store.get_json(state_key)
            recipe = state["recipe"]
        except (
            Exception
        ) as exc:  # unreadable, or from before recipes: nothing to compare, so nothing to resume
            return self._start_afresh(f"its state.json is unreadable ({type(exc).__name__}: {exc})")
        check_recipe(job, recipe, "a checkpoint")
        try:
            epoch = int(state["epoch"])
            if (
                state["model_key"] != layout.checkpoint_epoch_key(job.run_id, job.name, epoch)
                or not 0 < epoch < job.train.epochs
            ):
                raise ValueError(f"state.json names {state['model_key']!r} for epoch {epoch}")
            history = {str(k): [float(x) for x in v] for k, v in state["history"].items()}
            path = store.download(state["model_key"], self.workdir / "resume.keras")
            self._check_model_file(path)
        except (
            Exception
        ) as exc:  # any unreadable checkpoint: start this model afresh rather than fail every retry
            return self._start_afresh(f"{type(exc).__name__}: {exc}")
        self.history.update(history)
        self.resumed_from, self._restore_path = epoch, path
        self.logger.info(
            "%s: resuming from the checkpoint after epoch %d/%d: %s, the newest that reached S3%s",
            job.label,
            epoch,
            job.train.epochs,
            store.uri(state["model_key"]),
            f" (saved {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(state['saved_at']))} UTC)"
            if isinstance(state.get("saved_at"), int | float)
            else "",
        )
        return epoch

    def _check_model_file(self, path: Path) -> None:
        """The model file loads, and its weights and optimizer state fit `self.model` (when set):
        a file that would fail in `on_train_begin` is found here, while starting afresh is
        still possible."""
        saved = load_model(path)
        if self.model is not None and _state_shapes(saved) != _state_shapes(self.model):
            raise ValueError(
                "its weights or optimizer state do not fit this model (made under another "
                "precision policy?)"
            )

    def _start_afresh(self, why: str) -> int:
        self.logger.warning(
            "%s: the checkpoint in %s cannot be used (%s); training this model afresh",
            self.job.label,
            self.store.uri(layout.checkpoint_prefix(self.job.run_id, self.job.name)),
            why,
        )
        self.prune()
        return 0

    def on_train_begin(self, logs=None):
        epoch = self.load()
        if self._restore_path is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            # Make sure optimizer variables exist before loading (as BackupAndRestore does).
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self._restore_path)  # weights and optimizer state
        self._restore_path.unlink(missing_ok=True)
        self._restore_path = None
        self._current_epoch = epoch
        self.model._initial_epoch = epoch  # where `fit` starts, as BackupAndRestore sets it

    # ── back up ──

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        if not all(math.isfinite(v) for v in self.history.get("loss", [])):
            return  # never checkpoint a diverged model
        if self._current_epoch >= self.final_epoch:
            return
        run_id, name = self.job.run_id, self.job.name
        epoch = self._current_epoch
        path = self.workdir / f"checkpoint-{epoch}.keras"
        key = layout.checkpoint_epoch_key(run_id, name, epoch)
        save_locally(self.model, path, self._checkpoint_bytes)
        self._checkpoint_bytes = path.stat().st_size
        self.uploader.submit(
            LocalCheckpoint(
                epoch=epoch,
                path=path,
                key=key,
                state={
                    "epoch": epoch,
                    "model_key": key,
                    "history": {k: list(v) for k, v in self.history.items()},
                    "recipe": self.recipe,
                    "saved_at": time.time(),
                },
                state_key=layout.checkpoint_state_key(run_id, name),
                epochs_prefix=layout.checkpoint_epochs_prefix(run_id, name),
                made_at=time.time(),
            )
        )

    def close(self, *, needed: bool) -> None:
        """Ends the background uploads. When the checkpoint is no longer `needed` (the final
        model is published) what is pending is dropped; otherwise (a failure, the time budget)
        it has the outage window to reach S3, since the next attempt resumes from the newest
        checkpoint there."""
        flush = max(self.store.outage_seconds, 1.0) if needed else 0.0
        newest = self.uploader.close(flush_seconds=flush)
        if needed and self._current_epoch:
            self.logger.info(
                "%s: the newest checkpoint in S3 is %s",
                self.job.label,
                f"epoch {newest.epoch} ({self.store.uri(newest.key)})" if newest else "none",
            )

    # ── prune ──

    def on_train_end(self, logs=None):
        # Every epoch ran: the checkpoint is done with once the model is published (not here:
        # a crash before that would cost every epoch instead of one). Stopped early (the time
        # budget, a NaN loss): kept for a later run, or removed by `refuse_diverged`.
        self.completed = len(self.history.get("loss", [])) >= self.final_epoch

    def prune(self) -> None:
        """Removes this training's checkpoints from S3."""
        prune_checkpoints(self.store, self.job.run_id, self.job.name)


def _state_shapes(model: keras.Model) -> tuple[list, list]:
    """The shapes of a model's weights and of its optimizer's variables, in order."""
    optimizer = model.optimizer.variables if model.optimizer is not None else []
    return [tuple(v.shape) for v in model.weights], [tuple(v.shape) for v in optimizer]


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


class PauseAfterEpoch(keras.callbacks.Callback):
    """Makes every epoch last `seconds` longer (`EPOCH_PAUSE_ENV`: outage tests and drills)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.seconds)


# ── checkpoints and publishing ─────────────────────────────────────────────────


def save_locally(model: keras.Model, path: Path, expected_bytes: int | None = None) -> None:
    """`model.save(path)`; a full disk is `LocalDiskFull`, naming the folder and the room the
    file needs (`expected_bytes`, else an estimate from the model's variables), and leaves no
    partial file behind."""
    variables = [*model.variables, *(model.optimizer.variables if model.optimizer else [])]
    needed = expected_bytes or sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables
    )
    elsewhere = "set TMPDIR to a folder on a larger disk"  # the training's scratch folder
    if shutil.disk_usage(path.parent).free < needed:
        raise disk_full_error(path, needed, elsewhere)
    try:
        model.save(path)
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno != errno.ENOSPC and "No space left" not in str(exc):
            raise
        raise disk_full_error(path, needed, elsewhere) from None


def save_and_upload(model: keras.Model, path: Path, store: ArtifactStore, key: str) -> str:
    save_locally(model, path)
    return store.upload(path, key, overwrite=True)


def withdraw(store: ArtifactStore, key: str, logger: Logger) -> None:
    """Best-effort removal of an object this attempt uploaded but must not leave behind
    (the run has no manifest, so it never looks complete either way)."""
    try:
        store.waiting_out(0).delete(key)  # not another outage window of waiting
    except Exception as exc:  # the original failure matters more than the clean-up's
        logger.warning("could not remove %s: %s", store.uri(key), exc)


def prune_checkpoints(store: ArtifactStore, run_id: str, name: str) -> None:
    """Removes one training's checkpoints (`name`: `TrainingJob.name`)."""
    store.delete_prefix(layout.checkpoint_prefix(run_id, name))


# ── training ───────────────────────────────────────────────────────────────────


@dataclass
class _Fitted:
    model: keras.Model
    history: dict[str, list[float]]
    resumed_from: int
    seconds: float
    started_at: float
    nan_at: tuple[int, int] | None


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
    model = spec.build(weights, num_classes=len(job.dataset.class_names))
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
) -> _Fitted:
    """`model.fit` with the callbacks: logging, NaN guard, checkpoints, fault injection; from
    the epoch after `checkpoint`'s last, when it restores one."""
    params = job.train
    done = checkpoint.load() if checkpoint is not None else 0
    (x_train, y_train), validation = data["train"], data["val"]
    nan_guard = FailOnNaN()
    callbacks: list[keras.callbacks.Callback] = [
        nan_guard,
        EpochLogger(logger, job.label, params.epochs, len(y_train), on_epoch),
    ]
    if checkpoint is not None:
        callbacks.append(checkpoint)
    if job.deadline is not None:
        callbacks.append(BudgetStop(job.deadline, logger, job.label, params.epochs))
    if os.environ.get(EPOCH_PAUSE_ENV):
        callbacks.append(PauseAfterEpoch(float(os.environ[EPOCH_PAUSE_ENV])))
    if os.environ.get(FAIL_AFTER_EPOCH_ENV) and job.attempt == 1:
        callbacks.append(FaultAfterEpoch(int(os.environ[FAIL_AFTER_EPOCH_ENV])))
    started, started_at = time.perf_counter(), time.time()
    fitted = model.fit(
        training_input(
            x_train,
            y_train,
            params,
            first_epoch=done,
            workers=(runtime or TrainingRuntime()).input_workers,
        ),
        validation_data=validation,
        epochs=params.epochs,
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


def _diverged(fitted: _Fitted) -> bool:
    return fitted.nan_at is not None or not all(
        math.isfinite(v) for v in fitted.history.get("loss", [math.nan])
    )


def predict_in_full_batches(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict(x)` with the last batch padded to full size (the padding's outputs dropped).

    Keras traces its predict function for the shape of the first batch and again, with the
    batch dimension relaxed, for a shorter last one (with XLA on a GPU: a second compile);
    padding spares that, for at most one batch of extra compute: ResNet50's first `predict`
    after `fit` took less time on average (alternating padded and unpadded runs; see
    docs/benchmarks.md).
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
    beside `predict`; both only read the weights. Under JAX the model is saved first and only
    uploaded beside `predict`: Keras' JAX trainer moves the variables' values into its compiled
    function's state while `predict` runs, so nothing may read them meanwhile. If either fails,
    the model is withdrawn: no model is left without its predictions. A diverged model is not
    published (None).
    """
    if _diverged(fitted):
        return None
    model_key, model_path = layout.model_key(job.run_id, job.name), workdir / f"{job.name}.keras"
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"publish-{job.name}"
        ) as publisher:
            if keras.backend.backend() == "jax":
                save_locally(fitted.model, model_path)
                uploaded = publisher.submit(store.upload, model_path, model_key, overwrite=True)
            else:
                uploaded = publisher.submit(
                    save_and_upload, fitted.model, model_path, store, model_key
                )
            y_prob = predict_in_full_batches(fitted.model, x_test, max(job.train.batch_size, 256))
            predicted = time.perf_counter() - started
            uploaded.result()
    except BaseException:
        withdraw(store, model_key, logger)
        raise
    logger.info(
        "%s: %d test images predicted in %.1f s, the model (%.0f MB) saved and uploaded beside it: %.1f s in all",
        job.label,
        len(x_test),
        predicted,
        model_path.stat().st_size / 1e6,
        time.perf_counter() - started,
    )
    if not np.isfinite(y_prob).all():
        return None
    np.savez_compressed(workdir / "predictions.npz", y_prob=y_prob.astype(np.float32))
    store.upload(
        workdir / "predictions.npz", layout.predictions_key(job.run_id, job.name), overwrite=True
    )
    return y_prob


def refuse_diverged(
    job: TrainingJob, fitted: _Fitted, store: ArtifactStore, logger: Logger
) -> None:
    """Removes what a diverged training left (model, checkpoints) and raises TrainingDiverged."""
    withdraw(
        store, layout.model_key(job.run_id, job.name), logger
    )  # a model with NaN outputs is not published
    if job.checkpoint:
        prune_checkpoints(
            store, job.run_id, job.name
        )  # a diverged model is no place to resume from
    params = job.train
    where = (
        "at epoch {}, batch {}".format(*fitted.nan_at)
        if fitted.nan_at
        else "(its outputs are NaN/inf)"
    )
    raise TrainingDiverged(
        f"{job.label}: training diverged: the loss or the model became NaN/inf {where} (learning rate "
        f"{params.learning_rate}, optimizer {params.optimizer}). Lower the learning rate; nothing was published."
    )


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
            job.threads or default_threads(job.cpu_share), allow_cpu=allow_cpu, runtime=runtime
        ),
        "jit_compile": runtime.jit_compile,
        "steps_per_execution": runtime.steps_per_execution,
        "input_workers": runtime.input_workers,
        "host": fingerprint.host(),
    }
    keras.utils.set_random_seed(job.train.seed)
    data = {
        split: load_split(job.dataset, split, store, cache_dir)
        for split in ("train", "val", "test")
    }
    if os.environ.get(SHUFFLE_LABELS_ENV):
        fraction = float(os.environ[SHUFFLE_LABELS_ENV])
        x, y = data["train"]
        data["train"] = (x, shuffle_labels(y, fraction, job.train.seed))
        logger.warning(
            "%s: fault injection: %.0f%% of the training labels shuffled (%s)",
            job.label,
            100 * fraction,
            SHUFFLE_LABELS_ENV,
        )
    n_train = len(data["train"][1])

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
            fitted = fit(job, model, checkpoint, data, logger, on_epoch, runtime)
            if before_publish is not None:
                before_publish()
            if publish_model(job, fitted, data["test"][0], store, workdir, logger) is None:
                refuse_diverged(job, fitted, store, logger)
            result = _result(job, fitted, n_train, int(model.count_params()), device)
            publish_result(store, result)
            needed = checkpoint is not None and not checkpoint.completed
        except TrainingDiverged:
            needed = False  # no place to resume from (`refuse_diverged` removed it)
            raise
        except StoreUnavailable as exc:
            raise StoreUnavailable(f"{job.label}: {exc}. {_resume_hint(job, checkpoint)}") from None
        finally:
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
