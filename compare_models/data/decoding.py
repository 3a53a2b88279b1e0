"""Decoding a CIFAR-10 archive into arrays, bounded whatever the archive declares.

`decode_archive` reads either supported layout (the official python tarball of pickled
batches, or class-named image folders) in one sequential pass over the tar stream: every
member is checked from its header before its data is read, the decompressed bytes, members,
sizes and pickle operations are capped by the MAX_* bounds below, batches are unpickled by a
restricted unpickler (plain numeric arrays, lists and dicts; no code), and images are opened
by Pillow in a few plain formats only. `validate_arrays` checks what came out;
`synthetic_data` makes labelled noise for tests instead.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import pickle
import pickletools
import stat
import tarfile
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from compare_models.config import CIFAR10_CLASSES, IMAGE_SHAPE, NUM_CLASSES
from compare_models.data.errors import DataError, describe, mib, short
from compare_models.data.files import file_kind
from compare_models.data.safety import shown
from compare_models.data.sources import MAX_ARCHIVE_BYTES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_FORMATS = (
    "PNG",
    "JPEG",
    "BMP",
    "WEBP",
)  # what Pillow may open: no PostScript (Ghostscript), no exotic decoders

# ── bounds: what any archive may make the data stage spend ────────────────────
# The official tarball is 163 MiB with 8 members (~178 MiB unpacked); the JPEG image-folder
# archive is 19 MiB with 60,023 members of about 1 KiB each.
# (The compressed size, MAX_ARCHIVE_BYTES, is checked with the source: compare_models.data.sources.)
MAX_MEMBERS = 100_000  # tar entries, folders included
MAX_TOTAL_BYTES = 512 << 20  # declared size of all members together
MAX_IMAGE_BYTES = 64 << 10  # one image file (a 32x32 image needs at most ~12 KiB)
MAX_BATCH_IMAGES = 60_000  # images in one pickled batch (the official ones hold 10,000)
MAX_BATCH_BYTES = MAX_BATCH_IMAGES * 3 * 32 * 32 + (16 << 20)  # one pickled batch file
MAX_OTHER_BYTES = 1 << 20  # any other member (a README, a licence), skipped but read past
MAX_HEADER_BYTES = 64 << 10  # a pax or GNU long-name header
MAX_NAME_CHARS = 1024  # a member's path
MAX_STREAM_BYTES = MAX_TOTAL_BYTES + (
    128 << 20
)  # decompressed bytes read in all (headers and padding included)
MAX_PICKLE_OPS = (
    10 * MAX_BATCH_IMAGES + 10_000
)  # opcodes in one batch pickle: up to ~8 per image at protocol 2


BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")


@dataclass
class Decoded:
    """The archive's own train / test sets, uint8 NHWC and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    layout: str


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


def _unpickle_batch(payload: bytes, name: str) -> dict:
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


def _batch_arrays(batch: dict, name: str) -> tuple[np.ndarray, np.ndarray]:
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


def _meta_class_names(meta: dict) -> tuple[str, ...]:
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


