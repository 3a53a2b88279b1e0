"""Prepared splits stored as ArrayRecord shards in the real local S3: read by index as they were
written, a truncated or altered shard refused by name and rebuilt by the next data stage, a
split prepared before shards still read, and batches from shards the same as from memory,
resumed or not."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest

from compare_models.config import FolderPolicy, SplitSpec, TrainParams
from compare_models.data.dataset import (
    DatasetRef,
    load_split,
    open_split,
    prepare_dataset,
    prepare_folder,
    split_images_uint8,
)
from compare_models.data.errors import DataError
from compare_models.data.images import to_input
from compare_models.data.shards import SUFFIX, ShardReader, local_copy, write_split
from compare_models.data.versions import version_arrays
from compare_models.storage import layout
from tests.support.archives import image_folder_files
from tests.support.runs import NO_EXPORT

pytestmark = pytest.mark.integration

CLASSES = ("ant", "bee", "cat")


def _folder(root, count=30, size=(80, 80)):
    for key, payload in image_folder_files(CLASSES, range(count), size=size).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    return root


def test_a_split_in_several_shards_reads_back_image_for_image(stack, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 50)
    prefix = layout.splits_prefix("shard-test", "a" * 64, "0123456789abcdef")
    manifest = write_split(x, y, prefix, "train", stack, tmp_path / "work", shard_bytes=200_000)
    assert len(manifest.shards) == 4 and [s.images for s in manifest.shards] == [13, 13, 13, 11]
    assert all(
        stack.exists(s.key) and s.key.endswith(f"{s.sha256}.array_record") for s in manifest.shards
    )
    pinned = local_copy(stack, prefix, "train", manifest, tmp_path / "cache", limit_bytes=1 << 30)
    reader = ShardReader(pinned, manifest)
    picked = rng.permutation(50)[:17]
    assert np.array_equal(reader.pixels(picked), x[picked])
    assert np.array_equal(reader.all_pixels(), x)
    assert np.allclose(reader[picked], x[picked] / 255.0)
    # written once: the same content writes nothing new
    again = write_split(x, y, prefix, "train", stack, tmp_path / "work", shard_bytes=200_000)
    assert again == manifest
    # a cache smaller than the split is refused, naming the setting
    with pytest.raises(DataError, match="COMPARE_MODELS_SHARD_CACHE_GIB"):
        local_copy(stack, prefix, "train", manifest, tmp_path / "small", limit_bytes=1000)


def test_eviction_leaves_the_shards_a_reader_pins(stack, tmp_path, caplog):
    """A full cache evicts the least recently used shards, but not those a reader holds: it
    runs over its limit instead, says so, and evicts them once they are let go."""
    rng = np.random.default_rng(3)
    prefix = layout.splits_prefix("pin-test", "b" * 64, "0123456789abcdef")
    splits = {}
    for split in ("train", "val", "test"):
        x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
        manifest = write_split(x, rng.integers(0, 3, 20), prefix, split, stack,
                               tmp_path / "work", shard_bytes=20_000)  # fmt: skip
        splits[split] = (x, manifest)
    train, val, test = (splits[s][1] for s in ("train", "val", "test"))
    assert len(train.shards) == 4
    cache, limit = tmp_path / "cache", train.bytes + val.bytes // 2

    def cached():
        return {p.name for p in (cache / layout.DATASETS).rglob("*" + SUFFIX)}

    reader = ShardReader(local_copy(stack, prefix, "train", train, cache, limit_bytes=limit), train)
    with caplog.at_level(logging.WARNING, logger="compare_models.data.shards"):
        local_copy(stack, prefix, "val", val, cache, limit_bytes=limit).close()
    assert {f"{s.sha256}{SUFFIX}" for s in train.shards + val.shards} == cached()  # none evicted
    assert "over its" in caplog.text and "being read" in caplog.text
    assert np.array_equal(reader.all_pixels(), splits["train"][0])  # still read whole

    reader.close()
    # pinned by another process: not evicted either
    train_paths = [str(cache / s.key) for s in train.shards]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from compare_models.data.shards import PinnedShards; "
         "pins = PinnedShards([Path(p) for p in sys.argv[1:]]); print('pinned', flush=True); "
         "sys.stdin.read()", *train_paths],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "pinned"
        local_copy(stack, prefix, "test", test, cache, limit_bytes=limit).close()
        assert {f"{s.sha256}{SUFFIX}" for s in train.shards} <= cached()
    finally:
        holder.communicate("")  # it lets go as it exits
    # let go: now the least recently used (train's) go first, as room is made for val's
    local_copy(stack, prefix, "val", val, cache, limit_bytes=limit).close()
    assert not {f"{s.sha256}{SUFFIX}" for s in train.shards} & cached()
    assert {f"{s.sha256}{SUFFIX}" for s in val.shards} <= cached()
    assert sum(p.stat().st_size for p in (cache / layout.DATASETS).rglob("*" + SUFFIX)) <= limit


def test_a_cache_reached_through_a_symlink_keeps_the_split_it_copies(stack, tmp_path):
    """The cache's own paths are compared resolved: a full cache behind a symlink evicts
    others' shards, never those of the split it is copying."""
    rng = np.random.default_rng(4)
    prefix = layout.splits_prefix("link-test", "e" * 64, "0123456789abcdef")
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    train = write_split(x, rng.integers(0, 3, 20), prefix, "train", stack, tmp_path / "work",
                        shard_bytes=20_000)  # fmt: skip
    val = write_split(x[:10], rng.integers(0, 3, 10), prefix, "val", stack, tmp_path / "work",
                      shard_bytes=20_000)  # fmt: skip
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    local_copy(stack, prefix, "val", val, link, limit_bytes=train.bytes).close()
    # a download a killed process left (not written to for two hours) is removed; a fresh one not
    folder = tmp_path / "real" / layout.DATASETS
    orphan, fresh = folder / ".a.array_record.1.2.part", folder / ".b.array_record.1.3.part"
    for part in (orphan, fresh):
        part.write_bytes(b"half")
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    for _ in range(2):  # copied, then found in place in a full cache
        reader = ShardReader(local_copy(stack, prefix, "train", train, link,
                                        limit_bytes=train.bytes), train)  # fmt: skip
        assert np.array_equal(reader.all_pixels(), x)
        reader.close()
    assert not orphan.exists() and fresh.exists()


