"""A model saved to the local disk on its way to S3 (an epoch's checkpoint, the finished model):
a disk without room for it is `LocalDiskFull`, naming the folder and the room it needs."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import keras
import numpy as np

from compare_models.storage.errors import disk_full_error
from compare_models.storage.store import ArtifactStore


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
