"""A split larger than the local shard cache, read a window of shards at a time.

The cache (`Settings.shard_cache_gib`) bounds the disk a worker gives to shards. A split that
fits is copied whole and read by index (`shards.ShardReader`). A larger one is read by a
`WindowedShardReader`, as MosaicML Streaming and tf.data's interleaved shards do:

* **The order.** An epoch takes the split's shards in an order drawn from (seed, epoch),
  groups them into windows of at most 1 GiB (`WINDOW_BYTES`; a third of a cache smaller than
  3 GiB), and shuffles each window's images (from (seed, epoch, window)). It is a pure
  function of (seed, epoch) and the split, so a training resumed from its checkpoint sees the
  same batches as one that was not stopped, on any worker whose cache holds 3 GiB and not the
  whole split. A split that fits keeps its global shuffle; this order is the price of not
  holding the split.
* **The cache.** The reader holds (pins) the window it reads, the next one, which a thread of
  its own fetches while the current window is read, and the window before, which batches
  prepared ahead of the step may still read: at most three windows, the cache's size, whatever
  the split's. Shards of earlier windows are let go, and evicted when room is needed. A reader
  of a few images picked at random (the report's galleries) sets `read_ahead` off. A read in
  order (validation, prediction) takes the windows in the split's own order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter, OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compare_models.config import image_shape
from compare_models.data.errors import DataError
from compare_models.data.shards import (
    ImageIndex,
    PinnedShards,
    SplitShards,
    as_pixels,
    cache_shards,
)

if TYPE_CHECKING:
    from array_record.python.array_record_module import ArrayRecordReader

    from compare_models.storage.store import ArtifactStore

log = logging.getLogger(__name__)

#: Windows a reader may hold at once: the one read, the next (fetched ahead), and the one
#: before (still read by batches prepared ahead of the training step). It assumes a window
#: holds more batches than the input pipeline prepares ahead (a 128 MiB shard is 85 batches
#: of 32 images of 128x128, against Keras' queue of 10): a window still read is never let go,
#: so reads spread wider would take the cache over its limit.
WINDOWS_HELD = 3
#: The most bytes of shards in a window (8 shards of 128 MiB), or a third of a smaller cache:
#: the same on every worker whose cache holds three, so that a training resumed on another
#: worker sees the same order.
WINDOW_BYTES = 1 << 30


def windows(sizes: list[int], order: np.ndarray, window_bytes: int) -> list[list[int]]:
    """Shards (their `sizes` in bytes) taken in `order`, grouped into consecutive windows of
    at most `window_bytes` each (one shard at least)."""
    grouped: list[list[int]] = []
    held = window_bytes + 1
    for shard in order.tolist():
        if held + sizes[shard] > window_bytes:
            grouped.append([])
            held = 0
        grouped[-1].append(shard)
        held += sizes[shard]
    return grouped


class WindowedShardReader(ImageIndex):
    """A split's images by index, from its shards fetched into the local cache a window at a
    time (the module's docstring). `order(seed, epoch)` is the order a training reads it in."""

    def __init__(
        self,
        store: ArtifactStore,
        prefix: str,
        manifest: SplitShards,
        cache_dir: Path,
        *,
        limit_bytes: int,
    ):
        self.shape = image_shape(manifest.image_size)
        self._store, self._prefix, self._cache_dir = store, prefix, cache_dir
        self._shards, self._limit = manifest.shards, limit_bytes
        self._sizes = [s.bytes for s in manifest.shards]
        self.window_bytes = min(WINDOW_BYTES, limit_bytes // WINDOWS_HELD)
        largest = max(self._sizes, default=0)
        if largest > self.window_bytes:
            raise DataError(
                f"the local shard cache's {limit_bytes / 2**30:.2f} GiB holds fewer than "
                f"{WINDOWS_HELD} of the shards of {prefix} ({largest / 2**20:.0f} MiB each); a "
                "split larger than the cache is read a window of shards at a time, beside the "
                "window before and the next: raise COMPARE_MODELS_SHARD_CACHE_GIB on the worker"
            )
        self._starts = np.cumsum([0, *(s.images for s in manifest.shards)])
        self._local: OrderedDict[int, tuple[PinnedShards, ArrayRecordReader]] = OrderedDict()  # LRU
        self._in_use: Counter[int] = Counter()
        self._state = threading.Lock()  # guards the fields above and the plan below
        self._fetching = threading.Lock()  # one fetch at a time
        self._ahead: queue.SimpleQueue[list[int] | None] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._closed = False
        #: whether reads fetch the next window ahead (off for a few images picked at random)
        self.read_ahead = True
        self._plan(windows(self._sizes, np.arange(len(self._sizes)), self.window_bytes))

    def __len__(self) -> int:
        return int(self._starts[-1])

    # ── the order ────────────────────────────────────────────────────────────────

    def _plan(self, plan: list[list[int]]) -> None:
        with self._state:
            self._windows = plan
            self._window_of = {shard: w for w, shards in enumerate(plan) for shard in shards}
            self._current: int | None = None
            self._protected: set[int] = set()
            self._queued: set[int] = set()  # windows asked of the fetching thread

    def order(self, seed: int, epoch: int) -> np.ndarray:
        """The images of `epoch`, in the order a training reads them (the module's docstring);
        reads then follow its windows."""
        shard_order = np.random.default_rng([seed, epoch]).permutation(len(self._sizes))
        plan = windows(self._sizes, shard_order, self.window_bytes)
        self._plan(plan)
        parts = [
            np.random.default_rng([seed, epoch, w]).permutation(
                np.concatenate([np.arange(self._starts[s], self._starts[s + 1]) for s in shards])
            )
            for w, shards in enumerate(plan)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # ── reading ──────────────────────────────────────────────────────────────────

    def pixels(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"image indices outside 0..{len(self) - 1}")
        shard_of = np.searchsorted(self._starts, indices, side="right") - 1
        needed = sorted(set(shard_of.tolist()))
        readers = self._acquire(needed)
        try:
            out = np.empty((len(indices), *self.shape), np.uint8)
            for shard in needed:
                rows = np.flatnonzero(shard_of == shard)
                positions = (indices[rows] - self._starts[shard]).tolist()
                out[rows] = as_pixels(readers[shard].read(positions), self.shape)
        finally:
            with self._state:
                self._in_use.subtract(needed)
                if self._closed:  # closed while this read held them: let them go now
                    for shard in [s for s in needed if not self._in_use[s] and s in self._local]:
                        _let_go(*self._local.pop(shard))
        self._read_ahead(needed)
        return out

    def _acquire(self, needed: list[int]) -> dict[int, ArrayRecordReader]:
        """The readers of `needed`, fetched where they are not local, and held in use (not
        let go) until the caller has read them."""
        with self._state:
            if self._closed:
                raise DataError(f"the reader of {self._prefix} was closed")
            self._in_use.update(needed)
            missing = [s for s in needed if s not in self._local]
        try:
            if missing:
                self._fetch(missing)
            with self._state:
                for shard in needed:
                    self._local.move_to_end(shard)
                return {shard: self._local[shard][1] for shard in needed}
        except BaseException:
            with self._state:
                self._in_use.subtract(needed)
            raise

    def _fetch(self, wanted: list[int]) -> None:
        """Brings `wanted` into the cache, pinned; first lets go of this reader's least
        recently used shards that no read holds and that are not in the windows around the
        current one, until it holds no more than `WINDOWS_HELD` windows."""
        from array_record.python.array_record_module import ArrayRecordReader

        with self._fetching:
            with self._state:
                wanted = [s for s in wanted if s not in self._local]
                if not wanted or self._closed:
                    return
                held = sum(self._sizes[s] for s in self._local)
                needed = sum(self._sizes[s] for s in wanted)
                for shard in list(self._local):
                    if held + needed <= WINDOWS_HELD * self.window_bytes:
                        break
                    if self._in_use[shard] or shard in self._protected:
                        continue
                    _let_go(*self._local.pop(shard))
                    held -= self._sizes[shard]
            pinned = cache_shards(
                self._store,
                self._prefix,
                [self._shards[s] for s in wanted],
                self._cache_dir,
                limit_bytes=self._limit,
            )
            opened: list[tuple[int, PinnedShards, ArrayRecordReader]] = []
            try:
                for shard, path in zip(wanted, list(pinned.paths), strict=True):
                    one = PinnedShards([path])  # a pin of its own, so each can be let go
                    try:
                        reader = ArrayRecordReader(str(path), "readahead_buffer_size:0")
                    except BaseException:
                        one.close()
                        raise
                    opened.append((shard, one, reader))
                    if reader.num_records() != self._shards[shard].images:
                        raise DataError(
                            f"shard {self._shards[shard].key} holds {reader.num_records()} "
                            f"images, its manifest says {self._shards[shard].images}"
                        )
                with self._state:
                    if self._closed:
                        raise DataError("the reader was closed")
                    for shard, one, reader in opened:
                        self._local[shard] = (one, reader)
            except BaseException:
                for _, one, reader in opened:
                    _let_go(one, reader)
                raise
            finally:
                pinned.close()  # each shard is pinned on its own now

    def _read_ahead(self, read: list[int]) -> None:
        """Follows reads in the plan's order: a read in a later window than the current one (or
        in the first, where a pass starts again) makes that window the current one, keeps the
        windows around it, and asks the fetching thread for the next. Reads in earlier windows
        (batches prepared ahead, finishing late) change nothing."""
        with self._state:
            if not read or not self.read_ahead or self._closed:
                return
            window = max(self._window_of[s] for s in read)
            if self._current is not None and window <= self._current:
                if window > 0 or self._current == 0:
                    return
                self._queued.clear()  # a pass from the start again (validation's next epoch)
            self._current = window
            around = range(max(0, window - 1), min(len(self._windows), window + 2))
            self._protected = {s for w in around for s in self._windows[w]}
            upcoming = window + 1
            if upcoming >= len(self._windows) or upcoming in self._queued:
                return
            self._queued.add(upcoming)
            shards = self._windows[upcoming]
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._fetch_ahead, name="shard-window", daemon=True
                )  # a daemon: a process that ends does not wait for a download
                self._worker.start()
        self._ahead.put(shards)

    def _fetch_ahead(self) -> None:
        while (shards := self._ahead.get()) is not None:
            try:
                self._fetch(shards)
            except Exception as exc:  # a read of these shards fetches them again, and raises
                log.warning("fetching the next window of %s ahead failed: %s", self._prefix, exc)

    def close(self) -> None:
        """Lets its shards go, once no read holds them, and stops its fetching thread."""
        with self._state:
            self._closed = True
        self._ahead.put(None)
        with self._fetching, self._state:
            for shard in [s for s in self._local if not self._in_use[s]]:
                _let_go(*self._local.pop(shard))


def _let_go(pinned: PinnedShards, reader) -> None:
    reader.close()
    pinned.close()
