"""Data stage: each source format built on the fly, every bad input named."""

from __future__ import annotations

import os
import tarfile

import numpy as np
import pytest

from compare_models.config import CIFAR10_CLASSES, SplitSpec
from compare_models.data.dataset import (
    indices_sha256,
    make_splits,
    normalisation_stats,
    split_indices,
)
from compare_models.data.decoding import decode_archive, synthetic_data
from compare_models.data.errors import DataError
from compare_models.data.sources import resolve_source
from tests.support.archives import cifar_python_tarball, image_folder_tarball, images, png_bytes

SMALL = SplitSpec(protocol="sizes", train=60, val=30, test=20)


# ── decoding (no services) ─────────────────────────────────────────────────


def test_decodes_the_official_python_layout(tmp_path):
    d = decode_archive(cifar_python_tarball(tmp_path / "cifar-10-python.tar.gz"))
    assert d.layout == "cifar10-python"
    assert d.x_train.shape == (100, 32, 32, 3) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (30, 32, 32, 3)
    assert d.class_names == CIFAR10_CLASSES
    x, y = images(20, seed=0)  # data_batch_1 was made from these: CHW -> HWC round trip
    np.testing.assert_array_equal(d.x_train[:20], x)
    np.testing.assert_array_equal(d.y_train[:20], y)


@pytest.mark.parametrize("protocol", [2, 5])
def test_decodes_python3_repacks_of_the_official_layout(tmp_path, protocol):
    """A re-pack by Python 3: at protocol 2 numpy pickles its bytes through `_codecs.encode` (allowed for
    latin-1 text only); at protocol 5 through `numpy._core.numeric._frombuffer`."""
    d = decode_archive(cifar_python_tarball(tmp_path / "cifar-10-python.tar.gz", protocol=protocol))
    reference = decode_archive(cifar_python_tarball(tmp_path / "reference.tar.gz"))
    np.testing.assert_array_equal(d.x_train, reference.x_train)
    np.testing.assert_array_equal(d.y_test, reference.y_test)
    assert d.class_names == CIFAR10_CLASSES


def test_labels_may_be_an_integer_array(tmp_path):
    path = cifar_python_tarball(
        tmp_path / "cifar.tar.gz", labels_hook=lambda name, labels: np.array(labels, np.uint8)
    )
    assert decode_archive(path).y_train.dtype == np.int64


def test_decodes_class_named_image_folders(tmp_path):
    d = decode_archive(image_folder_tarball(tmp_path / "folders.tar.gz"))
    assert d.layout == "image-folders"
    assert d.x_train.shape == (40, 32, 32, 3) and d.x_test.shape == (20, 32, 32, 3)
    assert d.class_names == CIFAR10_CLASSES  # canonical order, not alphabetical
    first_cat = int(np.flatnonzero(d.y_train == CIFAR10_CLASSES.index("cat"))[0])
    assert d.x_train[first_cat, 0, 0, 0] == 3 * 25  # pixel value encodes the class folder


def test_decodes_jpeg_folders(tmp_path):
    d = decode_archive(image_folder_tarball(tmp_path / "jpeg.tar.gz", fmt="JPEG"))
    assert d.x_train.shape == (40, 32, 32, 3)


def test_corrupt_image_is_named(tmp_path):
    bad = "data/train/bird/0001.png"
    path = image_folder_tarball(tmp_path / "bad.tar.gz", overrides={bad: b"not a png at all"})
    with pytest.raises(DataError, match=f"image {bad} is corrupt"):
        decode_archive(path)


def test_wrong_image_size_is_named(tmp_path):
    bad = "data/test/ship/0000.png"
    path = image_folder_tarball(tmp_path / "big.tar.gz", overrides={bad: png_bytes((64, 48))})
    with pytest.raises(DataError, match=f"image {bad} is 64x48; expected 32x32"):
        decode_archive(path)


def test_grayscale_image_is_named(tmp_path):
    bad = "data/train/dog/0002.png"
    path = image_folder_tarball(tmp_path / "gray.tar.gz", overrides={bad: png_bytes(mode="L")})
    with pytest.raises(DataError, match=f"image {bad} has mode L; expected RGB"):
        decode_archive(path)


def test_wrong_class_count(tmp_path):
    path = image_folder_tarball(tmp_path / "nine.tar.gz", classes=CIFAR10_CLASSES[:9])
    with pytest.raises(
        DataError, match="found 9 class folders .*expected 10: airplane, automobile"
    ):
        decode_archive(path)


def test_class_folders_must_be_the_cifar10_names(tmp_path):
    """Changed deliberately: any ten folder names used to be accepted (labelled in sorted order)."""
    other = tuple(f"class{i}" for i in range(10))
    path = image_folder_tarball(tmp_path / "other.tar.gz", classes=other)
    with pytest.raises(
        DataError,
        match=r"class folders \[.*'class0'.*\] are not CIFAR-10 classes.*exactly: airplane",
    ):
        decode_archive(path)


def test_labels_out_of_range(tmp_path):
    def break_labels(name, labels):
        return (
            [12 if i == 3 else v for i, v in enumerate(labels)]
            if name == "data_batch_2"
            else labels
        )

    path = cifar_python_tarball(tmp_path / "labels.tar.gz", labels_hook=break_labels)
    with pytest.raises(DataError, match=r"train labels out of range: found \[12\]; expected 0..9"):
        decode_archive(path)


