"""The hostile-input corpus: crafted inputs built on the fly, each with the error it must produce.

Every case builds its input under a scratch folder (a few hundred bytes to a few KiB), then
`act` feeds it to the project's own entry point. tests/hostile/test_hostile_corpus.py runs each
`act` in a forked child (tests/support/bounded.py) and checks the error, its message, the
time taken and the peak memory. README.md in this folder lists the corpus; a test keeps the
list and this module in step.
"""

from __future__ import annotations

import os
import pickle
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from compare_models.config import CIFAR10_CLASSES, Settings, SplitSpec
from compare_models.data import dataset as data
from compare_models.data import decoding, sources, tar_stream
from compare_models.data.files import download_url
from compare_models.models import weights
from compare_models.storage import layout
from tests.support.archives import (
    BATCH_DIR,
    cifar_python_tarball,
    image_folder_tarball,
    member,
    nested_shared_lists,
    png_bytes,
    png_header_only,
    raw_header,
    tar_of,
)

MARKER = "pwned-marker"  # a file that hostile code would create


@dataclass(frozen=True)
class Case:
    id: str
    checks: str  # one line for README.md
    build: Callable[[Path], Any]  # makes the input under a scratch folder; returns what `act` takes
    act: Callable[[Any], object]  # the project call that must refuse it
    error: str  # exception class name
    match: str  # regular expression the message must contain
    tweak: dict[str, int] = field(
        default_factory=dict
    )  # data-stage bounds lowered in the child (see bounded.py)
    forbid: tuple[str, ...] = ()  # text the message must not contain (secrets, signs of execution)
    after: Callable[[Path], None] | None = None  # more checks on the scratch folder afterwards


class FakeStore:
    """The few ArtifactStore methods the data stage and weights call before validating what they read.
    `objects` maps a key (or a key predicate) to what get_json returns; anything else fails the test."""

    def __init__(self, objects: Callable[[str], Any] | None = None):
        self.objects = objects or (lambda key: None)

    def exists(self, key: str) -> bool:
        return self.objects(key) is not None

    def get_json(self, key: str) -> Any:
        return self.objects(key)

    def uri(self, key: str) -> str:
        return f"s3://hostile-test/{key}"

    def _unexpected(self, *args, **kwargs):
        raise AssertionError("the store was used past validation")

    download = upload = fetch_uri = put_json = put_bytes = _unexpected


# ── builders ───────────────────────────────────────────────────────────────────


def _python_batches(
    replace: Callable[[str, bytes], bytes] | None = None, **kwargs
) -> Callable[[Path], Path]:
    """A tiny official-layout tarball whose data_batch_1 (or any member `replace` picks) is replaced."""

    def build(folder: Path) -> Path:
        return cifar_python_tarball(
            folder / "cifar-10-python.tar.gz", per_batch=1, test=1, payload_hook=replace, **kwargs
        )

    return build


def _batch(obj: object, protocol: int = 2) -> Callable[[str, bytes], bytes]:
    payload = obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=protocol)
    return lambda name, original: payload if name == "data_batch_1" else original


def _folders(
    override: bytes, member_name: str = "data/train/cat/0001.png", **kwargs
) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        return image_folder_tarball(
            folder / "folders.tar.gz",
            per_class=2,
            test_per_class=1,
            overrides={member_name: override},
            **kwargs,
        )

    return build


def _tar(
    *members, raw: bytes | None = None, fmt: int = tarfile.GNU_FORMAT
) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        path = folder / "hostile.tar.gz"
        if raw is not None:
            import gzip

            path.write_bytes(gzip.compress(raw + b"\0" * 1024))
            return path
        return tar_of(path, members, format=fmt)

    return build


