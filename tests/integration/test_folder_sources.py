"""Folders of labelled images as a data source, against the real local S3: dataset versions,
incremental snapshots, hash splits that stay put as the data grows, duplicates, skipped files
and the policy that refuses a run."""

from __future__ import annotations

import pytest

from compare_models.config import FolderPolicy, SplitSpec
from compare_models.data.dataset import load_split, prepare_folder
from compare_models.data.errors import DataError
from compare_models.data.folders import folder_source
from compare_models.data.snapshot import snapshot
from compare_models.data.versions import list_versions, read_version
from compare_models.storage import layout
from tests.support.archives import class_image, image_folder_files

pytestmark = pytest.mark.integration

CLASSES = ("ant", "bee", "cat")
HASH = SplitSpec(protocol="hash")


def _upload(store, prefix: str, files: dict[str, bytes]) -> None:
    for key, payload in files.items():
        store.put_bytes(payload, prefix + key, overwrite=True)


class CountingReads:
    """Counts the GetObject calls of a boto3 client (a real event hook, no mock)."""

    def __init__(self, client):
        self.count = 0
        client.meta.events.register("before-call.s3.GetObject", self._count)

    def _count(self, **_):
        self.count += 1


def test_an_s3_prefix_is_versioned_and_an_unchanged_one_reads_nothing(stack, tmp_path):
    prefix = f"team-data/{tmp_path.name}/images/"
    _upload(stack, prefix, image_folder_files(CLASSES, range(30)))
    source = folder_source(stack.uri(prefix))
    first = snapshot(source, stack, HASH, FolderPolicy(), name="folder-test")
    assert first.stored and first.downloaded == 90 and first.decoded == 90
    version = first.version
    assert version.summary.class_names == list(CLASSES) and version.summary.images == 90
    assert stack.exists(layout.version_key(version.version_id))
    assert read_version(stack, version.version_id) == version

    reads = CountingReads(stack.client)
    again = snapshot(source, stack, HASH, FolderPolicy(), name="folder-test")
    assert again.version.version_id == version.version_id and not again.stored
    assert again.downloaded == 0 and again.decoded == 0
    # the listing is free of object reads: the latest pointer and the previous version only
    assert reads.count == 2

    # grown by 15 images a class: only those are read and decoded
    _upload(stack, prefix, image_folder_files(CLASSES, range(30, 45)))
    grown = snapshot(source, stack, HASH, FolderPolicy(), name="folder-test")
    assert grown.downloaded == 45 and grown.decoded == 45 and grown.stored
    summary = grown.version.summary
    assert summary.parent == version.version_id and summary.images == 135
    assert {c: ch.added for c, ch in summary.changes.items()} == dict.fromkeys(CLASSES, 15)
    # every earlier image keeps its split (test stays test)
    before = {r.sha256: r.split for r in version.used()}
    after = {r.sha256: r.split for r in grown.version.used()}
    assert all(after[sha] == split for sha, split in before.items())
    assert summary.leaked == 0
    ids = [s.version_id for s in list_versions(stack)]
    assert version.version_id in ids and grown.version.version_id in ids


def test_duplicates_share_a_split_and_bad_files_are_skipped_with_their_reason(stack, tmp_path):
    root = tmp_path / "images"
    files = image_folder_files(CLASSES, range(20))
    files["ant/copy-of-00003.png"] = files["ant/00003.png"]  # an exact duplicate
    files["bee/broken.png"] = b"not a png at all"
    files["README.txt"] = b"outside any class folder"
    for key, payload in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    (root / "cat" / "link.png").symlink_to(root / "cat" / "00001.png")

    ref, snap = prepare_folder(
        str(root), SplitSpec(), FolderPolicy(max_skipped_fraction=0.1), stack, tmp_path / "cache"
    )
    rows = {r.key: r for r in snap.version.rows}
    assert rows["ant/copy-of-00003.png"].duplicate_of == "ant/00003.png"
    assert "corrupt or not an image" in rows["bee/broken.png"].skipped
    assert "not in a class folder" in rows["README.txt"].skipped
    assert "not a regular file" in rows["cat/link.png"].skipped
    assert ref.skipped == 3 and ref.duplicates == 1 and ref.leaked == 0
    assert ref.version_id == snap.version.version_id and ref.class_names == list(CLASSES)
    x, y = load_split(ref, "train", stack, tmp_path / "cache")
    assert x.shape[1:] == (32, 32, 3) and set(y.tolist()) <= {0, 1, 2}
    assert sum(ref.sizes.values()) == 60

    with pytest.raises(DataError, match="max_skipped_fraction"):
        prepare_folder(str(root), SplitSpec(), FolderPolicy(), stack, tmp_path / "cache")
    with pytest.raises(DataError, match="min_images_per_class"):
        prepare_folder(
            str(root),
            SplitSpec(),
            FolderPolicy(max_skipped_fraction=0.1, min_images_per_class=50),
            stack,
            tmp_path / "cache",
        )


