"""Checkpoints on their way to S3: written to the local disk by the training, uploaded by one
background thread, so that an unreachable object store never stops a training.

The training hands each epoch's checkpoint (a local model file and the `state.json` that names
it) to `CheckpointUploader.submit` and goes on. The thread uploads the model file, then the
state (so a state in S3 always names a complete model file), then removes the older epochs'
files. A failed upload is tried again with exponential backoff and jitter (tenacity's
`wait_exponential_jitter`) for as long as it takes, unless a newer checkpoint arrives: the
newer one supersedes it (only the newest is worth having) and the older local file goes.
`close` ends it: after the final model is published nothing pending matters any more; when the
training stops otherwise (a failure, the time budget) the pending checkpoint is given up to a
deadline to reach S3, since the next attempt resumes from the newest checkpoint there.

No Keras in here: the model file is already written when it arrives.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tenacity

from compare_models.storage.errors import transient
from compare_models.storage.store import ArtifactStore


@dataclass(frozen=True)
class LocalCheckpoint:
    """One epoch's checkpoint on the local disk and where it goes in S3."""

    epoch: int
    path: Path
    key: str
    state: dict[str, Any]
    state_key: str
    #: the folder of every epoch's model file: the older ones go once this one is in
    epochs_prefix: str
    made_at: float


class _Superseded(Exception):
    """A newer checkpoint arrived (or the uploader was told to stop) before this one was in."""


class CheckpointUploader:
    """One background thread that uploads the newest submitted checkpoint, retrying through
    outages; `uploaded` is the newest that reached S3.

    >>> uploader = CheckpointUploader(store, logger, "cnn")
    >>> uploader.submit(checkpoint)  # returns at once
    >>> uploader.close(flush_seconds=0)  # the final model is published: drop what is pending
    """

    def __init__(
        self,
        store: ArtifactStore,
        logger: Any,
        label: str,
        *,
        max_backoff_seconds: float = 30.0,
    ):
        #: the uploader retries by itself: each try fails fast (botocore's few retries)
        self.store = store.waiting_out(0)
        self.logger, self.label = logger, label
        self.max_backoff_seconds = max_backoff_seconds
        self.uploaded: LocalCheckpoint | None = None
        self.superseded: list[int] = []
        self._pending: LocalCheckpoint | None = None
        self._closed = self._abandon = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(
            target=self._run, name=f"checkpoint-upload-{label}", daemon=True
        )
        self._thread.start()

    # ── the training's side ──

    def submit(self, checkpoint: LocalCheckpoint) -> None:
        """Queues `checkpoint` for upload, replacing one still waiting (whose file goes)."""
        with self._changed:
            if self._closed:
                raise RuntimeError("the checkpoint uploader is closed")
            older, self._pending = self._pending, checkpoint
            self._changed.notify_all()
        if older is not None:
            self._drop(older)

    def close(self, *, flush_seconds: float) -> LocalCheckpoint | None:
        """Stops the uploader and returns the newest checkpoint that reached S3. With
        `flush_seconds` > 0 the pending checkpoint has that long to get there; with 0 it is
        dropped (an upload under way still ends first, so nothing lands after this returns)."""
        with self._changed:
            self._closed = True
            if flush_seconds <= 0:
                self._abandon = True
            self._changed.notify_all()
        self._thread.join(flush_seconds if flush_seconds > 0 else None)
        if self._thread.is_alive():
            with self._changed:
                self._abandon = True
                self._changed.notify_all()
            self._thread.join()
        with self._changed:
            left, self._pending = self._pending, None
        if left is not None:
            self._drop(left)
        return self.uploaded

    # ── the thread ──

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending is not None or self._closed)
                if self._pending is None or self._abandon:
                    return
                current, self._pending = self._pending, None
            try:
                self._upload(current)
            finally:
                current.path.unlink(missing_ok=True)

    def _upload(self, checkpoint: LocalCheckpoint) -> None:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient),
            wait=tenacity.wait_exponential_jitter(initial=1, max=self.max_backoff_seconds),
            sleep=self._nap,
            before_sleep=lambda state: self.logger.warning(
                "%s: the checkpoint of epoch %d could not be uploaded (%s); training goes on, "
                "trying again in %.0f s",
                self.label,
                checkpoint.epoch,
                type(state.outcome.exception()).__name__,
                state.upcoming_sleep,
            ),
        )
        try:
            retrying(self._store, checkpoint)
        except _Superseded:
            self.superseded.append(checkpoint.epoch)
            self.logger.info(
                "%s: the checkpoint of epoch %d was not uploaded: superseded by a newer one",
                self.label,
                checkpoint.epoch,
            )
        except Exception as exc:  # not an outage (e.g. refused credentials): training goes on
            self.logger.error(
                "%s: the checkpoint of epoch %d could not be uploaded: %s: %s",
                self.label,
                checkpoint.epoch,
                type(exc).__name__,
                exc,
            )

    def _store(self, checkpoint: LocalCheckpoint) -> None:
        self._check_current()
        self.store.upload(checkpoint.path, checkpoint.key, overwrite=True)
        self._check_current()
        self.store.put_json(checkpoint.state, checkpoint.state_key, overwrite=True)
        self.uploaded = checkpoint
        self.store.delete_prefix(checkpoint.epochs_prefix, keep=[checkpoint.key])
        self.logger.info(
            "%s: checkpoint of epoch %d in S3 (%s, %.1f s after it was made)",
            self.label,
            checkpoint.epoch,
            self.store.uri(checkpoint.key),
            time.time() - checkpoint.made_at,
        )

    def _check_current(self) -> None:
        """Raises `_Superseded` when a newer checkpoint waits or the uploader must stop."""
        with self._changed:
            if self._abandon or self._pending is not None:
                raise _Superseded

    def _nap(self, seconds: float) -> None:
        """Backoff that a newer checkpoint or `close` cuts short."""
        with self._changed:
            self._changed.wait_for(lambda: self._pending is not None or self._abandon, seconds)

    def _drop(self, checkpoint: LocalCheckpoint) -> None:
        checkpoint.path.unlink(missing_ok=True)
        self.superseded.append(checkpoint.epoch)
