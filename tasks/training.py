"""Training one model: plain Keras `fit` with callbacks around it. No Prefect in here.

One call of `train` trains one model in the current process (the caller makes that a
process of its own) and publishes, under the run prefix:

    runs/<run>/models/<model>.keras           the trained model (Keras format)
    runs/<run>/training/<model>/history.json  per-epoch loss / accuracy (train and val)
    runs/<run>/training/<model>/predictions.npz  test-set probabilities for evaluation
    runs/<run>/checkpoints/<model>/...        per-epoch checkpoint, removed on success

Everything around `fit` is a Keras callback: epoch logging (`EpochLogger`, handed the
caller's logger, so in a flow run the lines land in Prefect's logs), NaN detection
(`FailOnNaN`), and per-epoch checkpoints to S3 (`S3Checkpoint`) from which a retried or
re-run training resumes instead of starting at epoch 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from tasks.config import TrainParams
from tasks.data import DatasetRef, load_split
from tasks.store import ArtifactStore, run_prefix
from tasks.weights import local_weights


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; nothing is published for this model."""


class TrainingJob(BaseModel):
    """Everything one training process needs (small and JSON-serialisable)."""

    run_id: str
    model: str
    dataset: DatasetRef
    train: TrainParams
    resnet_weights_key: str | None = None
    threads: int = Field(default=0, ge=0, description="TF threads; 0 = this host's cores / COMPARE_MODELS_WORKER_SLOTS")
    checkpoint: bool = True
    attempt: int = Field(default=1, ge=1, description="1 for the first try; retries resume from the checkpoint")


#: Fault injection for resume tests and drills: the first attempt of every training fails
#: right after this epoch's checkpoint is stored. Unset in normal operation.
FAIL_AFTER_EPOCH_ENV = "COMPARE_MODELS_FAIL_AFTER_EPOCH"


class InjectedFault(RuntimeError):
    pass


# ── device set-up ──────────────────────────────────────────────────────────