def test_a_fixed_test_folder_stays_test_and_a_copy_of_a_test_image_never_trains(stack, tmp_path):
    prefix = f"team-data/{tmp_path.name}/fixed/"
    files = {
        **image_folder_files(CLASSES, range(20), top="train/"),
        **image_folder_files(CLASSES, range(100, 106), top="test/"),
    }
    files["train/cat/leak.png"] = files["test/cat/00100.png"]
    _upload(stack, prefix, files)
    ref, snap = prepare_folder(stack.uri(prefix), SplitSpec(), FolderPolicy(), stack, tmp_path)
    version = snap.version
    assert version.summary.layout == "train-test-folders"
    assert all(r.split == "test" for r in version.used() if r.folder_split == "test")
    assert ref.sizes["test"] == 18 and ref.sizes["train"] + ref.sizes["val"] == 60
    assert {r.key: r.duplicate_of for r in version.rows}[
        "train/cat/leak.png"
    ] == "test/cat/00100.png"
    assert ref.leaked == 0


def test_images_of_any_size_are_resized_to_the_input(stack, tmp_path):
    root = tmp_path / "big"
    for key, payload in image_folder_files(("a", "b"), range(12), size=(64, 64)).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    ref, snap = prepare_folder(str(root), SplitSpec(), FolderPolicy(), stack, tmp_path / "cache")
    assert "area averaging" in snap.version.summary.resize and ref.class_names == ["a", "b"]
    x, _ = load_split(ref, "test", stack, tmp_path / "cache")
    assert x.shape[1:] == (32, 32, 3)
    assert class_image(0, 0, (64, 64)) != class_image(0, 0)


def test_a_stored_version_is_used_by_its_id_and_a_changed_one_is_refused(stack, tmp_path):
    root = (
        tmp_path / "v"
    )  # classes of its own: versions are shared by content, and this one is damaged
    for key, payload in image_folder_files(("tam", "per"), range(12)).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    ref, _ = prepare_folder(str(root), SplitSpec(), FolderPolicy(), stack, tmp_path / "c1")
    again, snap = prepare_folder(
        f"version:{ref.version_id}", SplitSpec(), FolderPolicy(), stack, tmp_path / "c2"
    )
    assert snap is None and again.prefix == ref.prefix and again.reused
    key = layout.version_key(ref.version_id)
    tampered = stack.get_bytes(key).replace(b'"tam"', b'"per"', 1)
    stack.put_bytes(tampered, key, overwrite=True)
    with pytest.raises(DataError, match="does not hash to its id|not a valid dataset version"):
        read_version(stack, ref.version_id)
    # a snapshot of the same content writes it again (its id is the hash of that content)
    restored, _ = prepare_folder(str(root), SplitSpec(), FolderPolicy(), stack, tmp_path / "c3")
    assert restored.version_id == ref.version_id and read_version(stack, ref.version_id)


def test_hostile_files_in_a_folder_are_skipped_within_bounds(stack, tmp_path):
    import os

    from tests.support.archives import png_header_only

    root = tmp_path / "hostile"
    for key, payload in image_folder_files(("a", "b"), range(60)).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    (root / "a" / "bomb.png").write_bytes(png_header_only(60_000, 60_000))
    (root / "a" / "huge.png").write_bytes(b"\0" * (2 << 20))
    os.mkfifo(root / "b" / "fifo.png")  # opening it would block forever
    (root / ".." / "outside.png").write_bytes(class_image(0, 999))
    (root / "b" / "escape.png").symlink_to(root / ".." / "outside.png")
    ref, snap = prepare_folder(
        str(root),
        SplitSpec(),
        FolderPolicy(max_skipped_fraction=0.05, max_image_bytes=1 << 20),
        stack,
        tmp_path / "cache",
    )
    reasons = {r.key: r.skipped for r in snap.version.skipped_rows()}
    assert "decompression bomb" in reasons["a/bomb.png"]
    assert "more than folder.max_image_bytes" in reasons["a/huge.png"]
    assert "not a regular file" in reasons["b/fifo.png"]
    assert "not a regular file" in reasons["b/escape.png"]
    assert ref.skipped == 4 and sum(ref.sizes.values()) == 120
