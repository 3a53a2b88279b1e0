"""The training batches: arrays in memory, shuffled and flipped by seed, for either backend.

`training_input` gives `fit` its input for the backend Keras runs on:

* JAX: `ShuffledBatches`, a `keras.utils.PyDataset`. Each batch is a pure function of (seed,
  epoch, batch index): the order of an epoch is a permutation drawn from ``(seed, epoch)``, the
  flips of a batch from ``(seed, epoch, index)``. So a batch is the same whichever thread
  prepares it (`workers` > 1 prefetches in a thread pool), a training resumed after epoch k
  sees exactly the batches the uninterrupted training saw from epoch k + 1 on, and a replay
  reproduces them.
* TensorFlow: the `tf.data` pipeline (shuffle, batch, flips, prefetch) the product has always
  used, seeded by the training's seed plus the epoch it starts from: it trained faster on the
  CPU than the same `ShuffledBatches` through Keras' PyDataset adapter, which hands each batch
  from Python to `tf.data` (docs/benchmarks.md, "Keras backends on the CPU"), and it keeps
  TensorFlow's results what they were.

A split too large to hold in memory (`TrainingRuntime.in_memory_mib`) is read by index from
its shards (`compare_models.data.shards.ShardReader`, scaled to [0, 1] batch by batch):
`ShuffledBatches` under both backends, so memory holds the batches in flight, not the split.
Under JAX its batches are the in-memory path's, image for image. A split larger than the
worker's shard cache is read a window of shards at a time, in the order its reader draws
(`compare_models.data.shard_windows`).

Augmentation lives here, not in the model, so the saved model is exactly the report's
architecture.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from compare_models.config import TrainParams
from compare_models.data.shard_windows import WindowedShardReader


class ShuffledBatches(keras.utils.PyDataset):
    """Shuffled batches of (x, y), with random horizontal flips when `augment` is "flip".

    Args:
        x: images, (n, height, width, channels), float32 in [0, 1]: an array, or anything that
            gives such an array for an array of indices (a `ShardReader`).
        y: integer labels, (n,).
        batch_size: images per batch (the last batch holds the rest).
        seed: the training's seed.
        augment: "flip" or "none".
        first_epoch: the epoch `fit` starts from (0, or the resumed checkpoint's).
        workers: threads preparing batches ahead of the step (1: in the training loop's thread).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        seed: int,
        augment: str = "none",
        first_epoch: int = 0,
        workers: int = 1,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=workers, max_queue_size=max_queue_size)
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"{len(x)} images and {len(y)} labels: need as many, at least one")
        self.x, self.y = x, y
        self.batch_size, self.seed, self.augment = batch_size, seed, augment
        self.epoch = first_epoch
        self._order = self.order(first_epoch)

    def order(self, epoch: int) -> np.ndarray:
        """The permutation of the images in `epoch`: the split's own order where it is read a
        window of shards at a time (`WindowedShardReader.order`), else a global shuffle."""
        if isinstance(self.x, WindowedShardReader):
            return self.x.order(self.seed, epoch)
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.y))

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        images = self.x[picked]
        if self.augment == "flip":
            flip = np.random.default_rng([self.seed, self.epoch, index]).random(len(picked)) < 0.5
            images[flip] = images[flip, :, ::-1]
        return images, self.y[picked]

    def on_epoch_end(self) -> None:
        # Keras calls this after the epoch's last batch was taken (and its prefetching
        # stopped), so no batch of the next epoch is made from this epoch's order.
        self.epoch += 1
        self._order = self.order(self.epoch)


class OrderedBatches(keras.utils.PyDataset):
    """A split's (x, y) in order, batch by batch, from an indexable reader (validation data
    that is not held in memory)."""

    def __init__(self, x, y: np.ndarray, *, batch_size: int, workers: int = 1):
        super().__init__(workers=workers)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        picked = np.arange(index * self.batch_size, min(len(self.y), (index + 1) * self.batch_size))
        return self.x[picked], self.y[picked]


def tf_data_input(x: np.ndarray, y: np.ndarray, params: TrainParams, *, seed: int):
    """Shuffled batches as a `tf.data.Dataset`, with random horizontal flips when
    `params.augment == "flip"` (TensorFlow only)."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(
        len(y), seed=seed, reshuffle_each_iteration=True
    )
    data = data.batch(params.batch_size)
    if params.augment == "flip":
        # Sequential on purpose: a parallel map draws the flips in whatever order its threads
        # run, so the same seeds gave different models (measured: probabilities of a replay
        # differed by up to 1e-4). One flip per batch is cheap next to the step it feeds.
        data = data.map(
            lambda images, labels: (tf.image.random_flip_left_right(images, seed=seed), labels)
        )
    return data.prefetch(tf.data.AUTOTUNE)


def training_input(
    x: np.ndarray, y: np.ndarray, params: TrainParams, *, first_epoch: int = 0, workers: int = 1
):
    """The batches `fit` trains on, for `params` (batch size, seed, augmentation), from
    `first_epoch` on (a resumed training's): `tf_data_input` under TensorFlow,
    `ShuffledBatches` under JAX (`workers` threads preparing them), and for images read from
    shards under either backend."""
    if keras.backend.backend() == "tensorflow" and isinstance(x, np.ndarray):
        return tf_data_input(x, y, params, seed=params.seed + first_epoch)
    return ShuffledBatches(
        x,
        y,
        batch_size=params.batch_size,
        seed=params.seed,
        augment=params.augment,
        first_epoch=first_epoch,
        workers=workers,
    )
