"""The builder: one small convolution, global pooling and a softmax."""

import keras
from keras import layers


def build_tiny() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(16, 3, strides=2, activation="relu"),
            layers.Conv2D(16, 3, strides=2, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(10, activation="softmax", dtype="float32"),
        ],
        name="tiny",
    )
