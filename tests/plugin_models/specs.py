"""The registration: TensorFlow-free, so listing models never loads Keras."""

from compare_models.models.registry import ModelSpec

TINY = ModelSpec(
    "tiny",
    "tests.plugin_models.keras_models:build_tiny",
    parameters=2_938,
    # not its real cost: uneven, so that core shares by cost are exercised beside the CNN
    relative_cost=3.0,
    description="a tiny convnet registered by a test plugin",
)
