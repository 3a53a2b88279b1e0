"""The restricted unpickler of CIFAR-10's pickled batches (the official python tarball's layout).

A batch is checked opcode by opcode before it is unpickled (`MAX_PICKLE_OPS`, memo indexes),
then unpickled with only checked stand-ins for the few globals numpy's pickles name: plain
numeric arrays, lists and dicts, never code. `batch_arrays` and `meta_class_names` check what
came out before any conversion; `compare_models.data.decoding` puts the batches together.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from compare_models.config import CIFAR10_CLASSES, IMAGE_SHAPE, NUM_CLASSES
from compare_models.data.errors import DataError, describe, short
from compare_models.data.safety import shown

# ── bounds: what one pickled batch may make the data stage spend ───────────────
MAX_BATCH_IMAGES = 60_000  # images in one pickled batch (the official ones hold 10,000)
MAX_PICKLE_OPS = 10 * MAX_BATCH_IMAGES + 10_000  # opcodes in one batch pickle (~8 per image)

#: The members of the official python tarball (in cifar-10-batches-py/).
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


# Restricted unpickling. CIFAR-10 batches hold a dict of a uint8 array, a list of int labels,
# file names and a batch label. The globals a pickle may name are replaced by checked
# wrappers: plain numeric dtypes only (no object arrays), arrays only through numpy's own
# reconstruction (never `ndarray(shape)`, which would allocate without data), `_codecs.encode`
# only for latin-1 text (how Python 3 pickles bytes at protocol 2).
_NUMERIC_DTYPES = {f"{kind}{size}" for kind in "iu" for size in (1, 2, 4, 8)} | {
    "f2",
    "f4",
    "f8",
    "b1",
}


class _NdarrayType:
    """Stands for numpy.ndarray in a pickle: usable as `_reconstruct`'s subtype, not callable."""


def _refuse(what: str) -> DataError:
    return DataError(
        f"refusing to unpickle {what}: CIFAR-10 batches hold only plain numeric arrays, lists and dicts"
    )


def _dtype(spec: object, align: object = False, copy: object = True) -> np.dtype:
    text = spec.decode("ascii", "replace") if isinstance(spec, bytes) else spec
    if not isinstance(text, str) or text.lstrip("<>|=") not in _NUMERIC_DTYPES:
        raise _refuse(f"a numpy dtype {shown(text, 40)}")
    return np.dtype(text, bool(align), bool(copy))


def _reconstruct(subtype: object, shape: object, dtype_char: object) -> np.ndarray:
    if subtype is not _NdarrayType:
        raise _refuse("an array of a type other than numpy.ndarray")
    return np.ndarray(
        (0,), dtype=np.int8
    )  # numpy's own pickles restore the real contents with __setstate__


