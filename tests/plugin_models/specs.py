"""The registration: TensorFlow-free, so listing models never loads Keras."""

from compare_models.registry import ModelSpec

TINY = ModelSpec(
    "tiny",
    "tests.plugin_models.keras_models:build_tiny",
    parameters=2_938,
    description="a tiny convnet registered by a test plugin",
)