def test_the_export_check_reads_a_sharded_split_chunk_by_chunk(stack, tmp_path):
    """The export's check predicts a split read from its shards a chunk at a time, and gets
    what it gets from the same split held whole in memory."""
    import keras

    from compare_models.serving.export import CHUNK_BATCHES, checked_predictions

    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (45, 32, 32, 3), dtype=np.uint8)
    prefix = layout.splits_prefix("check-test", "c" * 64, "0123456789abcdef")
    manifest = write_split(x, rng.integers(0, 3, 45), prefix, "test", stack, tmp_path / "work",
                           shard_bytes=40_000)  # fmt: skip
    reader = ShardReader(local_copy(stack, prefix, "test", manifest, tmp_path / "cache",
                                    limit_bytes=1 << 30), manifest)  # fmt: skip
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")]
    )
    calls = []

    def export(images):  # a stand-in export: the same model on uint8 images
        calls.append(len(images))
        return model.predict(images.astype(np.float32) / 255.0, verbose=0)

    streamed, outputs = checked_predictions(model, reader, {"same": export}, batch=4)
    whole, _ = checked_predictions(model, x.astype(np.float32) / 255.0, {"same": export}, batch=4)
    assert streamed.shape == (45, 3) and np.allclose(streamed, whole, atol=1e-6)
    assert np.allclose(outputs["same"], streamed, atol=1e-6)
    assert max(calls) == 4 and sum(calls) == 2 * 45 and 4 * CHUNK_BATCHES < 45


