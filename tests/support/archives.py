"""Build small archives in each supported source format, on the fly, for tests.

Also the raw pieces hostile test inputs are made of (tests/hostile): tar members of any
type and declared size, pickles of any content and protocol, PNG headers of any size.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from compare_models.config import CIFAR10_CLASSES

BATCH_DIR = "cifar-10-batches-py"


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 10
    x = (rng.uniform(0, 1, (n, 32, 32, 3)) * 40 + y[:, None, None, None] * 20).astype(np.uint8)
    return x, y


def cifar_python_tarball(
    path: Path,
    per_batch: int = 20,
    test: int = 30,
    labels_hook=None,
    *,
    protocol: int | None = None,
    payload_hook: Callable[[str, bytes], bytes] | None = None,
    meta: dict | None = None,
) -> Path:
    """The official layout: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}.

    `protocol`: the pickle protocol (2 is what Python 3 re-packs of the Python 2 files use);
    `payload_hook(name, pickled) -> bytes` replaces a member's bytes; `meta` replaces batches.meta's dict."""
    with tarfile.open(path, "w:gz") as tar:
        meta = (
            meta
            if meta is not None
            else {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072}
        )
        payload = pickle.dumps(meta, protocol=protocol)
        _add(
            tar,
            f"{BATCH_DIR}/batches.meta",
            payload_hook("batches.meta", payload) if payload_hook else payload,
        )
        for i, (name, n) in enumerate(
            [(f"data_batch_{b}", per_batch) for b in range(1, 6)] + [("test_batch", test)]
        ):
            x, y = images(n, seed=i)
            labels = (
                list(map(int, y)) if labels_hook is None else labels_hook(name, list(map(int, y)))
            )
            batch = {
                b"batch_label": name.encode(),
                b"data": x.transpose(0, 3, 1, 2).reshape(n, -1),
                b"labels": labels,
                b"filenames": [f"{name}_{j}.png".encode() for j in range(n)],
            }
            payload = pickle.dumps(batch, protocol=protocol)
            _add(
                tar, f"{BATCH_DIR}/{name}", payload_hook(name, payload) if payload_hook else payload
            )
    return path


def image_folder_tarball(
    path: Path,
    per_class: int = 4,
    test_per_class: int = 2,
    classes=CIFAR10_CLASSES,
    fmt: str = "PNG",
    overrides: dict[str, bytes] | None = None,
) -> Path:
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


# ── raw pieces for hostile inputs ──────────────────────────────────────────────


def member(
    name: str,
    *,
    type: bytes = tarfile.REGTYPE,
    size: int | None = None,
    data: bytes | None = None,
    linkname: str = "",
    pax: dict[str, str] | None = None,
) -> tuple[tarfile.TarInfo, bytes | None]:
    """A tar member of any type; `size` may declare more than `data` holds (nothing after is consistent then)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type, linkname
    info.size = size if size is not None else len(data or b"")
    if pax:
        info.pax_headers = pax
    return info, data


def tar_of(
    path: Path,
    members: Iterable[tuple[tarfile.TarInfo, bytes | None]],
    *,
    compression: str = "gz",
    format: int = tarfile.GNU_FORMAT,
) -> Path:
    """A tar (gzip-compressed by default) of the given members. A member whose data is None gets only
    its header: its declared size is then a lie, which is the point."""
    with tarfile.open(path, f"w:{compression}" if compression else "w", format=format) as tar:
        for info, data in members:
            if data is None:
                buf = info.tobuf(tar.format, tar.encoding, tar.errors)
                tar.fileobj.write(buf)
                tar.offset += len(buf)
            else:
                tar.addfile(info, io.BytesIO(data))
    return path


def raw_header(name: str, type: bytes, size: int) -> bytes:
    """One 512-byte ustar header block of any type and declared size (checksum filled in)."""
    info = tarfile.TarInfo(name)
    info.type, info.size = type, 0
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    block[124:136] = (
        f"{size:011o}\0".encode() if size < 8**11 else b"\x80" + size.to_bytes(11, "big")
    )
    block[148:156] = b"        "
    block[148:156] = f"{sum(block):06o}\0 ".encode()
    return bytes(block)


def gz(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def png_header_only(width: int, height: int, *, bit_depth: int = 1, color_type: int = 0) -> bytes:
    """A PNG that declares `width` x `height` but holds one tiny IDAT: opening it reads only the header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def nested_shared_lists(depth: int = 28, width: int = 4) -> list:
    """A list of `width` references to one list of `width` references ... `depth` deep: a few hundred
    bytes pickled (the memo shares them), width**depth elements to anything that walks it."""
    value: list = [0]
    for _ in range(depth):
        value = [value] * width
    return value


def class_image(class_index: int, number: int, size: tuple[int, int] = (32, 32)) -> bytes:
    """A PNG of class `class_index` (a colour per class, a learnable pattern) whose bytes are
    unique for each `number`: noise seeded by both."""
    rng = np.random.default_rng([class_index, number])
    base = np.zeros((*size, 3), np.float64)
    base[..., class_index % 3] = 60 + 60 * (class_index // 3)
    pixels = np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def image_folder_files(
    classes: Iterable[str], numbers: Iterable[int], size: tuple[int, int] = (32, 32), top: str = ""
) -> dict[str, bytes]:
    """{"<top><class>/<number>.png": PNG bytes} for a folder source, `top` e.g. "train/"."""
    numbers = list(numbers)
    return {
        f"{top}{name}/{n:05d}.png": class_image(c, n, size)
        for c, name in enumerate(classes)
        for n in numbers
    }
