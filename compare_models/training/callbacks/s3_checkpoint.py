"""`S3Checkpoint`: the training state backed up to S3 after every epoch and restored by a later
attempt (`keras.callbacks.BackupAndRestore` with the run's checkpoint prefix for a folder), and
`prune_checkpoints`, which removes a training's checkpoints."""

from __future__ import annotations

import math
import time
from pathlib import Path

import keras

from compare_models.models.networks import load_model
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.training.checkpoint_upload import CheckpointUploader, LocalCheckpoint
from compare_models.training.jobs import Logger, TrainingJob, check_recipe
from compare_models.training.saving import save_locally


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


def prune_checkpoints(store: ArtifactStore, run_id: str, name: str) -> None:
    """Removes one training's checkpoints (`name`: `TrainingJob.name`)."""
    store.delete_prefix(layout.checkpoint_prefix(run_id, name))