def _scalar(dtype: object, data: object = None) -> object:
    if (
        not isinstance(dtype, np.dtype)
        or not isinstance(data, bytes)
        or len(data) != dtype.itemsize
    ):
        raise _refuse("a malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype)[0]


def _frombuffer(buf: object, dtype: object, shape: object, order: object) -> np.ndarray:
    if (
        not isinstance(buf, (bytes, bytearray))
        or not isinstance(dtype, np.dtype)
        or not isinstance(shape, tuple)
        or not all(type(n) is int and n >= 0 for n in shape)
        or order not in ("C", "F")
    ):
        raise _refuse("a malformed numpy buffer")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _latin1(text: object, encoding: object = "utf-8", errors: object = "strict") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _refuse("_codecs.encode of anything but latin-1 text")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays, lists, dicts. No arbitrary code."""

    GLOBALS = {
        ("numpy", "ndarray"): _NdarrayType,
        ("numpy", "dtype"): _dtype,
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy.core.multiarray", "scalar"): _scalar,
        ("numpy._core.multiarray", "scalar"): _scalar,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        found = self.GLOBALS.get((module, name))
        if found is None:
            raise _refuse(f"{shown(module, 60)[1:-1]}.{shown(name, 60)[1:-1]}")
        return found

    def persistent_load(self, pid: object):
        raise _refuse("a persistent reference")


@contextmanager
def _corrupt_batch(name: str) -> Iterator[None]:
    """Any error but a `DataError` raised while reading batch `name` says the batch is corrupt."""
    try:
        yield
    except DataError:
        raise
    except Exception as exc:
        raise DataError(
            f"CIFAR-10 batch {name} is corrupt ({short(exc)}); download the archive again"
        ) from None


def _check_pickle_ops(payload: bytes, name: str) -> None:
    """Walk the opcodes before unpickling: bounds the object count, refuses memo indexes that would make
    the C unpickler allocate a huge table, and finds declared lengths longer than the data."""
    ops = 0
    with _corrupt_batch(name):
        for opcode, arg, _ in pickletools.genops(io.BytesIO(payload)):
            ops += 1
            if ops > MAX_PICKLE_OPS:
                raise DataError(
                    f"CIFAR-10 batch {name} has more than {MAX_PICKLE_OPS} pickle operations; it is not a CIFAR-10 batch"
                )
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (
                isinstance(arg, int) and 0 <= arg <= MAX_PICKLE_OPS
            ):
                raise DataError(
                    f"CIFAR-10 batch {name} uses a pickle memo index of {arg}; it is malformed or hostile"
                )


def unpickle_batch(payload: bytes, name: str) -> dict:
    _check_pickle_ops(payload, name)
    with _corrupt_batch(name):
        obj = _ArrayUnpickler(io.BytesIO(payload), encoding="bytes").load()
    if type(obj) is not dict:
        raise DataError(
            f"CIFAR-10 batch {name} holds a {type(obj).__name__}, not a dict; it is not a CIFAR-10 batch"
        )
    arrays = sum(v.nbytes for v in obj.values() if isinstance(v, np.ndarray))
    if arrays > len(payload):
        raise DataError(
            f"CIFAR-10 batch {name} declares more array data than it contains; it is malformed or hostile"
        )
    return obj


def batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 32, 32, 3) and labels (N,) of one batch; types and sizes checked before any conversion."""
    data, labels = batch.get(b"data", batch.get("data")), batch.get(b"labels", batch.get("labels"))
    values = int(np.prod(IMAGE_SHAPE))
    if (
        type(data) is not np.ndarray
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != values
    ):
        raise DataError(
            f"{name}: b'data' must be a uint8 array of shape (N, {values}) (32x32x3 images); found {describe(data)}. "
            "The file is not a CIFAR-10 batch"
        )
    n = data.shape[0]
    if n > MAX_BATCH_IMAGES:
        raise DataError(
            f"{name} holds {n} images, more than the {MAX_BATCH_IMAGES} a CIFAR-10 batch can hold"
        )
    if (
        type(labels) is np.ndarray
        and labels.dtype.kind in "iu"
        and labels.ndim == 1
        and len(labels) == n
    ):
        y = labels.astype(np.int64)
    elif (
        type(labels) is list
        and len(labels) == n
        and all(type(v) is int or isinstance(v, np.integer) for v in labels)
    ):
        try:
            y = np.array(labels, dtype=np.int64)
        except OverflowError:
            raise DataError(
                f"{name} has labels out of range; expected 0..{NUM_CLASSES - 1}"
            ) from None
    else:
        raise DataError(
            f"{name}: b'labels' must be a list (or 1-D integer array) of {n} integers, one per image; found {describe(labels)}"
        )
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def meta_class_names(meta: dict) -> tuple[str, ...]:
    names = meta.get(b"label_names", meta.get("label_names"))
    if names is None:
        return CIFAR10_CLASSES
    if (
        type(names) in (list, tuple)
        and len(names) == NUM_CLASSES
        and all(type(n) in (bytes, str) and len(n) <= 64 for n in names)
    ):
        decoded = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)
        if decoded == CIFAR10_CLASSES:
            return decoded
    raise DataError(
        f"batches.meta names the classes {describe(names) if type(names) not in (list, tuple) else list(map(shown, names))[:12]}; "
        f"a CIFAR-10 archive names exactly {', '.join(CIFAR10_CLASSES)} in that order. The archive is not CIFAR-10"
    )
