"""Build small archives in each supported source format, on the fly, for tests."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from compare_models.config import CIFAR10_CLASSES


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (rng.uniform(0, 1, (n, 32, 32, 3)) * 40 + y[:, None, None, None] * 20).astype(np.uint8)
    return x, y


def cifar_python_tarball(path: Path, per_batch: int = 20, test: int = 30, labels_hook=None) -> Path:
    """The official layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}."""
    with tarfile.open(path, "w:gz") as tar:
        meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta))
        for i, (name, n) in enumerate([(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", test)]):
            x, y = images(n, seed=i)
            labels = list(map(int, y)) if labels_hook is None else labels_hook(name, list(map(int, y)))
            batch = {b"data": x.transpose(0, 3, 1, 2).reshape(n, -1), b"labels": labels}
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch))
    return path


def image_folder_tarball(path: Path, per_class: int = 4, test_per_class: int = 2, classes=CIFAR10_CLASSES,
                         fmt: str = "PNG", overrides: dict[str, bytes] | None = None) -> Path:
    """<root>/train/<class>/<n>.png and <root>/test/<class>/<n>.png."""
    overrides = overrides or {}
    ext = "png" if fmt == "PNG" else "jpg"
    with tarfile.open(path, "w:gz") as tar:
        for split, count in (("train", per_class), ("test", test_per_class)):
            for c, name in enumerate(classes):
                for i in range(count):
                    member = f"data/{split}/{name}/{i:04d}.{ext}"
                    if member in overrides:
                        _add(tar, member, overrides[member])
                        continue
                    buf = io.BytesIO()
                    Image.fromarray(np.full((32, 32, 3), c * 25 + i, np.uint8)).save(buf, fmt)
                    _add(tar, member, buf.getvalue())
    return path


def png_bytes(size=(32, 32), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()