def test_unknown_archive_layout(tmp_path):
    path = tmp_path / "other.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(__file__, arcname="something/else.py")
    with pytest.raises(DataError, match="unknown archive layout"):
        decode_archive(path)


def test_corrupt_archive(tmp_path):
    good = image_folder_tarball(tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(good[: len(good) // 2])
    (tmp_path / "junk.tar.gz").write_bytes(b"\x00" * 1000 + b"junk")
    for name in ("cut.tar.gz", "junk.tar.gz"):
        with pytest.raises(DataError, match="archive"):
            decode_archive(tmp_path / name)


def test_pickles_cannot_run_code(tmp_path):
    import io
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in ("batches.meta", "data_batch_1"):
            payload = pickle.dumps(Evil())
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    with pytest.raises(DataError, match="refusing to unpickle"):
        decode_archive(path)


# ── splits and normalisation ───────────────────────────────────────────────


def test_splits_are_stratified_disjoint_and_reproducible():
    d = synthetic_data(1000, seed=1)
    spec = SplitSpec(protocol="sizes", train=500, val=300, test=100, seed=7)
    a, b = make_splits(d, split_indices(d, spec)), make_splits(d, split_indices(d, spec))
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a[split][1], b[split][1])
    assert [len(a[s][1]) for s in ("train", "val", "test")] == [500, 300, 100]
    assert np.bincount(a["train"][1]).tolist() == [50] * 10
    other = make_splits(d, split_indices(d, spec.model_copy(update={"seed": 8})))
    assert not np.array_equal(a["train"][1], other["train"][1])
    assert indices_sha256(split_indices(d, spec)) == indices_sha256(split_indices(d, spec))
    assert indices_sha256(split_indices(d, spec)) != indices_sha256(
        split_indices(d, spec.model_copy(update={"seed": 8}))
    )
    # train and val come from disjoint images of the archive's training set
    rows = lambda x: {r.tobytes() for r in x.reshape(len(x), -1)}  # noqa: E731
    assert not rows(a["train"][0]) & rows(a["val"][0])


def test_split_larger_than_the_data():
    d = synthetic_data(100)
    with pytest.raises(
        DataError, match="needs 16250 train \\+ 8750 validation = 25000 images, but .* has 100"
    ):
        split_indices(d, SplitSpec(protocol="seed"))
    with pytest.raises(DataError, match="asks for 999 test images"):
        split_indices(d, SplitSpec(protocol="sizes", train=10, val=10, test=999))


def test_normalisation_scales_to_unit_range():
    stats = normalisation_stats(np.full((4, 32, 32, 3), 255, np.uint8))
    assert stats["scale"] == pytest.approx(1 / 255) and stats["range"] == [0.0, 1.0]
    assert stats["train_channel_mean"] == [1.0, 1.0, 1.0] and stats["train_channel_std"] == [
        0.0,
        0.0,
        0.0,
    ]


def test_resolve_source_errors(tmp_path):
    assert resolve_source("cifar10").kind == "url"
    assert resolve_source("synthetic:500").synthetic_size == 500
    with pytest.raises(DataError, match="neither"):
        resolve_source(str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataError, match="synthetic size"):
        resolve_source("synthetic:lots")
    with pytest.raises(DataError, match="is a character device, not a regular file"):
        resolve_source("/dev/zero")
    with pytest.raises(DataError, match="given with credentials") as info:
        resolve_source("https://me:hunter2@example.com/cifar-10-python.tar.gz")
    assert "hunter2" not in str(info.value)


def test_a_local_folder_reader_reads_whole_files_within_the_limit(tmp_path):
    from compare_models.data.folders import FolderReader, folder_source

    (tmp_path / "a").mkdir()
    for name, size in (("empty.png", 0), ("fits.png", 100), ("over.png", 101)):
        (tmp_path / "a" / name).write_bytes(bytes(range(size)))
    (tmp_path / "a" / "link.png").symlink_to(tmp_path / "a" / "fits.png")
    reader = FolderReader(folder_source(str(tmp_path)), None, max_bytes=100)
    assert reader.read("a/empty.png") == b""
    assert reader.read("a/fits.png") == bytes(range(100))
    with pytest.raises(DataError, match="grew beyond"):
        reader.read("a/over.png")
    with pytest.raises(OSError):  # a link is never followed (O_NOFOLLOW)
        reader.read("a/link.png")
    # a file larger than its first read (it grew after fstat, or the reads come short) is read
    # to its end in chunks, and refused one byte past the limit
    import compare_models.data.folders as folders

    big = bytes(range(256)) * 400  # 102,400 bytes
    (tmp_path / "a" / "big.png").write_bytes(big)
    large = FolderReader(folder_source(str(tmp_path)), None, max_bytes=len(big))
    real_fstat = os.fstat
    with pytest.MonkeyPatch.context() as patched:  # as if the file had been 10 bytes at fstat
        patched.setattr(folders.os, "fstat", lambda fd: _sized(real_fstat(fd), 10))
        assert large.read("a/big.png") == big
        with pytest.raises(DataError, match="grew beyond"):
            FolderReader(folder_source(str(tmp_path)), None, max_bytes=len(big) - 1).read(
                "a/big.png"
            )


def _sized(info, size):
    """`info` (an os.stat_result) saying `size` bytes."""
    fields = list(info)
    fields[6] = size  # st_size
    return os.stat_result(fields)
