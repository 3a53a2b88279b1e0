"""Images at the size the models need, end to end on tiny data against the real S3 and Prefect:
a folder at 64 px is a version of its own that trains, evaluates, replays and exports at 64,
the same folder at 32 px is another version the gate will not compare with it, and ResNet50
working at 64 inside itself on 32 px data trains, is stored, and is re-scored as a champion."""

from __future__ import annotations

import secrets

import pytest

from compare_models.config import FolderPolicy, RunParams, SplitSpec
from compare_models.data.dataset import prepare_folder
from compare_models.data.errors import DataError
from compare_models.gate import champions
from compare_models.models import registry
from compare_models.runs.champion_record import ChampionRecord
from compare_models.storage import layout
from tests.support.archives import image_folder_files

pytestmark = pytest.mark.integration

CLASSES = ("ant", "bee", "cat")


def _run(params: dict) -> dict:
    from flows.compare_models import compare_models

    state = compare_models(params=RunParams.model_validate(params), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def test_a_folder_at_64_pixels_is_its_own_version_and_not_comparable_with_32(
    tmp_path, prefect_api, stack
):
    root = tmp_path / "images"
    for key, payload in image_folder_files(CLASSES, range(30), size=(96, 96)).items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    track = f"size-{secrets.token_hex(3)}"
    params = {
        "data": str(root),
        "split": {"protocol": "hash"},
        "folder": {"image_size": 64},
        "models": ["cnn"],
        "train": {"epochs": 1, "batch_size": 16, "threads": 1},
        "comparison": {"resamples": 1000},
        "gate": {"track": track},
    }
    at_64 = _run(params)
    manifest = stack.get_json(layout.manifest_key(at_64["run_id"]))
    assert manifest["dataset"]["image_size"] == 64 and "64x64" in manifest["dataset"]["resize"]
    assert manifest["fingerprint"]["data"]["image_size"] == 64
    assert manifest["fingerprint"]["params"]["folder"]["image_size"] == 64
    # the report's head on three classes: its count at 32 pixels
    assert manifest["models"]["cnn"]["parameters"] == registry.get("cnn").expected_parameters(3)
    assert at_64["gate"]["cnn"]["decision"] == champions.FIRST
    # the champion's export takes 64 x 64 images, and its card says so
    export = stack.get_json(
        layout.export_version_prefix(track, "cnn", at_64["gate"]["cnn"]["export"]["version"])
        + layout.EXPORT_MANIFEST
    )
    assert (export["input"]["height"], export["input"]["width"]) == (64, 64)
    card = stack.get_bytes(
        layout.export_version_prefix(track, "cnn", export["version"]) + "model_card.md"
    ).decode()
    assert "RGB images of 64x64 pixels" in card

    replay = _run({**params, "replay_of": at_64["run_id"]})
    replayed = stack.get_json(layout.replay_key(replay["run_id"]))
    assert not [c for c in replayed["fingerprint_changes"] if "image_size" in c["entry"]]
    assert (
        stack.get_json(layout.manifest_key(replay["run_id"]))["fingerprint"]["data"]["image_size"]
        == 64
    )

    at_32 = _run({**params, "folder": {"image_size": 32}})
    assert at_32["data"]["version_id"] != at_64["data"]["version_id"]
    decision = at_32["gate"]["cnn"]
    assert decision["decision"] == champions.NOT_COMPARABLE, decision
    assert "64x64" in decision["reason"] and "32x32" in decision["reason"]
    record = ChampionRecord.model_validate(stack.get_json(layout.champion_key(track, "cnn")))
    assert record.current.run_id == at_64["run_id"] and record.current.dataset.image_size == 64

    # a stored version keeps its size: the default reads it at 64, another size is refused
    version, hashed = f"version:{at_64['data']['version_id']}", SplitSpec(protocol="hash")
    ref, _ = prepare_folder(version, hashed, FolderPolicy(), stack, tmp_path / "c2")
    assert ref.image_size == 64 and ref.reused
    with pytest.raises(DataError, match="holds 64x64 images, and folder.image_size asks for 128"):
        prepare_folder(version, hashed, FolderPolicy(image_size=128), stack, tmp_path / "c3")


def test_resnet50_at_an_input_size_of_64_on_32_pixel_data_trains_and_is_rescored(
    prefect_api, stack
):
    track = f"input-{secrets.token_hex(3)}"
    base = {
        "split": {"protocol": "sizes", "train": 60, "val": 20, "test": 30},
        "models": ["resnet50"],
        "train": {"epochs": 1, "batch_size": 16, "threads": 1},
        "resnet_weights": "none",
        "comparison": {"resamples": 1000},
        "gate": {"track": track, "export": {"enabled": False}},
    }
    at_64 = _run(
        {**base, "data": "synthetic:200", "train_per_model": {"resnet50": {"input_size": 64}}}
    )
    manifest = stack.get_json(layout.manifest_key(at_64["run_id"]))
    assert manifest["fingerprint"]["params"]["train_per_model"]["resnet50"]["input_size"] == 64
    assert manifest["fingerprint"]["data"]["image_size"] == 32
    assert manifest["models"]["resnet50"]["parameters"] == 26_215_818
    record = ChampionRecord.model_validate(stack.get_json(layout.champion_key(track, "resnet50")))
    assert record.current.run_id == at_64["run_id"] and record.current.input_size == 64

    # other test images of the same classes, and the report's input size: the gate re-scores
    # the champion's stored model on them, and names the other recipe
    at_32 = _run({**base, "data": "synthetic:250"})
    decision = at_32["gate"]["resnet50"]
    assert decision["rescored"], decision
    assert "another recipe than the champion's" in decision["reason"]
    assert "64x64" in decision["reason"] and "32x32" in decision["reason"]
    rescored = stack.get_bytes(decision["rescored_predictions_key"])
    assert rescored