def _decode_python_batches(batches: dict[str, bytes]) -> Decoded:
    def load(name: str) -> dict:
        if name not in batches:
            raise DataError(f"CIFAR-10 python archive is missing {name}; the archive is incomplete")
        return _unpickle_batch(
            batches.pop(name), name
        )  # pop: the payload is not needed once unpickled

    def arrays(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            x, y = _batch_arrays(load(name), name)
            xs.append(x)
            ys.append(y)
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    class_names = _meta_class_names(load("batches.meta"))
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


# ── bounded archive reading ──────────────────────────────────────────────────


class _BudgetedReader:
    """A read-only file over a (decompressing) stream that stops after `limit` bytes of work.

    Forward seeks count the bytes skipped (a gzip stream decompresses them); a backward seek
    counts the whole prefix (gzip rewinds and decompresses again). So no archive can make the
    reader decompress more than `limit` bytes, whatever its headers declare."""

    mode = "rb"

    def __init__(self, inner: Any, limit: int, label: str):
        self.inner, self.limit, self.label = inner, limit, label
        self.pos = self.work = 0
        self.name = label

    def _spend(self, n: int) -> None:
        self.work += n
        if self.work > self.limit:
            raise DataError(
                f"{self.label} decompresses to more than {mib(self.limit)}; a CIFAR-10 archive unpacks to about 180 MiB. "
                "It is not a CIFAR-10 archive (or is a decompression bomb)"
            )

    def read(self, size: int | None = -1) -> bytes:
        room = self.limit - self.work + 1  # one byte past the budget proves an overrun
        size = room if size is None or size < 0 else min(size, room)
        data = self.inner.read(size)
        self.pos += len(data)
        self._spend(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.pos + offset if whence == 1 else None
        if target is None or target < 0:
            raise OSError("unsupported seek in an archive stream")
        self._spend(target - self.pos if target >= self.pos else target)
        self.inner.seek(target)
        self.pos = target
        return target

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.inner.close()


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers and sparse files while the header is parsed,
    before tarfile reads their data into memory."""

    def _proc_member(self, tarfile_):
        if (
            self.type
            in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
            )
            and self.size > MAX_HEADER_BYTES
        ):
            raise DataError(
                f"the archive has a {mib(self.size)} extended header (the limit is {mib(MAX_HEADER_BYTES)}); it is malformed "
                "or hostile: re-create it with a standard tar"
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise self._sparse()
        return super()._proc_member(tarfile_)

    def _sparse(self) -> DataError:
        return DataError(
            f"archive member {shown(self.name)} is a sparse file; only regular files and folders are accepted: re-create the "
            "archive without --sparse"
        )

    def _proc_gnusparse_00(self, next, pax_headers, buf):  # noqa: A002
        raise self._sparse()

    def _proc_gnusparse_01(self, next, pax_headers):  # noqa: A002
        raise self._sparse()

    def _proc_gnusparse_10(self, next, pax_headers, tarfile_):  # noqa: A002
        raise self._sparse()


def _open_stream(path: Path) -> tuple[Any, Any]:
    """(decompressed byte stream, raw file) of an archive file (gzip, bzip2, xz or plain tar); close both."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(
                f"{path.name} is a {file_kind(info.st_mode)}, not a regular file; pass the archive itself"
            )
        os.set_blocking(fd, True)
        raw = open(fd, "rb")  # noqa: SIM115  (closed by the caller through the stream)
    except BaseException:
        os.close(fd)
        raise
    try:
        if info.st_size > MAX_ARCHIVE_BYTES:
            raise DataError(
                f"{path.name} is {mib(info.st_size)}, more than the {mib(MAX_ARCHIVE_BYTES)} a CIFAR-10 archive can be"
            )
        magic = raw.read(6)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw
        if magic[:3] == b"BZh":
            return bz2.BZ2File(raw), raw
        if magic == b"\xfd7zXZ\x00":
            return lzma.LZMAFile(raw), raw
        return raw, raw
    except BaseException:
        raw.close()
        raise


def _member_problem(member: tarfile.TarInfo) -> str | None:
    for test, kind in (
        (member.issym, "a symbolic link"),
        (member.islnk, "a hard link"),
        (member.ischr, "a character device"),
        (member.isblk, "a block device"),
        (member.isfifo, "a FIFO"),
        (member.issparse, "a sparse file"),
    ):
        if test():
            return kind
    return None if member.isreg() or member.isdir() else f"an entry of unknown type {member.type!r}"


def _split_and_class(parts: tuple[str, ...], name: str) -> tuple[str, str] | None:
    if len(parts) >= 3 and parts[-3] in ("train", "test") and name.lower().endswith(IMAGE_SUFFIXES):
        return parts[-3], parts[-2]
    return None


@dataclass
class _Contents:
    batches: dict[str, bytes]
    images: dict[str, dict[str, tuple[str, bytes]]]


def _read_members(tar: tarfile.TarFile, label: str) -> _Contents:
    """One sequential pass over the archive; every member is checked from its header before any of
    its data is read, and only the members a supported layout needs are kept."""
    contents = _Contents({}, {"train": {}, "test": {}})
    count = total = 0
    while (member := tar.next()) is not None:
        del tar.members[:]  # keep no per-member state beyond what is used
        count += 1
        if count > MAX_MEMBERS:
            raise DataError(
                f"{label} has more than {MAX_MEMBERS} members; a CIFAR-10 archive has about 60,000 at most"
            )
        name = member.name
        if len(name) > MAX_NAME_CHARS or "\x00" in name:
            raise DataError(
                f"{label} has a member with a {len(name)}-character name; the archive is malformed"
            )
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts:
            raise DataError(
                f"archive member {shown(name)} has an unsafe path (absolute or with '..'); re-create the archive "
                "with relative paths"
            )
        if problem := _member_problem(member):
            raise DataError(
                f"archive member {shown(name)} is {problem}; only regular files and folders are accepted: "
                "re-create the archive without it"
            )
        if member.isdir():
            continue
        base = parts[-1] if parts else ""
        place = _split_and_class(parts, name)
        kind, cap = (
            ("batch", MAX_BATCH_BYTES)
            if base in BATCH_FILES
            else ("image", MAX_IMAGE_BYTES)
            if place
            else ("other", MAX_OTHER_BYTES)
        )
        if member.size > cap:
            raise DataError(
                f"archive member {shown(name)} declares {mib(member.size)}, more than the {mib(cap)} allowed for "
                f"{'a CIFAR-10 batch' if kind == 'batch' else 'an image' if kind == 'image' else 'any other file'}; "
                "the archive is not CIFAR-10 (or is hostile)"
            )
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise DataError(
                f"{label} declares more than {mib(MAX_TOTAL_BYTES)} of files; a CIFAR-10 archive unpacks to "
                "about 180 MiB"
            )
        if kind == "other":
            continue
        payload = tar.extractfile(member).read()  # type: ignore[union-attr]
        if len(payload) != member.size:
            raise DataError(
                f"archive member {shown(name)} is truncated; download the archive again"
            )
        if kind == "batch":
            if base in contents.batches:
                raise DataError(f"{label} holds {base} twice; it is malformed")
            contents.batches[base] = payload
        else:
            split, cls = place  # type: ignore[misc]
            contents.images[split][name] = (cls, payload)
    return contents


def decode_archive(path: Path) -> Decoded:
    """Decode either supported archive layout, and validate what came out. Time and memory are
    bounded by the MAX_* constants above, whatever the archive declares."""
    label = path.name
    try:
        stream, raw = _open_stream(path)
    except OSError as exc:
        raise DataError(
            f"{label} is not a readable archive ({exc.strerror or exc}); check the file or download it again"
        ) from None
    try:
        with raw, stream:
            try:
                tar = tarfile.TarFile(
                    fileobj=_BudgetedReader(stream, MAX_STREAM_BYTES, label),
                    mode="r",
                    tarinfo=_SafeTarInfo,
                )
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise DataError(
                    f"{label} is not a readable .tar.gz archive ({short(exc)}); check the file or download it "
                    "again"
                ) from None
            contents = _read_members(tar, label)
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(f"{label} is a corrupt archive ({short(exc)}); download it again") from None
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
