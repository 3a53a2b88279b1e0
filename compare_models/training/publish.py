"""A finished training published: the model uploaded while the test set is predicted, the
predictions beside it (`publish_model`); a diverged one refused, with what it left removed
(`refuse_diverged`). The training's `history.json` comes last (`jobs.publish_result`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np

from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.training.callbacks.s3_checkpoint import prune_checkpoints
from compare_models.training.jobs import Logger, TrainingDiverged, TrainingJob
from compare_models.training.saving import save_and_upload, save_locally


def withdraw(store: ArtifactStore, key: str, logger: Logger) -> None:
    """Best-effort removal of an object this attempt uploaded but must not leave behind
    (the run has no manifest, so it never looks complete either way)."""
    try:
        store.waiting_out(0).delete(key)  # not another outage window of waiting
    except Exception as exc:  # the original failure matters more than the clean-up's
        logger.warning("could not remove %s: %s", store.uri(key), exc)


#: Pixels per prediction batch: 256 images at 32x32, the batch every prediction at that size
#: has always been made with. Larger images get fewer a batch, so that predicting the test
#: split after `fit` needs no more memory than the training's own batch did.
PREDICTION_PIXELS = 256 * 32 * 32
#: The fewest images per prediction batch (ResNet50 at 224x224 would get 5): fewer would make
#: a prediction of many small calls.
MIN_PREDICTION_BATCH = 32


def prediction_batch(model: keras.Model, training_batch: int = 1) -> int:
    """Images per prediction batch for `model`: `PREDICTION_PIXELS` at the largest size it
    works at (its input, or a `Resizing` layer inside it; an unknown side counts as 32), and
    never fewer than `training_batch` (a batch the training already held, with its gradients)
    nor `MIN_PREDICTION_BATCH`."""
    sides = [tuple(model.inputs[0].shape[1:3])]
    inside = list(model.layers)
    while inside:
        layer = inside.pop()
        if isinstance(layer, keras.layers.Resizing):
            sides.append((layer.height, layer.width))
        inside.extend(getattr(layer, "layers", []))  # a model nested as a layer
    pixels = max(int(h or 32) * int(w or 32) for h, w in sides)
    return max(training_batch, PREDICTION_PIXELS // pixels, MIN_PREDICTION_BATCH)


def predict_in_full_batches(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict(x)` with the last batch padded to full size (the padding's outputs dropped).

    Keras traces its predict function for the shape of the first batch and again, with the
    batch dimension relaxed, for a shorter last one (with XLA on a GPU: a second compile);
    padding spares that, for at most one batch of extra compute: ResNet50's first `predict`
    after `fit` took less time on average (alternating padded and unpadded runs; see
    docs/benchmarks.md). Fewer images than a batch are one batch of their number.
    """
    batch_size = min(batch_size, len(x)) or 1
    if not isinstance(x, np.ndarray):  # a reader of shards: batch by batch, in bounded memory
        return np.concatenate(
            [
                predict_padded(model, x[np.arange(i, min(len(x), i + batch_size))], batch_size)
                for i in range(0, len(x), batch_size)
            ]
        )
    return predict_padded(model, x, batch_size)


def predict_padded(model: keras.Model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """`model.predict(x)` in batches of `batch_size`, a short last one padded to full size
    (a part of a larger split: `predict_in_full_batches`)."""
    missing = -len(x) % batch_size
    if missing:
        x = np.concatenate([x, np.zeros((missing, *x.shape[1:]), dtype=x.dtype)])
    return model.predict(x, batch_size=batch_size, verbose=0)[: len(x) - missing]


def publish_model(
    job: TrainingJob,
    model: keras.Model,
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
    the model is withdrawn: no model is left without its predictions. Predictions that are not
    finite are not published (None: the model diverged, `refuse_diverged`).
    """
    model_key, model_path = layout.model_key(job.run_id, job.name), workdir / f"{job.name}.keras"
    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"publish-{job.name}"
        ) as publisher:
            if keras.backend.backend() == "jax":
                save_locally(model, model_path)
                uploaded = publisher.submit(store.upload, model_path, model_key, overwrite=True)
            else:
                uploaded = publisher.submit(save_and_upload, model, model_path, store, model_key)
            y_prob = predict_in_full_batches(
                model, x_test, prediction_batch(model, job.train.batch_size)
            )
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
    job: TrainingJob, nan_at: tuple[int, int] | None, store: ArtifactStore, logger: Logger
) -> None:
    """Removes what a diverged training left (model, checkpoints) and raises TrainingDiverged
    (`nan_at`: the epoch and batch where the loss went bad, if it did)."""
    withdraw(
        store, layout.model_key(job.run_id, job.name), logger
    )  # a model with NaN outputs is not published
    if job.checkpoint:
        prune_checkpoints(
            store, job.run_id, job.name
        )  # a diverged model is no place to resume from
    params = job.train
    where = "at epoch {}, batch {}".format(*nan_at) if nan_at else "(its outputs are NaN/inf)"
    raise TrainingDiverged(
        f"{job.label}: training diverged: the loss or the model became NaN/inf {where} (learning rate "
        f"{params.learning_rate}, optimizer {params.optimizer}). Lower the learning rate; nothing was published."
    )