def test_a_split_larger_than_the_cache_is_read_a_window_of_shards_at_a_time(stack, tmp_path):
    """Twelve shards, a cache of six and a half: an epoch reads two shards a window, its order
    a function of (seed, epoch) (so a resumed training sees the same batches), the next window
    fetched beside the reading, and the cache never over its limit."""
    import keras

    from compare_models.data.shard_windows import WindowedShardReader
    from compare_models.training.batches import OrderedBatches, ShuffledBatches

    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (120, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 3, 120)
    prefix = layout.splits_prefix("window-test", "d" * 64, "0123456789abcdef")
    manifest = write_split(x, y, prefix, "train", stack, tmp_path / "work", shard_bytes=32_000)
    assert [s.images for s in manifest.shards] == [10] * 12
    limit, cache = int(6.5 * max(s.bytes for s in manifest.shards)), tmp_path / "cache"

    def cached_bytes():  # the reader's thread may evict a file between listing and stat
        held = 0
        for path in (cache / layout.DATASETS).rglob("*" + SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                held += os.stat(path).st_size
        return held

    reader = WindowedShardReader(stack, prefix, manifest, cache, limit_bytes=limit)
    order = reader.order(7, 0)
    assert sorted(order.tolist()) == list(range(120))
    for window in range(6):  # 20 images from two shards a window
        assert len({i // 10 for i in order[20 * window : 20 * (window + 1)].tolist()}) == 2
    assert not np.array_equal(order, reader.order(7, 1))
    again = WindowedShardReader(stack, prefix, manifest, tmp_path / "other", limit_bytes=limit)
    assert np.array_equal(again.order(7, 1), reader.order(7, 1))  # a resumed epoch's order

    reader.order(7, 0)
    for start in range(0, 120, 8):
        picked = order[start : start + 8]
        assert np.array_equal(reader.pixels(picked), x[picked])
        assert cached_bytes() <= limit
    for _ in range(2):  # in order, twice (validation's epochs): from the first window again
        in_order = np.concatenate([b[0] for b in OrderedBatches(reader, y, batch_size=16)])
        assert np.array_equal(in_order, x / np.float32(255.0)) and cached_bytes() <= limit

    # a training's batches: the same from a reader resumed at epoch 1 as from one not stopped
    def epoch(first_epoch, batches_of):
        data = ShuffledBatches(batches_of, y, batch_size=8, seed=3, first_epoch=first_epoch)
        return [data[i][1].tolist() for i in range(len(data))]

    uninterrupted = ShuffledBatches(reader, y, batch_size=8, seed=3)
    uninterrupted.on_epoch_end()
    resumed = WindowedShardReader(stack, prefix, manifest, tmp_path / "r", limit_bytes=limit)
    assert [uninterrupted[i][1].tolist() for i in range(15)] == epoch(1, resumed)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, "softmax")])  # fmt: skip
    model.compile("sgd", "sparse_categorical_crossentropy")
    fitted = model.fit(
        # ten batches a window: more than the two input threads prepare ahead (WINDOWS_HELD)
        ShuffledBatches(reader, y, batch_size=2, seed=3, workers=2, max_queue_size=2),
        epochs=2,
        shuffle=False,  # the batches order themselves, as in the product's `fit`
        verbose=0,
    )
    assert len(fitted.history["loss"]) == 2 and cached_bytes() <= limit
    for r in (reader, again, resumed):
        r.close()
    with pytest.raises(DataError, match="was closed"):
        reader.pixels([0])

    # a cache that cannot hold three shards is refused, naming the setting
    with pytest.raises(DataError, match="COMPARE_MODELS_SHARD_CACHE_GIB"):
        WindowedShardReader(stack, prefix, manifest, cache, limit_bytes=limit // 3)


def test_a_truncated_or_altered_shard_is_refused_by_name_and_rebuilt(stack, tmp_path):
    root = _folder(tmp_path / "images")
    policy = FolderPolicy(image_size=64)
    ref, _ = prepare_folder(str(root), SplitSpec(), policy, stack, tmp_path / "cache")
    assert ref.image_size == 64 and set(ref.shards) == {"train", "val", "test"} and not ref.files
    x_before, y_before = load_split(ref, "train", stack, tmp_path / "cache")
    assert x_before.shape[1:] == (64, 64, 3)
    shard = ref.shards["train"].shards[0]

    # altered, same size: a reader refuses it by name, reads nothing, and notes it
    payload = bytearray(stack.get_bytes(shard.key))
    payload[len(payload) // 2] ^= 0xFF
    stack.put_bytes(bytes(payload), shard.key, overwrite=True)
    with pytest.raises(DataError, match=shard.key) as refused:
        open_split(ref, "train", stack, tmp_path / "fresh-cache")
    assert "damaged" in str(refused.value) and "rebuilds it" in str(refused.value)
    assert shard.key in stack.get_json(layout.damaged_key(ref.prefix))["keys"]

    # the next data stage rebuilds it from the source images, and says so
    rebuilt, _ = prepare_folder(str(root), SplitSpec(), policy, stack, tmp_path / "cache")
    assert rebuilt.repaired == {shard.key: "found damaged by a reader"}
    assert not stack.exists(layout.damaged_key(ref.prefix))
    x_after, y_after = load_split(rebuilt, "train", stack, tmp_path / "fresh-cache")
    assert np.array_equal(x_after, x_before) and np.array_equal(y_after, y_before)

    # truncated: one listing tells, before anything is read
    stack.put_bytes(stack.get_bytes(shard.key)[:100], shard.key, overwrite=True)
    again, _ = prepare_folder(str(root), SplitSpec(), policy, stack, tmp_path / "cache")
    assert "bytes, not" in again.repaired[shard.key]
    assert stack.get_bytes(shard.key) == stack.get_bytes(shard.key)  # whole again
    assert len(stack.get_bytes(shard.key)) == shard.bytes
    reused, _ = prepare_folder(str(root), SplitSpec(), policy, stack, tmp_path / "cache")
    assert reused.reused and not reused.repaired


def test_a_split_prepared_before_shards_still_reads(stack, cache_dir, tmp_path):
    """A prepared.json with one .npz per split, as the code before shards wrote it, is reused
    as it is and read whole."""
    spec = SplitSpec(protocol="sizes", train=40, val=20, test=20)
    ref = prepare_dataset("synthetic:200", spec, stack, cache_dir)
    arrays = {s: load_split(ref, s, stack, cache_dir) for s in ("train", "val", "test")}
    old = ref.model_dump(mode="json", exclude={"shards", "repaired", "reused", "seconds"})
    del old["image_size"]
    old["files"] = {}
    for split, (x, y) in arrays.items():
        buffer = io.BytesIO()
        np.savez(buffer, x=np.round(x * 255).astype(np.uint8), y=y)
        key = layout.split_file_key(ref.prefix, split)
        stack.put_bytes(buffer.getvalue(), key, overwrite=True)
        import hashlib

        sha = hashlib.sha256(buffer.getvalue()).hexdigest()
        old["files"][split] = {"key": key, "sha256": sha, "bytes": len(buffer.getvalue())}
    stack.put_json(old, layout.prepared_key(ref.prefix), overwrite=True)
    reused = prepare_dataset("synthetic:200", spec, stack, tmp_path / "other")
    assert reused.reused and not reused.shards and reused.image_size == 32
    x, y = load_split(reused, "test", stack, tmp_path / "other")
    assert np.allclose(x, arrays["test"][0]) and np.array_equal(y, arrays["test"][1])


def test_batches_from_shards_are_the_in_memory_ones_and_a_resumed_epoch_sees_the_same(
    stack, tmp_path
):
    """The order of an epoch is a function of (seed, epoch): a training resumed after epoch 1
    sees the batches an uninterrupted one saw, from shards as from memory."""
    from compare_models.training.batches import ShuffledBatches

    spec = SplitSpec(protocol="sizes", train=90, val=20, test=20)
    ref: DatasetRef = prepare_dataset("synthetic:200", spec, stack, tmp_path / "cache")
    reader, y = open_split(ref, "train", stack, tmp_path / "cache")
    x, _ = load_split(ref, "train", stack, tmp_path / "cache")
    params = TrainParams(batch_size=16, seed=7)

    def epochs(images, first_epoch, count):
        batches = ShuffledBatches(
            images, y, batch_size=params.batch_size, seed=params.seed, augment="flip",
            first_epoch=first_epoch,
        )  # fmt: skip
        seen = []
        for _ in range(count):
            seen.append([batches[i] for i in range(len(batches))])
            batches.on_epoch_end()
        return seen

    uninterrupted = epochs(reader, 0, 3)
    resumed = epochs(reader, 1, 2)
    in_memory = epochs(x, 0, 3)
    for a, b in zip(uninterrupted[1:], resumed, strict=True):
        assert all(
            np.array_equal(xa, xb) and np.array_equal(ya, yb)
            for (xa, ya), (xb, yb) in zip(a, b, strict=True)
        )
    for a, b in zip(uninterrupted, in_memory, strict=True):
        assert all(
            np.allclose(xa, xb) and np.array_equal(ya, yb)
            for (xa, ya), (xb, yb) in zip(a, b, strict=True)
        )


@pytest.mark.parametrize(("in_memory_mib", "read"), [("0", "shards"), ("256", "memory")])
def test_a_training_resumed_after_epoch_1_trains_as_an_uninterrupted_one(
    stack, prefect_api, plugin_models, monkeypatch, in_memory_mib, read
):
    """Under JAX, streaming from shards (COMPARE_MODELS_IN_MEMORY_MIB=0) or in memory: a
    training that fails after epoch 1 and resumes from its checkpoint sees the batches of an
    uninterrupted one, in the same order, so its later epochs' losses are the uninterrupted
    training's."""
    import secrets

    from compare_models.config import RunParams, Settings
    from compare_models.training.drills import DRILLS_ENV, Drills
    from flows.compare_models import compare_models

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("COMPARE_MODELS_IN_MEMORY_MIB", in_memory_mib)
    base = {
        "data": "synthetic:200",
        "split": {"protocol": "sizes", "train": 100, "val": 40, "test": 40},
        "models": ["tiny"],
        "train": {"epochs": 3, "batch_size": 16, "threads": 1},
        "execution": {"retries": 1, "retry_delay_seconds": 0},
        "gate": NO_EXPORT,
    }
    histories, started = {}, time.time()
    for kind, drills in (("resumed", Drills(fail_after_epoch=1)), ("straight", Drills())):
        run_id = f"{read}-{kind}-{secrets.token_hex(3)}"
        monkeypatch.setenv(DRILLS_ENV, drills.model_dump_json())
        params = RunParams.model_validate({**base, "run_id": run_id})
        state = compare_models(params=params, return_state=True)
        assert state.is_completed(), state.message
        stored = stack.get_json(layout.history_key(run_id, "tiny"))
        assert stored["result"]["device"]["input"] == dict.fromkeys(("train", "val", "test"), read)
        assert stored["result"]["device"]["xla_cache_mib"] == 1024  # JAX's compilation cache
        histories[kind] = stored
    # the forked trainings used JAX's compilation cache, in the worker's (the test stack's) home:
    # each program they compiled or loaded has its last use written since they started
    used = [p.stat().st_mtime for p in (Settings().cache_dir / "xla").glob("*-atime")]
    assert used and max(used) >= started
    assert histories["resumed"]["result"]["resumed_from_epoch"] == 1
    assert histories["straight"]["result"]["resumed_from_epoch"] == 0
    resumed, straight = histories["resumed"]["history"], histories["straight"]["history"]
    assert len(resumed["loss"]) == len(straight["loss"]) == 3
    assert np.allclose(resumed["loss"], straight["loss"], rtol=1e-5, atol=1e-6), (resumed, straight)


def test_a_folders_new_images_are_stored_in_packs_of_bounded_size(stack, tmp_path, monkeypatch):
    from compare_models.data import snapshot as snapshots

    monkeypatch.setattr(snapshots, "PACK_BYTES", 200_000)  # 16 images of 64x64 a pack
    root = _folder(tmp_path / "images")
    ref, snap = prepare_folder(
        str(root), SplitSpec(), FolderPolicy(image_size=64), stack, tmp_path / "cache"
    )
    packs = Counter(r.pixels for r in snap.version.used())
    # the files are decoded a pack at a time: full packs of 16, in the listing's order, then
    # the rest
    assert sorted(packs.values()) == [10, 16, 16, 16, 16, 16] and snap.decoded == 90
    assert all(stack.exists(layout.pixels_key(p, (64, 64))) for p in packs)
    x, y = load_split(ref, "train", stack, tmp_path / "cache")
    assert len(x) == len(y) == ref.sizes["train"] and x.shape[1:] == (64, 64, 3)
    # the splits, filled pack by pack, hold each row's own pixels in the rows' order
    for split in ("train", "val", "test"):
        rows = snap.version.used(split)
        expected = np.stack([to_input((root / r.key).read_bytes(), (64, 64))[0] for r in rows])
        labels = np.array([snap.version.summary.class_names.index(r.class_name) for r in rows])
        stored = split_images_uint8(ref, split, stack, tmp_path / "cache", labels)
        assert np.array_equal(stored, expected)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("version-")]
    # a row that names a pack without its image is refused by name, not read as another's
    first, other = sorted(packs)[:2]
    moved = next(r for r in snap.version.rows if r.pixels == first and r.used)
    rows = [r.model_copy(update={"pixels": other}) if r is moved else r for r in snap.version.rows]
    with pytest.raises(DataError, match="not in the packs its rows name"):
        version_arrays(snap.version.model_copy(update={"rows": rows}), stack, tmp_path)
