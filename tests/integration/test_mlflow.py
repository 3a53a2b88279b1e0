"""MLflow, on a real tracking server (the test stack's, `up(mlflow=True)`, on its own port):
every run logged (parameters, tags, each epoch, the test metrics, the models), the registry's
`champion` and `previous` aliases following promotions and a rollback, a night without MLflow
that completes and says what it did not log, `mlflow sync` catching up once, a retried training
that keeps its one nested run, and the champion loaded back through `mlflow.pyfunc` in a process
without compare-models."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import numpy as np
import pytest

from compare_models.config import RunParams
from compare_models.storage import layout
from compare_models.tracking import names
from compare_models.training.drills import DRILLS_ENV, Drills
from tests.support import stack as test_stack
from tests.support.runs import NO_EXPORT, ROOT, cli, python_json

pytestmark = pytest.mark.integration

TRACK = f"mlflow-{secrets.token_hex(3)}"
EPOCHS = 3
BASE = {
    "data": "synthetic:600",
    "split": {"protocol": "sizes", "train": 150, "val": 30, "test": 120},
    "models": ["tiny"],
    "train": {"epochs": EPOCHS, "batch_size": 32, "threads": 1, "learning_rate": 0.01},
    "comparison": {"resamples": 1000},
    "gate": {"track": TRACK},
}


@pytest.fixture(scope="module")
def mlflow_server(stack, plugin_models):
    """The test stack's MLflow server, and this module's processes (and the trainings they
    start) logging to it."""
    test_stack.up(mlflow=True)
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = test_stack.mlflow_url()
    yield test_stack.mlflow_url()
    os.environ["MLFLOW_TRACKING_URI"] = saved if saved is not None else ""


@pytest.fixture(scope="module")
def client(mlflow_server):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_server, registry_uri=mlflow_server)


def run_flow(run_id: str, **changes):
    from flows.compare_models import compare_models

    params = RunParams.model_validate({**BASE, **changes, "run_id": run_id})
    state = compare_models(params=params, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def runs_of(client, run_id: str, track: str = TRACK, kind: str | None = None):
    experiment = client.get_experiment_by_name(names.experiment_name(track))
    assert experiment is not None
    where = f"tags.`{names.RUN_ID}` = '{run_id}'"
    if kind:
        where += f" and tags.`{names.KIND}` = '{kind}'"
    return client.search_runs([experiment.experiment_id], where, max_results=100)


def manifest(stack, run_id: str) -> dict:
    return stack.get_json(layout.manifest_key(run_id))


@pytest.fixture(scope="module")
def first_run(stack, mlflow_server):
    """The track's first run: logged, and its model the first champion."""
    run_id = f"mlflow-a-{TRACK}"
    run_flow(run_id)
    return run_id