def default_threads() -> int:
    """This process's share of the host's cores: a worker running N trainings at once sets
    COMPARE_MODELS_WORKER_SLOTS=N (the same as its --limit)."""
    slots = max(1, int(os.environ.get("COMPARE_MODELS_WORKER_SLOTS", "1")))
    return max(1, (os.cpu_count() or 1) // slots)


def configure_device(threads: int) -> dict[str, Any]:
    """Thread pools from our share of the cores; on GPUs memory growth and mixed precision.

    TensorFlow sizes its pools from the host, not from a container's CPU quota, and two
    trainings side by side would each take every core: so we set them explicitly. Must
    run before TensorFlow executes anything.
    """
    import keras
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    # On CPU fp32 is fastest here (bf16 gave 1.00x, XLA was 13x slower: see DESIGN.md).
    policy = os.environ.get("COMPARE_MODELS_PRECISION") or ("mixed_float16" if gpus else "float32")
    keras.mixed_precision.set_global_policy(policy)
    return {"gpus": [g.name for g in gpus], "threads": threads, "precision": policy}


# ── callbacks ──────────────────────────────────────────────────────────────


def _fmt(logs: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in sorted(logs.items()))


class EpochLogger:
    """Factory for a Keras callback that logs one line per epoch to `logger`."""

    def __new__(cls, logger: logging.Logger | Any, model_name: str, epochs: int, n_train: int, on_epoch=None):
        import keras

        class _EpochLogger(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self._started = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                seconds = time.perf_counter() - self._started
                logs = {k: float(v) for k, v in (logs or {}).items()}
                logger.info(
                    "%s epoch %d/%d %s (%.1f s, %.0f images/s)",
                    model_name, epoch + 1, epochs, _fmt(logs), seconds, n_train / seconds,
                )
                if on_epoch is not None:
                    on_epoch(epoch + 1, epochs, logs)

        return _EpochLogger()


def fail_on_nan():
    """`TerminateOnNaN` that remembers where the loss went bad, so we can fail loudly."""
    import keras

    class FailOnNaN(keras.callbacks.TerminateOnNaN):
        nan_at: tuple[int, int] | None = None

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_batch_end(self, batch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)) and self.nan_at is None:
                self.nan_at = (self._epoch + 1, batch + 1)
            super().on_batch_end(batch, logs)

    return FailOnNaN()


def checkpoint_prefix(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"checkpoints/{model}/"


def s3_checkpoint(store: ArtifactStore, run_id: str, model_name: str, history: dict[str, list[float]], workdir: Path,
                  final_epoch: int):
    """Saves model + optimizer state and the history so far to S3 after every epoch.

    The state file is written after the model file, so a checkpoint is never half-made:
    `state.json` always names an epoch whose model file is complete. The final epoch is
    not checkpointed: the finished model is published right after `fit` (a crash in
    between costs that one epoch, like a crash during it).
    """
    import keras

    prefix = checkpoint_prefix(run_id, model_name)

    class S3Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                history.setdefault(key, []).append(float(value))
            if not all(math.isfinite(v) for v in history.get("loss", [])):
                return  # never checkpoint a diverged model
            if epoch + 1 >= final_epoch:
                return
            path = workdir / f"checkpoint-{epoch + 1}.keras"
            key = prefix + f"epoch-{epoch + 1:04d}.keras"
            save_and_upload(self.model, path, store, key)
            store.put_json({"epoch": epoch + 1, "model_key": key, "history": history}, prefix + "state.json", overwrite=True)
            path.unlink(missing_ok=True)
            store.delete_prefix(prefix + "epoch-", keep=[key])

    return S3Checkpoint()


def inject_fault(after_epoch: int):
    """Fails the training right after `after_epoch` completed (and was checkpointed)."""
    import keras

    class FaultAfterEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == after_epoch:
                raise InjectedFault(f"injected fault after epoch {after_epoch} ({FAIL_AFTER_EPOCH_ENV})")

    return FaultAfterEpoch()


def load_checkpoint(store: ArtifactStore, run_id: str, model_name: str, workdir: Path):
    """(model, epochs_done, history) from the last checkpoint, or None."""
    from tasks.models import load_model

    prefix = checkpoint_prefix(run_id, model_name)
    if not store.exists(prefix + "state.json"):
        return None
    state = store.get_json(prefix + "state.json")
    path = store.download(state["model_key"], workdir / "resume.keras")
    model = load_model(path)
    return model, int(state["epoch"]), {k: list(v) for k, v in state["history"].items()}


def save_and_upload(model, path: Path, store: ArtifactStore, key: str) -> str:
    model.save(path)
    return store.upload(path, key, overwrite=True)


def withdraw(store: ArtifactStore, key: str, logger: logging.Logger | Any) -> None:
    """Best-effort removal of an object this attempt uploaded but must not leave behind
    (the run has no manifest, so it never looks complete either way)."""
    try:
        store.delete(key)
    except Exception as exc:  # the original failure matters more than the clean-up's
        logger.warning("could not remove %s: %s", store.uri(key), exc)


def prune_checkpoints(store: ArtifactStore, run_id: str, model_name: str) -> None:
    store.delete_prefix(checkpoint_prefix(run_id, model_name))


# ── training ───────────────────────────────────────────────────────────────


def training_input(x: np.ndarray, y: np.ndarray, params: TrainParams, *, seed: int):
    """Shuffled batches, with random horizontal flips when `params.augment == "flip"`.

    Augmentation lives in the input pipeline, not in the model, so the saved model is
    exactly the report's architecture.
    """
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    data = data.batch(params.batch_size)
    if params.augment == "flip":
        data = data.map(lambda images, labels: (tf.image.random_flip_left_right(images, seed=seed), labels),
                        num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)



@dataclass
class TrainingResult:
    model: str
    model_key: str
    history_key: str
    predictions_key: str
    history: dict[str, list[float]]
    epochs: int
    resumed_from_epoch: int
    fit_seconds: float
    fit_started_at: float  # UNIX time, for overlap / overhead accounting
    train_images_per_second: float
    parameters: int
    peak_rss_mb: float
    device: dict[str, Any]


def history_key_of(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"training/{model}/history.json"


def stored_result(store: ArtifactStore, run_id: str, model: str) -> TrainingResult | None:
    """The published result of a finished training (history.json is written last), or None."""
    key = history_key_of(run_id, model)
    if not store.exists(key):
        return None
    stored = store.get_json(key)
    return TrainingResult(**stored["result"], history=stored["history"])


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def train(job: TrainingJob, store: ArtifactStore, cache_dir: Path, logger: logging.Logger | Any, *, on_epoch=None,
          before_publish=None) -> TrainingResult:
    """Train `job.model` on the prepared data and publish model, history and predictions.

    `before_publish()`, when given, runs after `fit` and may raise to stop this attempt
    from publishing (the flow uses it to check that its run was not declared dead and
    superseded meanwhile).
    """
    prefix = run_prefix(job.run_id)
    history_key = history_key_of(job.run_id, job.model)
    if (done_before := stored_result(store, job.run_id, job.model)) is not None:
        logger.info("%s: already trained in an earlier attempt of run %s; reusing it", job.model, job.run_id)
        return done_before

    device = configure_device(job.threads or default_threads())
    import keras

    from tasks.models import build_model, compile_model, learning_rate_schedule

    keras.utils.set_random_seed(job.train.seed)
    x_train, y_train = load_split(job.dataset, "train", store, cache_dir)
    x_val, y_val = load_split(job.dataset, "val", store, cache_dir)
    x_test, _ = load_split(job.dataset, "test", store, cache_dir)
    params = job.train

    with tempfile.TemporaryDirectory(prefix=f"train-{job.model}-") as tmp:
        workdir = Path(tmp)
        resumed = load_checkpoint(store, job.run_id, job.model, workdir) if job.checkpoint else None
        if resumed:
            model, done, history = resumed
            logger.info("%s: resuming from the checkpoint after epoch %d/%d", job.model, done, params.epochs)
        else:
            weights = local_weights(job.resnet_weights_key, store, cache_dir) if job.model == "resnet50" else None
            steps = params.epochs * math.ceil(len(y_train) / params.batch_size)
            rate = learning_rate_schedule(params.learning_rate, params.lr_schedule, steps)
            model = compile_model(build_model(job.model, resnet_weights=weights), params.optimizer, rate)
            done, history = 0, {}
        logger.info("%s: %s parameters, %s", job.model, f"{model.count_params():,}", device)

        nan_guard = fail_on_nan()
        callbacks = [nan_guard, EpochLogger(logger, job.model, params.epochs, len(y_train), on_epoch)]
        if job.checkpoint:
            callbacks.append(s3_checkpoint(store, job.run_id, job.model, history, workdir, params.epochs))
        if os.environ.get(FAIL_AFTER_EPOCH_ENV) and job.attempt == 1:
            callbacks.append(inject_fault(int(os.environ[FAIL_AFTER_EPOCH_ENV])))
        started, started_at = time.perf_counter(), time.time()
        fit = model.fit(
            training_input(x_train, y_train, params, seed=params.seed + done), validation_data=(x_val, y_val),
            epochs=params.epochs, initial_epoch=done, callbacks=callbacks, verbose=0,
        )
        fit_seconds = time.perf_counter() - started
        if not job.checkpoint:
            history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
        if before_publish is not None:
            before_publish()
        diverged = nan_guard.nan_at is not None or not all(math.isfinite(v) for v in history.get("loss", [math.nan]))
        model_key = prefix + f"models/{job.model}.keras"
        predictions_key = prefix + f"training/{job.model}/predictions.npz"
        y_prob = None
        if not diverged:
            # Saving and uploading the model (300 MB for ResNet50 with its optimizer state) runs
            # while the test set is predicted; both only read the weights.
            try:
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"publish-{job.model}") as publisher:
                    model_published = publisher.submit(save_and_upload, model, workdir / f"{job.model}.keras", store,
                                                       model_key)
                    y_prob = model.predict(x_test, batch_size=max(params.batch_size, 256), verbose=0)
                    model_published.result()
            except BaseException:
                withdraw(store, model_key, logger)  # no model without its predictions
                raise
        if diverged or not np.isfinite(y_prob).all():
            withdraw(store, model_key, logger)  # a model with NaN outputs is not published
            if job.checkpoint:
                prune_checkpoints(store, job.run_id, job.model)  # a diverged model is no place to resume from
            where = "at epoch {}, batch {}".format(*nan_guard.nan_at) if nan_guard.nan_at else "(its outputs are NaN/inf)"
            raise TrainingDiverged(
                f"{job.model}: training diverged: the loss or the model became NaN/inf {where} (learning rate "
                f"{params.learning_rate}, optimizer {params.optimizer}). Lower the learning rate; nothing was published."
            )

        np.savez_compressed(workdir / "predictions.npz", y_prob=y_prob.astype(np.float32))
        store.upload(workdir / "predictions.npz", predictions_key, overwrite=True)

    epochs_run = params.epochs - done
    result = TrainingResult(
        model=job.model, model_key=model_key, history_key=history_key, predictions_key=predictions_key,
        history=history, epochs=len(history.get("loss", [])), resumed_from_epoch=done, fit_seconds=fit_seconds,
        fit_started_at=started_at,
        train_images_per_second=epochs_run * len(y_train) / fit_seconds if epochs_run else 0.0,
        parameters=int(model.count_params()), peak_rss_mb=peak_rss_mb(), device=device,
    )
    store.put_json({"history": history, "result": {k: v for k, v in result.__dict__.items() if k != "history"}},
                   history_key, overwrite=True)
    if job.checkpoint:
        prune_checkpoints(store, job.run_id, job.model)
    return result


def result_to_json(result: TrainingResult) -> str:
    return json.dumps(result.__dict__)
