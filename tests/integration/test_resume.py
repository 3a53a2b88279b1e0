"""Retries that resume: a failed training attempt continues from its last S3 checkpoint,
and so does a killed run when it is re-run with the same run id."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from compare_models.config import RunParams
from compare_models.storage import layout
from compare_models.training.drills import DRILLS_ENV, Drills
from tests.support.runs import (
    NO_EXPORT,
    NO_EXPORT_FLAG,
    ROOT,
    cli,
    cli_command,
    python_json,
    smoke_run_args,
)

pytestmark = pytest.mark.integration

# Retries and resumption do not depend on the model: the tiny plugin model (tests/plugin_models)
# makes each epoch and checkpoint cheap. The killed-run test keeps the CNN, whose epochs are long
# enough to be interrupted mid-run.
TINY = {
    "data": "synthetic:200",
    "split": {"protocol": "sizes", "train": 100, "val": 40, "test": 40},
    "models": ["tiny"],
    "resnet_weights": "none",
    "gate": NO_EXPORT,
}


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_failed_attempt_is_retried_and_resumes_after_the_last_epoch(
    stack, prefect_api, plugin_models, monkeypatch, backend
):
    """Under either Keras backend (the training processes' KERAS_BACKEND): the retry resumes
    from the S3 checkpoint, and the training records its backend."""
    from flows.compare_models import compare_models

    run_id = f"resume-after-fault-{backend}"
    monkeypatch.setenv("KERAS_BACKEND", backend)  # the training subprocesses inherit it
    monkeypatch.setenv(
        DRILLS_ENV, Drills(fail_after_epoch=2).model_dump_json()
    )  # the first attempt fails right after epoch 2
    params = RunParams.model_validate(
        {
            **TINY,
            "run_id": run_id,
            "train": {"epochs": 4, "batch_size": 50},
            "execution": {"retries": 1, "retry_delay_seconds": 0},
        }
    )
    state = compare_models(params=params, return_state=True)
    assert state.is_completed(), state.message
    stored = stack.get_json(layout.history_key(run_id, "tiny"))
    assert stored["result"]["resumed_from_epoch"] == 2  # the retry started at epoch 3, not at 1
    assert stored["result"]["device"]["backend"] == backend
    assert (
        len(stored["history"]["loss"]) == len(stored["history"]["val_loss"]) == 4
    )  # no duplicates, no gaps
    assert len(set(stored["history"]["loss"])) == 4
    assert not list(
        stack.list_keys(layout.checkpoint_prefix(run_id, "tiny"))
    )  # pruned once finished
    manifest = stack.get_json(layout.run_prefix(run_id) + layout.MANIFEST)
    assert manifest["fingerprint"]["trainings"]["tiny"]["backend"] == backend
    if backend == "jax":
        _loads_under_tensorflow(stack, run_id, "tiny")


def _loads_under_tensorflow(stack, run_id: str, name: str) -> None:
    """The .keras file a JAX training published loads under TensorFlow (as the evaluation and the
    gate's re-scoring load models) and predicts what the JAX training stored."""
    script = f"""
import json, sys
import numpy as np
import keras
from compare_models.storage import layout
from compare_models.config import Settings
from compare_models.data.dataset import DatasetRef, load_split
from compare_models.models.networks import load_model
from compare_models.storage.store import ArtifactStore
settings = Settings()
store = ArtifactStore.from_settings(settings)
run, name = {run_id!r}, {name!r}
path = store.download(layout.model_key(run, name), settings.cache_dir / "from-jax.keras")
model = load_model(path)
history = store.get_json(layout.history_key(run, name))
ref = DatasetRef.model_validate(store.get_json(layout.run_prefix(run) + layout.MANIFEST)["dataset"])
x_test, _ = load_split(ref, "test", store, settings.cache_dir)
stored = store.download(layout.predictions_key(run, name), settings.cache_dir / "from-jax.npz")
print(json.dumps({{
    "backend": keras.backend.backend(),
    "max_difference": float(np.abs(model.predict(x_test, verbose=0) - np.load(stored)["y_prob"]).max()),
}}))
"""
    loaded = python_json(script, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    assert loaded["backend"] == "tensorflow"
    assert loaded["max_difference"] < 1e-4, loaded


def test_a_fault_after_the_final_epoch_costs_only_that_epoch(
    stack, prefect_api, plugin_models, monkeypatch
):
    """The last epoch is not checkpointed (its model is published instead), so a crash
    between the end of `fit` and publishing recomputes exactly that one epoch."""
    from flows.compare_models import compare_models

    monkeypatch.setenv(DRILLS_ENV, Drills(fail_after_epoch=3).model_dump_json())
    params = RunParams.model_validate(
        {
            **TINY,
            "run_id": "fault-after-last",
            "train": {"epochs": 3, "batch_size": 50},
            "execution": {"retries": 1, "retry_delay_seconds": 0},
        }
    )
    state = compare_models(params=params, return_state=True)
    assert state.is_completed(), state.message
    stored = stack.get_json(layout.history_key("fault-after-last", "tiny"))
    assert stored["result"]["resumed_from_epoch"] == 2 and len(stored["history"]["loss"]) == 3


def test_without_retries_the_injected_fault_fails_the_run(
    stack, prefect_api, plugin_models, monkeypatch
):
    from flows.compare_models import compare_models

    monkeypatch.setenv(DRILLS_ENV, Drills(fail_after_epoch=1).model_dump_json())
    params = RunParams.model_validate(
        {
            **TINY,
            "run_id": "fault-no-retry",
            "train": {"epochs": 2, "batch_size": 50},
            "execution": {"retries": 0},
        }
    )
    state = compare_models(params=params, return_state=True)
    assert state.is_failed() and "injected fault after epoch 1" in state.message
    assert not stack.exists(layout.run_prefix("fault-no-retry") + layout.MANIFEST)
    state = stack.get_json(layout.checkpoint_state_key("fault-no-retry", "tiny"))
    assert state["epoch"] == 1  # the checkpoint a re-run would resume from


def test_killed_run_resumes_from_its_checkpoint_on_rerun(stack):
    run_id = "killed-and-rerun"
    args = smoke_run_args(
        "synthetic:400",
        "cnn",
        (300, 50, 40),
        6,
        "--batch-size",
        "32",
        "--run-id",
        run_id,
        NO_EXPORT_FLAG,
    )
    first = subprocess.Popen(
        cli_command(*args),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state_key = layout.checkpoint_state_key(run_id, "cnn")
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and first.poll() is None:
            if stack.exists(state_key) and stack.get_json(state_key)["epoch"] >= 2:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the run ended before it could be killed"
        os.killpg(first.pid, signal.SIGKILL)  # the flow process and its training process, mid-epoch
        first.wait()
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    killed_at = stack.get_json(state_key)["epoch"]
    assert 2 <= killed_at < 6 and not stack.exists(layout.run_prefix(run_id) + layout.MANIFEST)

    second = cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    stored = stack.get_json(layout.history_key(run_id, "cnn"))
    assert (
        stored["result"]["resumed_from_epoch"] == killed_at
    )  # at most the interrupted epoch is recomputed
    assert len(stored["history"]["loss"]) == 6
    assert json.loads(second.stdout)["run_id"] == run_id


def test_a_training_declared_dead_meanwhile_does_not_publish(prefect_api):
    """The zombie-run automation may mark a live but silent run Crashed and a retry may
    start; the old process must then not publish over the new attempt's keys."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed, Running

    from tasks.child_runs import Superseded, ensure_still_running

    @flow(name="declared-dead-test")
    def placeholder():
        pass

    logger = __import__("logging").getLogger("test")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(placeholder, state=Running())
        ensure_still_running(run.id, logger)  # Running: go ahead
        client.set_flow_run_state(run.id, Crashed(message="no heartbeat for 90 s"), force=True)
        with pytest.raises(Superseded, match="Crashed on the server"):
            ensure_still_running(run.id, logger)
        client.delete_flow_run(run.id)
