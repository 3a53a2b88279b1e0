"""Image sizes: a dataset's image size and a model's input size, and what stays as it was at 32."""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from compare_models.config import FolderPolicy, RunParams, TrainParams
from compare_models.data.images import RESIZE, resize_method, to_input
from compare_models.data.versions import DatasetVersion, compute_version_id
from compare_models.models import registry

FIXTURES = Path(__file__).parent.parent / "fixtures"


def test_a_version_written_before_image_sizes_reads_and_keeps_its_id():
    """tests/fixtures/version-db2d989.json was written by the code of db2d989, before image
    sizes: it reads as a 32 x 32 version, and its id still hashes from its content."""
    payload = (FIXTURES / "version-db2d989.json").read_text()
    assert "image_size" not in payload
    version = DatasetVersion.model_validate_json(payload)
    s = version.summary
    assert s.image_size == 32 and s.resize == RESIZE
    assert compute_version_id(version.rows, s.split, s.resize, s.image_size) == s.version_id
    # the same rows at 64 pixels are another version
    other = compute_version_id(version.rows, s.split, resize_method(64), 64)
    assert other != s.version_id


def test_sizes_are_multiples_of_32_between_32_and_512():
    assert FolderPolicy().image_size == 32 and TrainParams().input_size is None
    assert FolderPolicy(image_size=224).image_size == 224
    for bad in (16, 48, 544):
        with pytest.raises(ValidationError, match="image_size"):
            FolderPolicy(image_size=bad)
        with pytest.raises(ValidationError, match="input_size"):
            TrainParams(input_size=bad)
    params = RunParams(train_per_model={"resnet50": {"input_size": 64}})
    assert params.train_for("resnet50").input_size == 64
    assert params.train_for("cnn").input_size is None
    with pytest.raises(ValidationError, match="input_size"):
        RunParams(train_per_model={"resnet50": {"input_size": 40}})


def test_decoding_resizes_to_the_asked_size_by_the_same_rules():
    from io import BytesIO

    from PIL import Image

    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    buffer = BytesIO()
    photo.save(buffer, format="PNG")
    for size in (32, 64, 128):
        pixels, own = to_input(buffer.getvalue(), (size, size))
        assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8 and own == (200, 300)
    # enlarging (bicubic) and shrinking (box) both give the asked size
    small = BytesIO()
    photo.resize((20, 20)).save(small, format="PNG")
    assert to_input(small.getvalue(), (64, 64))[0].shape == (64, 64, 3)
    assert "64x64" in resize_method(64) and "128x128" in resize_method(64)


@pytest.mark.parametrize("size", [64, 128])
def test_the_cnn_keeps_the_reports_head_and_parameter_count_at_larger_sizes(size):
    cnn = registry.get("cnn").build(image_size=size)
    assert cnn.input_shape == (None, size, size, 3)
    assert cnn.count_params() == 2_915_114
    pool = cnn.get_layer("pool_to_4x4")
    assert pool.output.shape[1:] == (4, 4, 128)
    probs = np.asarray(cnn(np.zeros((2, size, size, 3), np.float32)))
    assert probs.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_a_model_resizes_inside_itself_to_its_input_size():
    """ResNet50 at an input size of 64 on 32 x 32 images: Resizing first, global pooling before
    the report's head, the same parameter count; the CNN at 64 on 32 x 32 images likewise."""
    resnet = registry.get("resnet50").build(None, image_size=32, input_size=64)
    assert resnet.input_shape == (None, 32, 32, 3)
    assert resnet.get_layer("resize_to_64").output.shape[1:] == (64, 64, 3)
    assert resnet.count_params() == 26_215_818
    assert any(type(layer).__name__ == "GlobalAveragePooling2D" for layer in resnet.layers)
    probs = np.asarray(resnet(np.random.default_rng(0).random((2, 32, 32, 3), np.float32)))
    assert probs.shape == (2, 10)
    cnn = registry.get("cnn").build(image_size=32, input_size=64)
    assert cnn.input_shape == (None, 32, 32, 3) and cnn.count_params() == 2_915_114
    # at 32 and 32 nothing is added: the report's models, layer for layer
    plain = registry.get("resnet50").build(None)
    assert not any("resize" in layer.name for layer in plain.layers)
    assert any(type(layer).__name__ == "Flatten" for layer in plain.layers)


def test_a_builder_that_takes_no_size_serves_32_only():
    spec = registry.ModelSpec("ten-only", "tests.plugin_models.keras_models:build_tiny", 2_938)
    assert spec.build(image_size=32).input_shape[1:] == (32, 32, 3)
    with pytest.raises(ValueError, match="takes no image_size"):
        spec.build(image_size=64)
    with pytest.raises(ValueError, match="takes no input_size"):
        spec.build(input_size=64)


def test_a_model_of_another_input_size_is_another_recipe_and_the_gate_says_so():
    from compare_models.data.dataset import DatasetRef
    from compare_models.gate.champions import INCOMPARABLE, comparable, recipe_difference
    from compare_models.runs.champion_record import ChampionData, ChampionEntry, ChampionMetrics
    from compare_models.training.jobs import TrainingJob

    def entry(input_size=None, image_size=None):
        return ChampionEntry(
            run_id="r1", model="resnet50", model_key="runs/r1/models/resnet50.keras",
            predictions_key="runs/r1/training/resnet50/predictions.npz",
            dataset=ChampionData(name="d", image_size=image_size), metrics=ChampionMetrics(accuracy=0.5),
            promoted_at="2026-12-05T00:00:00+00:00", reason="first", by="gate", input_size=input_size,
        )  # fmt: skip

    assert recipe_difference(entry(), entry()) == ""
    assert recipe_difference(entry(), entry(input_size=32)) == ""  # the images' own size
    why = recipe_difference(entry(), entry(input_size=64))
    assert "64x64" in why and "32x32" in why and "input_size" in why
    how, reason = comparable(entry(), ChampionData(name="d", image_size=64))
    assert how == INCOMPARABLE and "32x32" in reason and "64x64" in reason
    # a record from before image sizes stores none and reads as 32
    assert "image_size" not in json.dumps(entry().model_dump(mode="json"))
    assert "input_size" not in json.dumps(entry().model_dump(mode="json"))

    ref = DatasetRef(
        name="d", synthetic=True, source="synthetic", archive_sha256=None,
        prefix="datasets/d/" + "a" * 64 + "/splits/0123456789abcdef/", class_names=["a", "b"],
        sizes={"train": 1}, files={}, normalisation={},
    )  # fmt: skip
    job = TrainingJob(run_id="r", model="resnet50", dataset=ref, train=TrainParams())
    bigger = job.model_copy(update={"train": TrainParams(input_size=64)})
    larger_images = job.model_copy(update={"dataset": ref.model_copy(update={"image_size": 64})})
    assert len({job.recipe(), bigger.recipe(), larger_images.recipe()}) == 3


def test_an_export_states_the_resizing_its_model_does_itself():
    from compare_models.serving.export import preprocessing_of

    resnet = registry.get("resnet50").build(None, image_size=32, input_size=64)
    said = preprocessing_of(resnet)
    assert (
        said.index("x / 255") < said.index("resized to 64x64 (bilinear)") < said.index("ImageNet")
    )
    assert "resized" not in preprocessing_of(registry.get("cnn").build())
