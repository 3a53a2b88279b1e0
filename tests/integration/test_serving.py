"""The champion leaves the bucket, end to end on tiny synthetic data: a promoted champion is
exported as a SavedModel and an ONNX model, each loads in a process that does not have
compare_models (TensorFlow's loader, onnxruntime) and predicts what the `.keras` model
predicts; a model trained under JAX exports; a model that disagrees with its export is
refused and nothing is published; a model that is not the champion goes beside its run, never
into the served tree; versions only grow."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from compare_models.config import RunParams
from compare_models.gate import champions
from compare_models.gate.publishing import export_request
from compare_models.runs.champion_record import ChampionRecord
from compare_models.runs.record import RunRecord
from compare_models.serving.export import export_in_own_process
from compare_models.serving.records import ExportFailed
from compare_models.storage import layout

pytestmark = pytest.mark.integration

TRACK = f"serve-{secrets.token_hex(3)}"
BASE = {
    "data": "synthetic:400",
    "split": {"protocol": "sizes", "train": 200, "val": 40, "test": 80},
    "models": ["tiny"],
    "train": {"epochs": 2, "batch_size": 32, "threads": 1, "learning_rate": 0.01},
    "comparison": {"resamples": 1000},
    "gate": {"track": TRACK},
}


def _run(**params) -> dict:
    from flows.compare_models import compare_models

    state = compare_models(params=RunParams.model_validate(params), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def _record(store, run_id: str) -> RunRecord:
    return RunRecord.model_validate(store.get_json(layout.manifest_key(run_id)))


@pytest.fixture(scope="module")
def first(plugin_models, prefect_api, stack):
    return _run(**BASE)


def _download(store, prefix: str, folder: Path) -> Path:
    for key in store.list_keys(prefix):
        store.download(key, folder / key.removeprefix(prefix))
    return folder


#: Runs in a fresh interpreter that cannot import compare_models (nor the project's tests).
_OUTSIDE = textwrap.dedent(
    """
    import sys
    sys.path = [p for p in sys.path if p not in ("", {root!r})]
    # the venv has compare_models installed (editable): block it, so that any import fails
    sys.modules["compare_models"] = None
    try:
        import compare_models
    except ImportError:
        pass
    else:
        raise AssertionError("compare_models is importable")
    import numpy as np
    images = np.load(sys.argv[2])
    import onnxruntime
    session = onnxruntime.InferenceSession(sys.argv[1] + "/model.onnx")
    onnx_probs = session.run(["probabilities"], {{"image": images}})[0]
    import tensorflow as tf
    serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
    out = serve(image=tf.constant(images))
    np.savez(sys.argv[3], onnx=onnx_probs, savedmodel=out["probabilities"].numpy(),
             names=out["class_name"].numpy().astype(str))
    """
)


def _predict_outside(folder: Path, images: np.ndarray, tmp: Path) -> dict:
    from tests.support.runs import ROOT

    np.save(tmp / "images.npy", images)
    script = tmp / "outside.py"
    script.write_text(_OUTSIDE.format(root=str(ROOT)))
    subprocess.run(
        [sys.executable, "-I", str(script), str(folder), str(tmp / "images.npy"), str(tmp / "out.npz")],
        check=True,
        cwd=tmp,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    return dict(np.load(tmp / "out.npz"))


def test_a_promoted_champion_is_exported_and_loads_without_this_package(first, stack, tmp_path):
    from compare_models.config import Settings
    from compare_models.data.dataset import load_split
    from compare_models.models.networks import load_model

    decision = first["gate"]["tiny"]
    assert decision["decision"] == champions.FIRST
    assert decision["export"]["version"] >= 1, decision["export"]
    record = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    export = record.current.export
    assert export is not None and export.version == decision["export"]["version"]
    prefix = layout.export_version_prefix(TRACK, "tiny", export.version)
    keys = set(stack.list_keys(prefix))
    for name in ("saved_model.pb", "model.onnx", "labels.txt", "model_card.md", "model_card.json",
                 layout.EXPORT_MANIFEST):  # fmt: skip
        assert prefix + name in keys, name
    assert stack.exists(layout.triton_config_key(TRACK, "tiny"))
    manifest = stack.get_json(prefix + layout.EXPORT_MANIFEST)
    assert {c["format"] for c in manifest["checks"]} == {"savedmodel", "onnx"}
    assert all(c["passed"] and c["max_probability_difference"] <= 1e-4 for c in manifest["checks"])

    run = _record(stack, first["run_id"])
    x_test, _ = load_split(run.dataset, "test", stack, Settings().cache_dir)
    images = np.rint(x_test * 255).astype(np.uint8)
    model = load_model(stack.download(run.models["tiny"].model_key, tmp_path / "m.keras"))
    expected = model.predict(x_test, verbose=0)
    folder = _download(stack, prefix, tmp_path / "export")
    outside = _predict_outside(folder, images, tmp_path)
    for fmt in ("onnx", "savedmodel"):
        assert np.abs(outside[fmt] - expected).max() <= 1e-4, fmt
    names = run.dataset.class_names
    assert list(outside["names"]) == [names[i] for i in expected.argmax(1)]
    assert (folder / "labels.txt").read_text().split() == names
    card = json.loads((folder / "model_card.json").read_text())
    assert card["run_id"] == first["run_id"] and card["input"]["dtype"] == "uint8"
    assert "AWS" not in (folder / "model_card.md").read_text()


def test_a_model_that_is_not_the_champion_goes_beside_its_run(first, stack):
    run = _record(stack, first["run_id"])
    before = set(stack.list_keys(layout.export_model_prefix(TRACK, "tiny")))
    result = export_in_own_process(export_request(run, "tiny", track=None), timeout=600)
    assert result.version is None and result.prefix == layout.run_export_prefix(run.run_id, "tiny")
    assert stack.exists(result.prefix + layout.EXPORT_MANIFEST)
    assert set(stack.list_keys(layout.export_model_prefix(TRACK, "tiny"))) == before


def test_an_export_that_disagrees_is_refused_and_nothing_is_published(first, stack):
    run = _record(stack, first["run_id"])
    # thresholds no float32 export can meet: the check's numbers reach the error
    strict = run.params.gate.export.model_copy(update={"max_probability_difference": 1e-30})
    params = run.params.model_copy(
        update={"gate": run.params.gate.model_copy(update={"export": strict})}
    )
    request = export_request(run.model_copy(update={"params": params}), "tiny", track=TRACK)
    before = set(stack.list_keys(layout.export_model_prefix(TRACK, "tiny")))
    with pytest.raises(ExportFailed, match="largest probability difference"):
        export_in_own_process(request, timeout=600)
    assert set(stack.list_keys(layout.export_model_prefix(TRACK, "tiny"))) == before


def test_versions_only_grow_and_a_jax_trained_model_exports(first, stack, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    second = _run(**{**BASE, "train": {**BASE["train"], "epochs": 6}})
    run = _record(stack, second["run_id"])
    assert run.models["tiny"].device.get("backend") == "jax", run.models["tiny"].device
    result = export_in_own_process(export_request(run, "tiny", track=TRACK), timeout=600)
    first_version = first["gate"]["tiny"]["export"]["version"]
    assert result.version > first_version
    assert all(c.passed for c in result.checks)


def test_promote_by_hand_publishes_the_new_champion_as_the_next_version(first, stack, monkeypatch):
    from tests.support.runs import cli

    second = _run(**{**BASE, "train": {**BASE["train"], "epochs": 1, "learning_rate": 1e-6}})
    assert second["gate"]["tiny"]["decision"] != champions.PROMOTED
    before = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    highest = before.current.export.version
    done = cli("promote", second["run_id"], "--model", "tiny", "--track", TRACK,
               "--reason", "a test of the export on promotion")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    assert after.current.run_id == second["run_id"]
    assert after.current.export is not None and after.current.export.version > highest
    assert f"as version {after.current.export.version}" in done.stdout
    # the earlier champion by hand: beside its run, not served
    done = cli("export", first["run_id"], "--model", "tiny", "--track", TRACK)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "never served" in done.stdout
    assert stack.exists(layout.run_export_prefix(first["run_id"], "tiny") + layout.EXPORT_MANIFEST)


def _served(store) -> tuple[int, dict]:
    """The version TF Serving and Triton would serve (the highest complete one) and its manifest."""
    prefix = layout.export_model_prefix(TRACK, "tiny")
    versions = {
        int(key.removeprefix(prefix).split("/")[0])
        for key in store.list_keys(prefix)
        if key.removeprefix(prefix).split("/")[0].isdigit()
        and key.endswith("/" + layout.EXPORT_MANIFEST)
    }
    highest = max(versions)
    return highest, store.get_json(layout.export_version_prefix(TRACK, "tiny", highest) + layout.EXPORT_MANIFEST)  # fmt: skip


def _promoted_events(prefect_api) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from compare_models.events import CHAMPION_PROMOTED, champion_resource_id

    with get_client(sync_client=True) as client:
        return client.read_events(
            EventFilter(
                event=EventNameFilter(name=[CHAMPION_PROMOTED.name]),
                resource=EventResourceFilter(id=[champion_resource_id(TRACK, "tiny")]),
            ),
            limit=50,
        ).events


def test_rollback_serves_the_earlier_champion_again_and_each_change_emits_an_event(
    first, stack, prefect_api
):
    import time

    from tests.support.runs import cli

    before = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    previous = before.history[0]
    done = cli("rollback", "--track", TRACK, "--model", "tiny", "--reason", "a test")
    assert done.returncode == 0, done.stderr[-2000:]
    after = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    assert after.current.run_id == previous.run_id and after.current.reason == "rollback: a test"
    assert after.history[0].run_id == before.current.run_id
    version, manifest = _served(stack)
    assert after.current.export.version == version > before.current.export.version
    assert manifest["run_id"] == previous.run_id
    assert manifest["republished_from"] == previous.export.version
    # the gate's first promotion, the promotion by hand, the rollback: one event each at least
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        events = _promoted_events(prefect_api)
        if {e.payload["how"] for e in events} >= {"gate", "promote", "rollback"}:
            break
        time.sleep(1)
    hows = {e.payload["how"]: e.payload for e in events}
    assert set(hows) >= {"gate", "promote", "rollback"}, [e.payload for e in events]
    assert hows["rollback"]["run_id"] == previous.run_id
    assert hows["rollback"]["export_version"] == version
    assert hows["rollback"]["previous_run_id"] == before.current.run_id
    assert hows["gate"]["export_uris"]["model.onnx"].endswith("/model.onnx")


def test_an_export_that_finished_after_a_later_promotion_is_outranked_by_the_champion(first, stack):
    from compare_models.gate.publishing import serve_the_champion
    from compare_models.serving.publish import republish

    record = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    champion, former = record.current, record.history[0]
    assert serve_the_champion(stack, TRACK, "tiny") is None  # served already
    # a slower hand-over of the former champion publishes last: it is now the highest version
    late = republish(stack, TRACK, "tiny", from_version=former.export.version, run_id=former.run_id)
    assert _served(stack)[1]["run_id"] == former.run_id
    again = serve_the_champion(stack, TRACK, "tiny")
    assert again is not None and again.version > late.version
    version, manifest = _served(stack)
    assert version == again.version and manifest["run_id"] == champion.run_id


def test_a_hand_over_with_exports_off_leaves_the_served_tree_as_it_is(first, stack):
    from compare_models.config import ExportPolicy
    from compare_models.gate.publishing import hand_over, serve_the_champion
    from compare_models.serving.publish import republish

    record = ChampionRecord.model_validate(stack.get_json(layout.champion_key(TRACK, "tiny")))
    champion, former = record.current, record.history[0]
    late = republish(stack, TRACK, "tiny", from_version=former.export.version, run_id=former.run_id)
    run = _record(stack, champion.run_id)
    gate = run.params.gate.model_copy(update={"export": ExportPolicy(enabled=False)})
    off = run.model_copy(update={"params": run.params.model_copy(update={"gate": gate})})
    handed = hand_over(
        stack, track=TRACK, entry=champion, previous_run_id=former.run_id, how="gate", record=off
    )
    assert handed.result is None and handed.error is None
    assert _served(stack)[0] == late.version  # nothing was exported or published again
    assert serve_the_champion(stack, TRACK, "tiny") is not None  # as the later tests expect it


def test_predict_refuses_a_champion_record_it_cannot_read(first, stack, tmp_path):
    from tests.support.runs import cli

    folder = tmp_path / "incoming"
    folder.mkdir()
    track = f"{TRACK}-unreadable"
    key = layout.champion_key(track, "tiny")
    for record, says in [
        ({"model": "tiny", "current": {"run_id": 7}}, "cannot be read"),
        ({"model": "tiny", "schema_version": 99}, "newer"),
        ({"model": "tiny", "current": None}, "no served tiny champion"),
    ]:
        stack.put_json(record, key, overwrite=True)
        done = cli("predict", str(folder), "--track", track, "--model", "tiny")
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 1 and last.startswith("compare-models: error:"), last
        assert says in last, last


def test_predict_scores_a_folder_skips_a_corrupt_file_and_reuses_its_result(
    first, stack, prefect_api, tmp_path
):
    import pandas as pd
    from PIL import Image

    from tests.support.runs import cli

    run = _record(stack, first["run_id"])
    names = run.dataset.class_names
    folder = tmp_path / "incoming"
    rng = np.random.default_rng(0)
    good = []
    for i, where in enumerate([names[0], names[0], names[1], ".", "."]):
        path = folder / where / f"img-{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8)).save(path)
        good.append(path.relative_to(folder).as_posix())
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not an image")

    done = cli("predict", str(folder), "--track", TRACK, "--model", "tiny", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["images"] == 5 and summary["skipped"] == 2 and not summary["reused"]
    assert {s["key"] for s in summary["skipped_files"]} == {"broken.jpg", "notes.txt"}
    assert summary["labelled"] == 3 and summary["accuracy"] is not None
    assert sum(summary["per_class"].values()) == 5
    prefix = (
        summary["parquet"].removeprefix(f"s3://{stack.bucket}/").removesuffix("predictions.parquet")
    )
    stack.download(prefix + "predictions.parquet", tmp_path / "p.parquet")
    stack.download(prefix + "predictions.csv", tmp_path / "p.csv")
    for table in (pd.read_parquet(tmp_path / "p.parquet"), pd.read_csv(tmp_path / "p.csv")):
        assert sorted(table["key"]) == sorted(good)
        assert set(table["champion_run_id"]) == {summary["champion_run_id"]}
        probs = table[[f"p_{n}" for n in names]].to_numpy()
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
        assert list(table["predicted"]) == [names[i] for i in probs.argmax(axis=1)]
    again = cli("predict", str(folder), "--track", TRACK, "--model", "tiny", "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["reused"] is True


def test_a_model_trained_in_mixed_precision_exports_in_float32(first, stack, monkeypatch):
    monkeypatch.setenv("COMPARE_MODELS_PRECISION", "mixed_float16")
    track = f"{TRACK}-mixed"
    mixed = _run(**{**BASE, "gate": {"track": track}})
    run = _record(stack, mixed["run_id"])
    assert run.models["tiny"].device.get("precision") == "mixed_float16", run.models["tiny"].device
    export = mixed["gate"]["tiny"]["export"]
    assert export["version"] == 1, export
    manifest = stack.get_json(
        layout.export_version_prefix(track, "tiny", 1) + layout.EXPORT_MANIFEST
    )
    assert manifest["trained_precision"] == "mixed_float16"
    assert all(c["passed"] for c in manifest["checks"])
    # against what the run stored (computed in float16): close, not identical
    stored = manifest["vs_trained_predictions"]
    assert stored is not None and 0 < stored["max_probability_difference"] < 0.05


def test_predict_reads_an_archive_and_refuses_one_with_a_link(first, stack, tmp_path):
    import io
    import tarfile

    from PIL import Image

    from compare_models.data.errors import DataError
    from compare_models.serving.predict import predict

    names = _record(stack, first["run_id"]).dataset.class_names
    rng = np.random.default_rng(1)

    def png() -> bytes:
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(out, "PNG")
        return out.getvalue()

    members = {f"{names[2]}/a.png": png(), "b.png": png(), "bad.png": b"\x89PNG broken",
               "README.txt": b"hello"}  # fmt: skip
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    summary = predict(stack, track=TRACK, model="tiny", source=str(archive))
    assert summary.images == 2 and summary.labelled == 1
    assert {s.key for s in summary.skipped_files} == {"bad.png", "README.txt"}
    assert predict(stack, track=TRACK, model="tiny", source=str(archive)).reused
    hostile = tmp_path / "link.tar"
    with tarfile.open(hostile, "w") as tar:
        link = tarfile.TarInfo("escape.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(DataError, match="symbolic link"):
        predict(stack, track=TRACK, model="tiny", source=str(hostile))
