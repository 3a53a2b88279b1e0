"""A nightly on a folder that grows, end to end on tiny synthetic images: three classes of 64x64
images trained by the real CNN, a night that skips because nothing changed, a grown folder
whose champion is re-scored on the new test images by the gate, the `data-watch` flow's event,
and the `datasets` / `dataset` commands."""

from __future__ import annotations

import json
import secrets
import time

import pytest

from compare_models.config import RunParams
from compare_models.gate import champions
from compare_models.storage import layout
from tests.support.archives import image_folder_files
from tests.support.runs import NO_EXPORT, cli

pytestmark = pytest.mark.integration

CLASSES = ("ant", "bee", "cat")
TRACK = f"grow-{secrets.token_hex(3)}"


def _write(root, files):
    for key, payload in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)


def _params(root, **extra):
    return RunParams.model_validate(
        {
            "data": str(root),
            "split": {"protocol": "hash"},
            "models": ["cnn"],
            "train": {"epochs": 1, "batch_size": 32, "threads": 1},
            "comparison": {"resamples": 1000},
            "gate": {"track": TRACK, **NO_EXPORT},
            **extra,
        }
    )


def _run(params):
    from flows.compare_models import compare_models

    state = compare_models(params=params, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("team-images") / "images"
    _write(root, image_folder_files(CLASSES, range(40), size=(64, 64)))
    return root


def test_three_classes_of_64x64_images_train_skip_and_grow(folder, prefect_api, stack):
    first = _run(_params(folder))
    version = first["data"]["version_id"]
    assert first["gate"]["cnn"]["decision"] == champions.FIRST
    assert len(first["metrics"]["cnn"]["recall_per_class"]) == len(CLASSES)
    manifest = stack.get_json(layout.manifest_key(first["run_id"]))
    assert manifest["dataset"]["version_id"] == version
    assert manifest["dataset"]["class_names"] == list(CLASSES)
    assert manifest["fingerprint"]["data"]["version_id"] == version

    skipped = _run(_params(folder, skip_if_unchanged=True))
    assert skipped["skipped"] and skipped["version_id"] == version
    assert "skip_if_unchanged is set" in skipped["reason"]
    assert not list(stack.list_keys(layout.run_prefix(skipped["run_id"])))

    _write(folder, image_folder_files(CLASSES, range(40, 55), size=(64, 64)))
    grown = _run(_params(folder, skip_if_unchanged=True))
    decision = grown["gate"]["cnn"]
    assert grown["data"]["version_id"] != version
    assert decision["rescored"], decision
    assert decision["test_images"]["version_id"] == grown["data"]["version_id"]
    assert decision["test_images"]["count"] == grown["data"]["sizes"]["test"]
    changes = stack.get_json(layout.manifest_key(grown["run_id"]))["data_changes"]
    assert changes["champion_version_id"] == version and changes["previous_version_id"] == version
    assert {c: d["added"] for c, d in changes["since_champion"].items()} == dict.fromkeys(
        CLASSES, 15
    )
    report = stack.get_bytes(layout.report_key(grown["run_id"], "index.html")).decode()
    assert "What changed in the data" in report and "images per split in this run" in report
    assert decision["decision"] in (
        champions.PROMOTED,
        champions.NO_CHANGE,
        champions.WITHIN_NOISE,
        champions.REGRESSION,
    )

    out = cli("datasets", "--json", "--source", str(folder))
    assert out.returncode == 0, out.stderr
    versions = json.loads(out.stdout)
    assert [v["version_id"] for v in versions] == [version, grown["data"]["version_id"]]
    assert {c: ch["added"] for c, ch in versions[1]["changes"].items()} == dict.fromkeys(
        CLASSES, 15
    )
    out = cli("dataset", version[:12], "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)["rows"]
    assert len(rows) == 120 and {r["class_name"] for r in rows} == set(CLASSES)
    table = cli("datasets")
    assert table.returncode == 0 and version[:12] in table.stdout


def test_data_watch_emits_an_event_when_the_folder_changed(tmp_path, prefect_api, stack):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from compare_models.events import DATA_CHANGED, dataset_resource_id
    from flows.data_watch import data_watch

    root = tmp_path / "watched"
    _write(root, image_folder_files(("a", "b"), range(12)))
    first = data_watch(data=str(root))
    assert first["changed"]
    assert not data_watch(data=str(root))["changed"]  # unchanged: no new version, no event
    _write(root, image_folder_files(("a", "b"), range(12, 15)))
    grown = data_watch(data=str(root))
    assert grown["changed"] and grown["added"] == 6

    resource = dataset_resource_id(str(root.resolve()))
    events = []
    for _ in range(30):
        with get_client(sync_client=True) as client:
            events = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=[DATA_CHANGED.name]),
                    resource=EventResourceFilter(id=[resource]),
                ),
                limit=10,
            ).events
        if len(events) >= 2:
            break
        time.sleep(1)
    assert {e.payload["version_id"] for e in events} == {first["version_id"], grown["version_id"]}
    newest = next(e for e in events if e.payload["version_id"] == grown["version_id"])
    assert newest.payload["added"] == 6 and newest.payload["per_class"] == {"a": 15, "b": 15}