class _Exec:
    """Pickles as a call of `func(*args)`: what an attacker's batch would run."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _marker_command(folder: Path) -> str:
    return f"touch {folder / MARKER}"


def _no_marker(folder: Path) -> None:
    assert not (folder / MARKER).exists(), "the pickle ran code"


def _exec_batch(func_name: str) -> Callable[[Path], Path]:
    def build(folder: Path) -> Path:
        import builtins

        func = os.system if func_name == "os.system" else getattr(builtins, func_name)
        arg = (
            _marker_command(folder)
            if func_name == "os.system"
            else f"open({str(folder / MARKER)!r}, 'w')"
        )
        return _python_batches(_batch({b"data": _Exec(func, arg), b"labels": []}))(folder)

    return build


def _ps_as_jpeg() -> bytes:
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n%%EndComments\n"
        b"(" + str(MARKER).encode() + b") (w) file closefile showpage\n%%EOF\n"
    )


def _tiff() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, "TIFF")
    return buf.getvalue()


def _decode_without_ghostscript(path: Path) -> object:
    """decode_archive with Pillow's Ghostscript call replaced by a tripwire."""
    from PIL import EpsImagePlugin

    def tripwire(*args, **kwargs):
        raise RuntimeError("GHOSTSCRIPT WAS CALLED")

    EpsImagePlugin.Ghostscript = tripwire
    return decoding.decode_archive(path)


def _opcodes(body: bytes, protocol: int = 4) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


def _data_dict(value_ops: bytes) -> bytes:
    """{b"data": <value_ops>} at protocol 3: EMPTY_DICT, SHORT_BINBYTES key, value, SETITEM."""
    return _opcodes(b"}" + b"C\x04data" + value_ops + b"s", protocol=3)


SMALL = SplitSpec(protocol="sizes", train=10, val=10, test=10)
SHA = "ab" * 32


def _ref(folder: Path, **changes) -> data.DatasetRef:
    prefix = layout.splits_prefix("cifar-10-python", SHA, "0123456789abcdef")
    files = {
        s: {"key": layout.split_file_key(prefix, s), "sha256": SHA, "bytes": 1} for s in data.SPLITS
    }
    ref = dict(
        name="cifar-10-python",
        synthetic=False,
        source="x",
        archive_sha256=SHA,
        prefix=prefix,
        class_names=list(CIFAR10_CLASSES),
        sizes={s: 1 for s in data.SPLITS},
        files=files,
        normalisation={},
    )
    for key, value in changes.items():
        if key.startswith("train_"):
            files["train"][key.removeprefix("train_")] = value
        else:
            ref[key] = value
    return data.DatasetRef(**ref)


def _load_split(arg: tuple[data.DatasetRef, Path]) -> object:
    ref, folder = arg
    return data.load_split(ref, "train", FakeStore(), folder / "cache")


def _nothing_outside(folder: Path) -> None:
    for name in ("evil", "escaped.png", MARKER, "passwd"):
        assert not (folder.parent / name).exists() and not (folder / name).exists(), (
            f"{name} was written"
        )


def _tampered_prepared(folder: Path) -> tuple[str, FakeStore, Path]:
    archive = cifar_python_tarball(folder / "cifar-10-python.tar.gz", per_batch=1, test=1)

    def objects(key: str):
        if key.endswith("prepared.json"):
            prefix = key.removesuffix("prepared.json")
            ref = _ref(folder).model_dump()
            ref["prefix"] = prefix
            ref["name"] = prefix.split("/")[1]
            ref["files"] = {
                s: {"key": layout.split_file_key(prefix, s), "sha256": SHA} for s in data.SPLITS
            }
            ref["files"]["train"]["key"] = prefix + "../../../../../../etc/passwd"
            return ref
        return None

    return str(archive), FakeStore(objects), folder / "cache"


def _index_store(entry: dict) -> Callable[[Path], tuple[FakeStore, Path]]:
    def build(folder: Path) -> tuple[FakeStore, Path]:
        return FakeStore(
            lambda key: entry if key.startswith("datasets/_sources/") else None
        ), folder / "cache"

    return build


def _fetch_from_index(arg: tuple[FakeStore, Path]) -> object:
    store, cache = arg
    return sources.fetch_archive(
        sources.Source("url", "https://example.com/cifar-10-python.tar.gz"),
        store,
        cache,
        expected_sha256=None,
    )


def _fifo(folder: Path) -> Path:
    os.mkfifo(folder / "pipe.tar.gz")
    return folder / "pipe.tar.gz"


def _download(url: str) -> Callable[[Path], object]:
    return lambda folder: download_url(url, folder / "out.bin", timeout=2)


def _with_env(name: str, value: str, call: Callable[[], object]) -> object:
    os.environ[name] = value
    os.environ.pop("COMPARE_MODELS_ALLOW_PRIVATE_URLS", None)
    return call()


def _private_env(call: Callable[[], object]) -> object:
    os.environ.pop("COMPARE_MODELS_ALLOW_PRIVATE_URLS", None)
    return call()


