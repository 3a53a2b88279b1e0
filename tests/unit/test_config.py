"""Parameters are validated at the boundary, with the field named."""

import pytest
from pydantic import ValidationError

from compare_models.config import RunParams, Settings, SplitSpec, preset_params


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"models": ["cnn", "vgg16"]}, "unknown model name"),
        ({"models": []}, "no model selected"),
        ({"train": {"epochs": 0}}, "epochs"),
        ({"train": {"epochs": -3}}, "epochs"),
        ({"train": {"batch_size": 0}}, "batch_size"),
        ({"train": {"learning_rate": -1}}, "learning_rate"),
        ({"train": {"optimizer": "adagrad"}}, "optimizer"),
        ({"split": {"protocol": "sizes", "train": 10}}, "needs train, val and test"),
        ({"split": {"protocol": "sizes", "train": 0, "val": 1, "test": 1}}, "train"),
        ({"split": {"protocol": "sizes", "train": 9, "val": 100, "test": 100}}, "split.train"),
        ({"split": {"protocol": "sizes", "train": 100, "val": 100, "test": 3}}, "split.test"),
        ({"split": {"seed": -1}}, "split.seed"),
        ({"train": {"seed": -5}}, "train.seed"),
        ({"comparison": {"resamples": 10}}, "comparison.resamples"),
        ({"run_id": "../../etc"}, "run_id"),
        ({"replay_of": "../x"}, "replay_of"),
        ({"data_sha256": "abc"}, "64 hexadecimal"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_parameters_name_the_field(overrides, field):
    with pytest.raises(ValidationError, match=field):
        RunParams.model_validate(overrides)


def test_defaults_are_the_reports():
    params = RunParams()
    assert params.train.epochs == 10 and params.train.batch_size == 128
    assert params.models == ("cnn", "resnet50")
    assert params.split.sizes(10_000) == (16_250, 8_750, 10_000)
    assert SplitSpec(protocol="full").sizes(10_000) == (45_000, 5_000, 10_000)


def test_presets_and_overrides():
    smoke = preset_params("smoke", data="synthetic", train={"batch_size": 16})
    assert smoke.preset == "smoke" and smoke.train.epochs == 1 and smoke.train.batch_size == 16
    assert smoke.split.protocol == "sizes"
    assert preset_params("smoke", split={"protocol": "seed"}).split.train is None
    assert preset_params("seed", models="cnn").models == ("cnn",)
    with pytest.raises(ValueError, match="unknown preset"):
        preset_params("huge")


def test_settings_read_standard_names(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.setenv("COMPARE_MODELS_BUCKET", "my-bucket")
    s = Settings()
    assert s.s3_endpoint_url == "http://minio:9000"
    assert s.bucket == "my-bucket"
    assert "s3cr3t-value" not in repr(s) and "s3cr3t-value" not in str(s.model_dump())
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://seaweed:8333")
    assert Settings().s3_endpoint_url == "http://seaweed:8333"
    monkeypatch.setenv("COMPARE_MODELS_BUCKET", "Bad_Bucket")
    with pytest.raises(ValidationError, match="not a valid S3 bucket name"):
        Settings()
