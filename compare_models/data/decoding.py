"""Decoding a CIFAR-10 archive into arrays, bounded whatever the archive declares.

`decode_archive` reads either supported layout (the official python tarball of pickled
batches, or class-named image folders): `compare_models.data.tar_stream` reads the archive's
members within its MAX_* bounds, `compare_models.data.pickled_batches` unpickles batches with
a restricted unpickler (plain numeric arrays, lists and dicts; no code), and images are opened
here by Pillow in a few plain formats only (a colour JPEG's pixels then decoded by
libjpeg-turbo through simplejpeg, `compare_models.data.jpeg`). `validate_arrays` checks what came out;
`synthetic_data` makes labelled noise for tests instead.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compare_models.config import CIFAR10_CLASSES, IMAGE_SHAPE, NUM_CLASSES
from compare_models.data import jpeg
from compare_models.data.errors import DataError, short
from compare_models.data.pickled_batches import (
    BATCH_FILES,
    batch_arrays,
    meta_class_names,
    unpickle_batch,
)
from compare_models.data.safety import shown
from compare_models.data.tar_stream import read_archive

IMAGE_FORMATS = (
    "PNG",
    "JPEG",
    "BMP",
    "WEBP",
)  # what Pillow may open: no PostScript (Ghostscript), no exotic decoders


@dataclass
class Decoded:
    """The archive's own train / test sets, uint8 NHWC and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    layout: str


def _decode_python_batches(batches: dict[str, bytes]) -> Decoded:
    def load(name: str) -> dict:
        if name not in batches:
            raise DataError(f"CIFAR-10 python archive is missing {name}; the archive is incomplete")
        return unpickle_batch(
            batches.pop(name), name
        )  # pop: the payload is not needed once unpickled

    def arrays(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            x, y = batch_arrays(load(name), name)
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    class_names = meta_class_names(load("batches.meta"))
    x_train, y_train = arrays(list(BATCH_FILES[:5]))
    x_test, y_test = arrays(["test_batch"])
    return Decoded(x_train, y_train, x_test, y_test, class_names, "cifar10-python")


def _decode_image(item: tuple[str, bytes]) -> np.ndarray:
    from PIL import Image

    name, payload = item
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS) as image:
                if (
                    image.size != IMAGE_SHAPE[:2]
                ):  # known from the header, before any pixel is decoded
                    raise DataError(
                        f"image {name} is {image.size[0]}x{image.size[1]}; expected 32x32"
                    )
                if image.mode != "RGB":
                    raise DataError(
                        f"image {name} has mode {image.mode}; expected RGB (3 channels)"
                    )
                fast = jpeg.decode(payload, image)
                if fast is not None:
                    return fast
                image.load()
                return np.asarray(image, dtype=np.uint8)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError(
            f"image {name} declares an enormous size (a decompression bomb); CIFAR-10 images are 32x32: replace or remove it"
        ) from None
    except Exception as exc:
        raise DataError(
            f"image {name} is corrupt or not an image ({short(exc)}); accepted formats are {', '.join(IMAGE_FORMATS)}: "
            "replace or remove it"
        ) from None


def _decode_many(items: list[tuple[str, bytes]]) -> list[np.ndarray]:
    return [_decode_image(item) for item in items]


def _decode_image_folders(found: dict[str, dict[str, tuple[str, bytes]]]) -> Decoded:
    """`found`: split -> {path: (class folder, image bytes)}."""
    if not found["train"] or not found["test"]:
        raise DataError(
            "unknown archive layout: expected the CIFAR-10 python tarball (cifar-10-batches-py/...) or class-named "
            "image folders <root>/train/<class>/<image> and <root>/test/<class>/<image>"
        )
    classes = sorted({c for split in found.values() for c, _ in split.values()})
    expected = ", ".join(CIFAR10_CLASSES)
    if len(classes) != NUM_CLASSES:
        raise DataError(
            f"found {len(classes)} class folders {[shown(c, 40) for c in classes][:20]}; expected {NUM_CLASSES}: {expected}"
        )
    if set(classes) != set(CIFAR10_CLASSES):
        unknown = sorted(set(classes) - set(CIFAR10_CLASSES))
        raise DataError(
            f"class folders {[shown(c, 40) for c in unknown]} are not CIFAR-10 classes; the image folders must be named "
            f"exactly: {expected}. Rename the folders (or the archive is not CIFAR-10)"
        )
    index = {name: i for i, name in enumerate(CIFAR10_CLASSES)}

    def decode(split: str) -> tuple[np.ndarray, np.ndarray]:
        entries = sorted(found[split].items())
        items = [(path, payload) for path, (_, payload) in entries]
        workers = min(os.cpu_count() or 1, 8)
        if workers > 1 and len(items) > 4000:
            chunks = [items[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(workers) as pool:
                parts = list(pool.map(_decode_many, chunks))
            images: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
            for w, part in enumerate(parts):
                images[w::workers] = part
        else:
            images = _decode_many(items)
        return np.stack(images), np.array([index[c] for _, (c, _) in entries], dtype=np.int64)

    x_train, y_train = decode("train")
    found["train"] = {}  # free the encoded bytes
    x_test, y_test = decode("test")
    return Decoded(x_train, y_train, x_test, y_test, CIFAR10_CLASSES, "image-folders")


def decode_archive(path: Path) -> Decoded:
    """Decode either supported archive layout, and validate what came out. Time and memory are
    bounded by the MAX_* constants of `compare_models.data.tar_stream` and
    `compare_models.data.pickled_batches`, whatever the archive declares."""
    contents = read_archive(path)
    if "data_batch_1" in contents.batches:
        decoded = _decode_python_batches(contents.batches)
    else:
        decoded = _decode_image_folders(contents.images)
    validate_arrays(decoded)
    return decoded


def validate_arrays(d: Decoded) -> None:
    if len(d.class_names) != NUM_CLASSES:
        raise DataError(f"the data has {len(d.class_names)} classes; expected {NUM_CLASSES}")
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{split} images have shape {x.shape[1:]}; expected {IMAGE_SHAPE}")
        if len(x) != len(y):
            raise DataError(f"{split} has {len(x)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
            bad = y[(y < 0) | (y >= NUM_CLASSES)]
            raise DataError(
                f"{split} labels out of range: found {sorted(set(bad.tolist()))[:5]}; expected 0..{NUM_CLASSES - 1}"
            )


def synthetic_data(n_train: int, seed: int = 0) -> Decoded:
    """Learnable synthetic images: each class a colour/pattern, plus noise. Not CIFAR-10."""
    rng = np.random.default_rng(seed)
    n_test = max(n_train // 5, NUM_CLASSES * 2)
    prototypes = rng.uniform(30, 225, size=(NUM_CLASSES, 4, 4, 3))
    prototypes = prototypes.repeat(8, axis=1).repeat(8, axis=2)  # blocky 32x32 class patterns

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % NUM_CLASSES
        rng.shuffle(y)
        x = prototypes[y] + rng.normal(0, 40, size=(n, *IMAGE_SHAPE))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    names = tuple(f"synthetic-{c}" for c in range(NUM_CLASSES))
    return Decoded(x_train, y_train, x_test, y_test, names, "synthetic")