def test_a_run_is_logged_with_its_parameters_tags_epochs_metrics_and_model(
    stack, client, first_run
):
    parents = runs_of(client, first_run, kind=names.KIND_RUN)
    assert len(parents) == 1
    parent = parents[0]
    data = parent.data
    assert data.params["train.epochs"] == str(EPOCHS)
    assert data.params["gate.track"] == TRACK
    assert data.params["models"] == '["tiny"]'
    for tag in (names.FLOW_RUN_URL, names.DATASET_VERSION, names.BACKEND, names.FINGERPRINT):
        assert data.tags.get(tag), tag
    assert "/runs/flow-run/" in data.tags[names.FLOW_RUN_URL]
    record = manifest(stack, first_run)
    assert (
        data.tags[names.FINGERPRINT]
        == __import__("hashlib")
        .sha256(json.dumps(record["fingerprint"], sort_keys=True).encode())
        .hexdigest()
    )
    assert data.metrics["tiny.test_accuracy"] == pytest.approx(
        record["metrics"]["tiny"]["accuracy"]
    )
    low, high = (
        data.metrics["tiny.test_accuracy.ci_low"],
        data.metrics["tiny.test_accuracy.ci_high"],
    )
    assert low <= data.metrics["tiny.test_accuracy"] <= high
    assert data.tags[f"{names.GATE}.tiny.decision"] == record["gate"]["tiny"]["decision"]
    assert data.tags[names.REPORT].endswith(f"runs/{first_run}/report/index.html")
    assert parent.info.status == "FINISHED"

    trainings = runs_of(client, first_run, kind=names.KIND_TRAINING)
    assert len(trainings) == 1
    nested = trainings[0]
    assert nested.data.tags[names.PARENT] == parent.info.run_id
    assert nested.data.tags[names.MODEL_URI].endswith(layout.model_key(first_run, "tiny"))
    assert nested.info.status == "FINISHED"
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        history = client.get_metric_history(nested.info.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), key
    stored = record["models"]["tiny"]["history"]["loss"]
    logged = sorted(client.get_metric_history(nested.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.value for m in logged] == pytest.approx(stored)

    assert record["mlflow"]["not_logged"] == []
    assert record["mlflow"]["run_id"] == parent.info.run_id
    assert record["mlflow"]["registered"] == {"tiny": 1}


def test_the_champion_loads_through_pyfunc_without_compare_models(
    stack, client, first_run, mlflow_server, tmp_path, settings
):
    """`models:/<track>-tiny@champion` in a process where compare_models cannot be imported
    predicts the classes the stored model predicted, on 100 test images."""
    from compare_models.data.dataset import load_split
    from compare_models.runs.artifacts import load_predictions
    from compare_models.runs.stored import read_record

    record = read_record(stack, first_run)
    x_test, _ = load_split(record.dataset, "test", stack, settings.cache_dir)
    images = np.rint(x_test[:100] * 255.0).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    expected = load_predictions(stack, record.models["tiny"].predictions_key)[:100].argmax(1)
    script = f"""
import sys, json
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("compare_models", "flows", "tasks", "tests"):
            raise ImportError("compare_models is not installed in this process")
sys.meta_path.insert(0, Refuse())
import numpy as np, mlflow
mlflow.set_tracking_uri({mlflow_server!r})
model = mlflow.pyfunc.load_model("models:/{names.registered_name(TRACK, "tiny")}@champion")
out = model.predict(np.load({str(tmp_path / "images.npy")!r}))
probs = out["probabilities"] if isinstance(out, dict) else np.asarray(out)
print(json.dumps({{"classes": np.asarray(probs).argmax(1).tolist(),
                  "loaded": sorted(m for m in sys.modules if m.startswith("compare_models"))}}))
"""
    result = python_json(script, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert result["loaded"] == []
    assert result["classes"] == expected.tolist()


def test_the_server_is_a_service_of_the_stack_and_its_artifacts_are_in_the_bucket(
    client, first_run
):
    """`status` knows it; what it stores (the champion's MLflow model) is in the stack's bucket
    under mlflow/, proxied (`mlflow-artifacts:`), not on a disk."""
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

    status = subprocess.run(
        [sys.executable, "-m", "tests.support.stack", "status"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "test stack mlflow: yes" in status.stdout, status.stdout + status.stderr
    name = names.registered_name(TRACK, "tiny")
    version = client.get_model_version(name, "1")
    assert version.source.startswith("mlflow-artifacts:/")
    bucket = ArtifactStore.from_settings(Settings().model_copy(update={"bucket": "compare-models"}))
    keys = list(bucket.list_keys("mlflow/"))
    run_path = version.source.removeprefix("mlflow-artifacts:/")
    assert any(k.startswith(f"mlflow/{run_path}") and k.endswith("model.onnx") for k in keys)


def test_promotions_move_champion_and_previous_and_a_rollback_moves_both_back(
    stack, client, first_run
):
    """A (first) → B → C by hand: champion C, previous B; rollback: champion B, previous A."""
    name = names.registered_name(TRACK, "tiny")
    versions = {first_run: 1}
    for letter in "bc":
        run_id = f"mlflow-{letter}-{TRACK}"
        run_flow(run_id, train={**BASE["train"], "seed": 7 if letter == "b" else 8})
        out = cli("promote", run_id, "--model", "tiny", "--reason", "test", timeout=600)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "MLflow: not done" not in out.stdout, out.stdout
        versions[run_id] = int(client.get_model_version_by_alias(name, "champion").version)
        assert client.get_model_version_by_alias(name, "champion").tags[names.RUN_ID] == run_id
    a, b, c = versions
    assert len(set(versions.values())) == 3
    assert client.get_model_version_by_alias(name, "previous").tags[names.RUN_ID] == b
    champion = stack.get_json(layout.champion_key(TRACK, "tiny"))["current"]
    assert champion["export"]["mlflow_version"] == versions[c]

    out = cli("rollback", "--track", TRACK, "--model", "tiny", "--reason", "test", timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert client.get_model_version_by_alias(name, "champion").version == str(versions[b])
    assert client.get_model_version_by_alias(name, "previous").version == str(versions[a])
    champion = stack.get_json(layout.champion_key(TRACK, "tiny"))["current"]
    assert champion["run_id"] == b
    assert champion["export"]["mlflow_version"] == versions[b]  # beside its new export version
    assert len(client.search_model_versions(f"name = '{name}'")) == 3  # no new version


def test_a_night_without_mlflow_completes_and_sync_logs_it_once(stack, client, mlflow_server):
    """With no MLflow server where MLFLOW_TRACKING_URI points, the run completes and its record
    names what was not logged; `mlflow sync` against the server logs it once, and a second sync
    changes nothing."""
    track = f"{TRACK}-down"
    run_id = f"mlflow-down-{TRACK}"
    os.environ["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{test_stack.unused_port()}"
    try:
        run_flow(run_id, gate={"track": track})
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_server
    tracked = manifest(stack, run_id)["mlflow"]
    assert tracked["run_id"] is None and tracked["not_logged"]
    assert "did not answer" in " ".join(tracked["not_logged"])
    shown = cli("show", run_id)
    assert "not all logged" in shown.stdout

    first = cli("mlflow", "sync", run_id)
    assert first.returncode == 0, first.stdout + first.stderr

    def state():
        runs = runs_of(client, run_id, track=track)
        steps = {
            r.data.tags[names.KIND]: len(client.get_metric_history(r.info.run_id, "loss"))
            for r in runs
            if r.data.tags[names.KIND] == names.KIND_TRAINING
        }
        metrics = {r.info.run_id: len(r.data.metrics) for r in runs}
        versions = client.search_model_versions(f"name = '{names.registered_name(track, 'tiny')}'")
        return len(runs), steps, metrics, len(versions)

    after_first = state()
    assert after_first[0] == 2  # the parent and the one training
    assert after_first[1] == {names.KIND_TRAINING: EPOCHS}
    assert after_first[3] == 1  # the champion registered
    synced = stack.get_json(layout.mlflow_sync_key(run_id))
    assert synced["not_logged"] == [] and synced["by"] == "sync"
    assert "logged to MLflow" in cli("show", run_id).stdout

    second = cli("mlflow", "sync", run_id)
    assert second.returncode == 0, second.stdout + second.stderr
    assert state() == after_first
    for run in runs_of(client, run_id, track=track):
        for key in run.data.metrics:
            assert len(client.get_metric_history(run.info.run_id, key)) == (
                EPOCHS
                if run.data.tags[names.KIND] == names.KIND_TRAINING
                and "loss" in key
                or key.endswith("accuracy")
                and run.data.tags[names.KIND] == names.KIND_TRAINING
                else 1
            ), key


def test_a_retried_training_keeps_its_one_nested_run(stack, client, mlflow_server, monkeypatch):
    """The first attempt fails after epoch 2 (a drill); the retry resumes from the checkpoint and
    logs epochs 3.. into the same nested run."""
    run_id = f"mlflow-retry-{TRACK}"
    monkeypatch.setenv(DRILLS_ENV, Drills(fail_after_epoch=2).model_dump_json())
    run_flow(
        run_id,
        train={**BASE["train"], "epochs": 4},
        execution={"retries": 1, "retry_delay_seconds": 0},
        gate={"track": f"{TRACK}-retry", **NO_EXPORT},
    )
    assert stack.get_json(layout.history_key(run_id, "tiny"))["result"]["resumed_from_epoch"] == 2
    trainings = runs_of(client, run_id, track=f"{TRACK}-retry", kind=names.KIND_TRAINING)
    assert len(trainings) == 1
    steps = [m.step for m in client.get_metric_history(trainings[0].info.run_id, "loss")]
    assert sorted(steps) == [1, 2, 3, 4]
    assert trainings[0].info.status == "FINISHED"