BATCH_HEADER = raw_header(
    f"{BATCH_DIR}/data_batch_1", tarfile.REGTYPE, tar_stream.MAX_BATCH_BYTES + 1
)
PASSWORD = "s3cret-Pa55"

CASES: tuple[Case, ...] = (
    # ── pickled batches (official layout) ──
    Case(
        "pickle-nested-shared-lists",
        "a few hundred bytes of memo-shared nested lists (4**28 elements if walked) as "
        "b'data' and b'labels': types are checked before any numpy conversion",
        _python_batches(_batch({b"data": nested_shared_lists(), b"labels": nested_shared_lists()})),
        decoding.decode_archive,
        "DataError",
        r"b'data' must be a uint8 array of shape \(N, 3072\).*found a list of 4 items",
    ),
    Case(
        "pickle-global-os-system",
        "a batch that calls os.system when unpickled: refused by name, nothing runs",
        _exec_batch("os.system"),
        decoding.decode_archive,
        "DataError",
        r"refusing to unpickle (posix|os)\.system",
        after=_no_marker,
    ),
    Case(
        "pickle-global-builtins-eval",
        "a batch that calls builtins.eval: refused by name, nothing runs",
        _exec_batch("eval"),
        decoding.decode_archive,
        "DataError",
        r"refusing to unpickle (__builtin__|builtins)\.eval",
        after=_no_marker,
    ),
    Case(
        "pickle-ndarray-constructor",
        "numpy.ndarray((60000, 3072)) called directly (uninitialised memory, no data "
        "behind it): only numpy's own reconstruction may make arrays",
        _python_batches(
            _batch(
                _data_dict(
                    b"cnumpy\nndarray\nJ"
                    + struct.pack("<i", 60000)
                    + b"M"
                    + struct.pack("<H", 3072)
                    + b"\x86\x85R"
                )
            )
        ),
        decoding.decode_archive,
        "DataError",
        r"data_batch_1 is corrupt \(TypeError",
    ),
    Case(
        "pickle-object-dtype",
        "an object-dtype array (any object inside): only plain numeric dtypes are accepted",
        _python_batches(_batch({b"data": np.array([1, "x"], dtype=object), b"labels": [0]})),
        decoding.decode_archive,
        "DataError",
        r"refusing to unpickle a numpy dtype 'O8'",
    ),
    Case(
        "pickle-memo-index-bomb",
        "LONG_BINPUT 2**28 (the C unpickler would allocate and zero a 4 GiB memo table; 2**26 measured +1 GiB): refused "
        "while walking the opcodes",
        _python_batches(_batch(_opcodes(b"N" + b"r" + struct.pack("<I", 1 << 28)))),
        decoding.decode_archive,
        "DataError",
        r"pickle memo index of 268435456",
    ),
    Case(
        "pickle-declared-length-bomb",
        "BINBYTES8 declaring 1 TiB in a 20-byte pickle: found truncated, nothing allocated",
        _python_batches(_batch(_opcodes(b"\x8e" + struct.pack("<Q", 1 << 40) + b"abc"))),
        decoding.decode_archive,
        "DataError",
        r"data_batch_1 is corrupt",
    ),
    Case(
        "pickle-too-many-opcodes",
        "a batch of more pickle opcodes than its images need (bound lowered to 1,000 in "
        "the child): the object count is bounded",
        _python_batches(_batch({b"labels": list(range(3000))})),
        decoding.decode_archive,
        "DataError",
        r"more than 1000 pickle operations",
        tweak={"MAX_PICKLE_OPS": 1000},
    ),
    Case(
        "batch-wrong-dtype",
        "b'data' as float32 (N, 3072)",
        _python_batches(_batch({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]})),
        decoding.decode_archive,
        "DataError",
        r"found a float32 array of shape \(1, 3072\)",
    ),
    Case(
        "batch-wrong-shape",
        "b'data' as uint8 (N, 1024) (grey 32x32 images)",
        _python_batches(_batch({b"data": np.zeros((1, 1024), np.uint8), b"labels": [0]})),
        decoding.decode_archive,
        "DataError",
        r"found a uint8 array of shape \(1, 1024\)",
    ),
    Case(
        "batch-labels-not-ints",
        "b'labels' holding strings",
        _python_batches(_batch({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]})),
        decoding.decode_archive,
        "DataError",
        r"b'labels' must be a list \(or 1-D integer array\) of 1 integers",
    ),
    Case(
        "batch-labels-wrong-length",
        "more labels than images",
        _python_batches(labels_hook=lambda name, labels: labels + [0]),
        decoding.decode_archive,
        "DataError",
        r"b'labels' must be a list .* of 1 integers.*found a list of 2 items",
    ),
    Case(
        "batch-meta-not-cifar10",
        "batches.meta naming ten other classes: the archive is not CIFAR-10",
        _python_batches(meta={b"label_names": [f"thing{i}".encode() for i in range(10)]}),
        decoding.decode_archive,
        "DataError",
        r"batches.meta names the classes .*a CIFAR-10 archive names exactly airplane, automobile",
    ),
    Case(
        "batch-member-oversized",
        "a batch member declaring more than a 60,000-image batch can be (header only)",
        _tar(raw=BATCH_HEADER),
        decoding.decode_archive,
        "DataError",
        r"more than the .* allowed for a CIFAR-10 batch",
    ),
    # ── tar structure ──
    Case(
        "member-declares-4gib",
        "a ~200-byte archive whose image member declares 4 GiB: refused from its header",
        _tar(member("data/train/cat/0000.png", size=4 << 30)),
        decoding.decode_archive,
        "DataError",
        r"declares 4096.0 MiB, more than the 64 KiB allowed for an image",
    ),
    Case(
        "gz-bomb-member",
        "a real 16 MiB member of zeros (16 KiB compressed): refused from its header, never inflated",
        _tar(member("data/README.txt", data=b"\0" * (16 << 20))),
        decoding.decode_archive,
        "DataError",
        r"declares 16.0 MiB, more than the 1.0 MiB allowed for any other file",
    ),
    Case(
        "gz-stream-budget",
        "members within their caps whose sum inflates past the stream budget (lowered to 2 MiB)",
        _tar(*[member(f"data/extra{i}.bin", data=b"\0" * (900 << 10)) for i in range(4)]),
        decoding.decode_archive,
        "DataError",
        r"decompresses to more than 2.0 MiB",
        tweak={"MAX_STREAM_BYTES": 2 << 20},
    ),
    Case(
        "total-declared-size",
        "members whose declared sizes add up past the total (lowered to 1 MiB)",
        _tar(*[member(f"data/extra{i}.bin", data=b"\0" * (900 << 10)) for i in range(2)]),
        decoding.decode_archive,
        "DataError",
        r"declares more than 1.0 MiB of files",
        tweak={"MAX_TOTAL_BYTES": 1 << 20},
    ),
    Case(
        "image-member-oversized",
        "a 100 KiB image file (a 32x32 image needs at most ~12 KiB)",
        _tar(member("data/train/cat/0000.png", data=b"\0" * (100 << 10))),
        decoding.decode_archive,
        "DataError",
        r"declares 100 KiB, more than the 64 KiB allowed for an image",
    ),
    Case(
        "too-many-members",
        "more members than allowed (bound lowered to 50): counted while reading headers",
        _tar(*[member(f"d{i}/", type=tarfile.DIRTYPE) for i in range(60)]),
        decoding.decode_archive,
        "DataError",
        r"more than 50 members",
        tweak={"MAX_MEMBERS": 50},
    ),
    Case(
        "pax-header-bomb",
        "a pax extended header declaring 512 MiB: refused before tarfile reads it into memory",
        _tar(raw=raw_header("././@PaxHeader", tarfile.XHDTYPE, 512 << 20)),
        decoding.decode_archive,
        "DataError",
        r"has a 512.0 MiB extended header",
    ),
    Case(
        "gnu-longname-bomb",
        "a GNU long-name header declaring 100 MiB",
        _tar(raw=raw_header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 100 << 20)),
        decoding.decode_archive,
        "DataError",
        r"has a 100.0 MiB extended header",
    ),
    Case(
        "long-member-name",
        "a 2,000-character member name (pax path)",
        _tar(member("data/" + "a" * 1995, data=b"x"), fmt=tarfile.PAX_FORMAT),
        decoding.decode_archive,
        "DataError",
        r"2000-character name",
    ),
    Case(
        "sparse-gnu-member",
        "an old-GNU sparse member",
        _tar(member("data/train/cat/0000.png", type=tarfile.GNUTYPE_SPARSE, size=512)),
        decoding.decode_archive,
        "DataError",
        r"is a sparse file",
    ),
    Case(
        "sparse-pax-member",
        "a pax (GNU 1.0) sparse member",
        _tar(
            member(
                "data/train/cat/0000.png",
                data=b"\0" * 512,
                pax={
                    "GNU.sparse.major": "1",
                    "GNU.sparse.minor": "0",
                    "GNU.sparse.name": "data/train/cat/0000.png",
                    "GNU.sparse.realsize": str(1 << 40),
                },
            ),
            fmt=tarfile.PAX_FORMAT,
        ),
        decoding.decode_archive,
        "DataError",
        r"is a sparse file",
    ),
    Case(
        "symlink-member",
        "an image that is a symbolic link to /etc/passwd",
        _tar(member("data/train/cat/0000.png", type=tarfile.SYMTYPE, linkname="/etc/passwd")),
        decoding.decode_archive,
        "DataError",
        r"is a symbolic link",
    ),
    Case(
        "hardlink-member",
        "an image that is a hard link to /etc/passwd",
        _tar(member("data/train/cat/0000.png", type=tarfile.LNKTYPE, linkname="/etc/passwd")),
        decoding.decode_archive,
        "DataError",
        r"is a hard link",
    ),
    Case(
        "device-member",
        "a character-device member (/dev/zero's numbers)",
        _tar(member("data/train/cat/0000.png", type=tarfile.CHRTYPE)),
        decoding.decode_archive,
        "DataError",
        r"is a character device",
    ),
    Case(
        "fifo-member",
        "a FIFO member",
        _tar(member("data/train/cat/0000.png", type=tarfile.FIFOTYPE)),
        decoding.decode_archive,
        "DataError",
        r"is a FIFO",
    ),
    Case(
        "path-traversal-dotdot",
        "a member named ../escaped.png: refused, nothing written anywhere",
        _tar(member("../escaped.png", data=png_bytes())),
        decoding.decode_archive,
        "DataError",
        r"'../escaped.png' has an unsafe path",
        after=_nothing_outside,
    ),
    Case(
        "path-traversal-absolute",
        "a member named /tmp/evil",
        _tar(member("/tmp/evil", data=b"x")),
        decoding.decode_archive,
        "DataError",
        r"has an unsafe path",
    ),
    # ── images ──
    Case(
        "postscript-named-jpg",
        "PostScript content named .jpg: Pillow may open only PNG/JPEG/BMP/WEBP, so "
        "Ghostscript is never run",
        _folders(_ps_as_jpeg(), "data/train/cat/0001.jpg", fmt="JPEG"),
        _decode_without_ghostscript,
        "DataError",
        r"image data/train/cat/0001.jpg is corrupt or not an image .*accepted formats are PNG, JPEG",
        forbid=("GHOSTSCRIPT",),
        after=_no_marker,
    ),
    Case(
        "tiff-named-png",
        "a TIFF named .png (a format outside the accepted four)",
        _folders(_tiff()),
        decoding.decode_archive,
        "DataError",
        r"is corrupt or not an image",
    ),
    Case(
        "png-decompression-bomb",
        "a ~100-byte PNG declaring 20000x20000 (Pillow's DecompressionBombError)",
        _folders(png_header_only(20000, 20000)),
        decoding.decode_archive,
        "DataError",
        r"image data/train/cat/0001.png declares an enormous size \(a decompression bomb\)",
    ),
    Case(
        "png-decompression-bomb-warning",
        "a PNG declaring 10000x10000 (Pillow only warns): the warning is an error",
        _folders(png_header_only(10000, 10000)),
        decoding.decode_archive,
        "DataError",
        r"a decompression bomb",
    ),
    Case(
        "png-large-dimensions",
        "a PNG declaring 4000x4000 (under Pillow's limits): refused from its header, never decoded",
        _folders(png_header_only(4000, 4000, bit_depth=8, color_type=2)),
        decoding.decode_archive,
        "DataError",
        r"image data/train/cat/0001.png is 4000x4000; expected 32x32",
    ),
    Case(
        "png-wrong-size",
        "a real 64x48 PNG",
        _folders(png_bytes((64, 48))),
        decoding.decode_archive,
        "DataError",
        r"is 64x48; expected 32x32",
    ),
    Case(
        "class-folders-not-cifar10",
        "ten class folders with other names (accepted in sorted order before)",
        lambda folder: image_folder_tarball(
            folder / "x.tar.gz",
            per_class=1,
            test_per_class=1,
            classes=tuple(f"thing{i}" for i in range(10)),
        ),
        decoding.decode_archive,
        "DataError",
        r"are not CIFAR-10 classes; the image folders must be named exactly: airplane",
    ),
    Case(
        "class-folders-eleven",
        "eleven class folders",
        lambda folder: image_folder_tarball(
            folder / "x.tar.gz",
            per_class=1,
            test_per_class=1,
            classes=(*CIFAR10_CLASSES, "unicorn"),
        ),
        decoding.decode_archive,
        "DataError",
        r"found 11 class folders .*expected 10: airplane",
    ),
    # ── sources ──
    Case(
        "data-dev-zero",
        "--data /dev/zero (endless): refused as not a regular file",
        lambda folder: "/dev/zero",
        sources.resolve_source,
        "DataError",
        r"is a character device, not a regular file",
    ),
    Case(
        "data-fifo",
        "--data a FIFO (would block a reader forever)",
        lambda folder: str(_fifo(folder)),
        sources.resolve_source,
        "DataError",
        r"is a FIFO \(named pipe\), not a regular file",
    ),
    Case(
        "decode-fifo",
        "decode_archive on a FIFO: refused without blocking",
        _fifo,
        decoding.decode_archive,
        "DataError",
        r"is a FIFO \(named pipe\), not a regular file",
    ),
    Case(
        "data-folder",
        "--data a folder",
        lambda folder: str(folder),
        sources.resolve_source,
        "DataError",
        r"is a folder, not a regular file",
    ),
    Case(
        "url-with-credentials",
        "an https URL with user:password@: refused, the password never echoed",
        lambda folder: f"https://alice:{PASSWORD}@example.com/cifar-10-python.tar.gz",
        sources.resolve_source,
        "DataError",
        r"refusing https://example.com/cifar-10-python.tar.gz given with credentials",
        forbid=(PASSWORD, "alice"),
    ),
    Case(
        "url-loopback",
        "a data URL on 127.0.0.1 (the local S3, Prefect API): refused by default, with the setting named",
        lambda folder: ("http://127.0.0.1:8333/bucket/cifar.tar.gz", folder / "c.tar.gz"),
        lambda arg: _private_env(lambda: sources._download(*arg)),
        "DataError",
        r"127.0.0.1 is a loopback address.*COMPARE_MODELS_ALLOW_PRIVATE_URLS=1",
    ),
    Case(
        "url-cloud-metadata",
        "http://169.254.169.254/ (cloud metadata endpoint)",
        lambda folder: folder,
        _download("http://169.254.169.254/latest/meta-data/"),
        "UnsafeURLError",
        r"169.254.169.254 is a link-local address",
    ),
    Case(
        "url-private-network",
        "http://10.0.0.1/ (a private network)",
        lambda folder: folder,
        _download("http://10.0.0.1/cifar.tar.gz"),
        "UnsafeURLError",
        r"10.0.0.1 is a private address",
    ),
    Case(
        "url-ipv6-loopback",
        "http://[::1]/",
        lambda folder: folder,
        _download("http://[::1]:8333/x"),
        "UnsafeURLError",
        r"::1 is a loopback address",
    ),
    Case(
        "url-ipv4-mapped-loopback",
        "http://[::ffff:127.0.0.1]/ (IPv4-mapped IPv6)",
        lambda folder: folder,
        _download("http://[::ffff:127.0.0.1]:8333/x"),
        "UnsafeURLError",
        r"is a loopback address",
    ),
    Case(
        "url-localhost-name",
        "http://localhost/ (a name resolving to loopback)",
        lambda folder: folder,
        _download("http://localhost:9/x"),
        "UnsafeURLError",
        r"localhost \(.*\) is a loopback address",
    ),
    Case(
        "url-unspecified",
        "http://0.0.0.0/",
        lambda folder: folder,
        _download("http://0.0.0.0:8333/x"),
        "UnsafeURLError",
        r"0.0.0.0 is a (unspecified|private) address",
    ),
    Case(
        "url-file-scheme",
        "file:///etc/passwd",
        lambda folder: folder,
        _download("file:///etc/passwd"),
        "UnsafeURLError",
        r"refusing file URL file:///etc/passwd: only http:// and https://",
    ),
    # ── metadata read back from S3 ──
    Case(
        "prepared-key-outside-prefix",
        "a DatasetRef (prepared.json) whose train key is another run's object",
        lambda folder: (_ref(folder, train_key="runs/other/models/cnn.keras"), folder),
        _load_split,
        "DataError",
        r"prepared dataset .* is malformed: its train file key 'runs/other/models/cnn.keras' is not",
    ),
    Case(
        "prepared-key-dotdot",
        "a DatasetRef whose train key climbs out with ..",
        lambda folder: (
            _ref(folder, train_key=_ref(folder).prefix + "../../../../../../passwd"),
            folder,
        ),
        _load_split,
        "DataError",
        r"is malformed: its train file key",
        after=_nothing_outside,
    ),
    Case(
        "prepared-prefix-dotdot",
        "a DatasetRef whose prefix is ../../..",
        lambda folder: (_ref(folder, prefix="../../../"), folder),
        _load_split,
        "DataError",
        r"the dataset reference is malformed: its prefix '../../../' is not a splits prefix",
    ),
    Case(
        "prepared-json-tampered",
        "prepare_dataset reusing a prepared.json whose train key points at ../../etc/passwd",
        _tampered_prepared,
        lambda arg: data.prepare_dataset(arg[0], SMALL, arg[1], arg[2]),
        "DataError",
        r"prepared dataset datasets/cifar-10-python/.*/prepared.json is malformed: its train file key",
    ),
    Case(
        "source-index-traversal-filename",
        "a source index json whose filename is ../../../../evil",
        _index_store(
            {"sha256": SHA, "filename": "../../../../evil", "raw_key": "datasets/x/raw/evil"}
        ),
        _fetch_from_index,
        "DataError",
        r"the source index .* is malformed",
        after=_nothing_outside,
    ),
    Case(
        "source-index-foreign-raw-key",
        "a source index json whose raw_key is another run's object",
        _index_store(
            {
                "sha256": SHA,
                "filename": "cifar-10-python.tar.gz",
                "raw_key": "runs/other/models/cnn.keras",
            }
        ),
        _fetch_from_index,
        "DataError",
        r"the source index .* is malformed",
    ),
    Case(
        "source-index-bad-sha",
        "a source index json whose sha256 is ../..",
        _index_store(
            {"sha256": "../..", "filename": "c.tar.gz", "raw_key": "datasets/c/../../raw/c.tar.gz"}
        ),
        _fetch_from_index,
        "DataError",
        r"the source index .* is malformed",
    ),
    # ── weights ──
    Case(
        "weights-key-traversal",
        "local_weights with a key climbing out of the cache",
        lambda folder: (f"weights/sha256/{SHA}/../../../../../../passwd", folder),
        lambda arg: weights.local_weights(arg[0], FakeStore(), arg[1] / "cache"),
        "WeightsError",
        r"refusing the weights key",
        after=_nothing_outside,
    ),
    Case(
        "weights-dev-zero",
        "--resnet-weights /dev/zero",
        lambda folder: folder,
        lambda folder: weights.resolve_resnet_weights(
            "/dev/zero", FakeStore(), folder / "cache", Settings()
        ),
        "WeightsError",
        r"is not a regular file",
    ),
    Case(
        "weights-url-credentials",
        "an ImageNet weights URL with credentials",
        lambda folder: folder,
        lambda folder: _with_env(
            "COMPARE_MODELS_IMAGENET_WEIGHTS_URL",
            f"https://bob:{PASSWORD}@example.com/w_notop.h5",
            lambda: weights.resolve_resnet_weights(
                "imagenet", FakeStore(), folder / "cache", Settings()
            ),
        ),
        "WeightsError",
        r"given with credentials",
        forbid=(PASSWORD, "bob"),
    ),
    Case(
        "weights-url-metadata",
        "an ImageNet weights URL on 169.254.169.254",
        lambda folder: folder,
        lambda folder: _with_env(
            "COMPARE_MODELS_IMAGENET_WEIGHTS_URL",
            "http://169.254.169.254/w_notop.h5",
            lambda: weights.resolve_resnet_weights(
                "imagenet", FakeStore(), folder / "cache", Settings()
            ),
        ),
        "WeightsError",
        r"169.254.169.254 is a link-local address",
    ),
)
