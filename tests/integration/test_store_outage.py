"""An object-store outage, for real: the test stack's SeaweedFS is stopped and started again
from inside each test. Checkpoint uploads are retried in the background until the store
returns; a training rides out an outage shorter than `execution.store_outage_minutes`; a
longer one fails with an error that says what was unreachable, for how long and how to
resume, and a re-run with the same run id resumes from the newest checkpoint in S3."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from compare_models.config import RunParams, Settings
from compare_models.storage import layout
from compare_models.training.drills import DRILLS_ENV, Drills
from tests.support import stack as test_stack

# serial: stops the S3 service, which tests running beside it would see fail
pytestmark = [pytest.mark.integration, pytest.mark.serial]

TINY = {
    "data": "synthetic:200",
    "split": {"protocol": "sizes", "train": 100, "val": 40, "test": 40},
    "models": ["tiny"],
    "resnet_weights": "none",
    "gate": {"enabled": False},
}


def _seaweed():
    from compare_models.local.processes import running_pid
    from compare_models.local.services import SERVICES

    if running_pid(Settings(), SERVICES[0]) is None:
        pytest.skip("SeaweedFS was not started by the test stack here; not stopping it")
    return SERVICES[0]


def stop_s3() -> float:
    """Stops the test stack's SeaweedFS; returns when (monotonic) it was gone."""
    from compare_models.local.services import down

    assert down(only=(_seaweed(),)) == {"seaweedfs-s3": "stopped"}
    return time.monotonic()


def start_s3() -> None:
    assert test_stack.up()["seaweedfs-s3"] == "started"  # not a child of this process


def wait_for(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


def test_uploads_and_writes_are_retried_until_the_store_returns(stack, tmp_path):
    from compare_models.training.checkpoint_upload import CheckpointUploader, LocalCheckpoint

    stop_s3()
    try:
        uploader = CheckpointUploader(
            stack, logging.getLogger("test"), "outage", max_backoff_seconds=2
        )
        model = tmp_path / "epoch-1.keras"
        model.write_bytes(b"model bytes")
        prefix = "tests/outage/checkpoints/"
        uploader.submit(
            LocalCheckpoint(
                epoch=1,
                path=model,
                key=prefix + "epochs/epoch-1.keras",
                state={"epoch": 1},
                state_key=prefix + "state.json",
                epochs_prefix=prefix + "epochs/",
                made_at=time.time(),
            )
        )
        # the parent's conditional write, waiting the outage out in a thread of its own
        patient = stack.waiting_out(2)
        written: list[str] = []
        writer = threading.Thread(
            target=lambda: written.append(
                patient.put_json_if({"owner": "me"}, "tests/outage/claim.json", etag=None)
            )
        )
        writer.start()
        time.sleep(4)
        assert uploader.uploaded is None and model.exists() and not written  # still trying
    finally:
        start_s3()
    wait_for(lambda: uploader.uploaded is not None, 60, "the checkpoint upload")
    writer.join(60)
    assert written, "the conditional write did not get through"
    assert stack.get_bytes(prefix + "epochs/epoch-1.keras") == b"model bytes"
    assert stack.get_json(prefix + "state.json") == {"epoch": 1}
    assert uploader.close(flush_seconds=0).epoch == 1 and not model.exists()
    # written once: the same write again is recognised as its own, another one is refused
    from compare_models.storage.errors import PreconditionFailed

    assert stack.get_json("tests/outage/claim.json") == {"owner": "me"}
    stack.put_json_if({"owner": "me"}, "tests/outage/claim.json", etag=None)
    with pytest.raises(PreconditionFailed):
        stack.put_json_if({"owner": "someone else"}, "tests/outage/claim.json", etag=None)


def _run_in_thread(params: RunParams):
    """The compare-models flow in a thread; returns (thread, [final state])."""
    from flows.compare_models import compare_models

    states: list = []
    thread = threading.Thread(
        target=lambda: states.append(compare_models(params=params, return_state=True))
    )
    thread.start()
    return thread, states


def _outage_run(run_id: str, outage_minutes: float, epochs: int) -> RunParams:
    return RunParams.model_validate(
        {
            **TINY,
            "run_id": run_id,
            "train": {"epochs": epochs, "batch_size": 50},
            "execution": {"retries": 0, "store_outage_minutes": outage_minutes},
        }
    )


def _stop_s3_after_the_first_checkpoint(stack, params: RunParams, monkeypatch):
    """Starts the run (epochs of a second or more) and stops S3 once its first checkpoint is
    in; returns (the run's thread, [its final state])."""
    monkeypatch.setenv(DRILLS_ENV, Drills(epoch_pause_seconds=1).model_dump_json())
    thread, states = _run_in_thread(params)
    state_key = layout.checkpoint_state_key(params.run_id, "tiny")
    wait_for(lambda: stack.exists(state_key), 180, "the first checkpoint")
    stop_s3()
    return thread, states


def test_a_training_rides_out_an_outage_shorter_than_the_window(
    stack, prefect_api, plugin_models, monkeypatch
):
    run_id = "outage-shorter"
    params = _outage_run(run_id, 2, epochs=8)
    thread, states = _stop_s3_after_the_first_checkpoint(stack, params, monkeypatch)
    try:
        time.sleep(6)
    finally:
        start_s3()
    thread.join(300)
    assert states and states[0].is_completed(), states[0].message if states else "no state"
    stored = stack.get_json(layout.history_key(run_id, "tiny"))
    assert stored["result"]["resumed_from_epoch"] == 0  # one attempt, no re-run
    assert len(stored["history"]["loss"]) == 8
    assert stack.exists(layout.manifest_key(run_id))
    assert not list(stack.list_keys(layout.checkpoint_prefix(run_id, "tiny")))


def test_an_outage_longer_than_the_window_fails_clearly_then_resumes(
    stack, prefect_api, plugin_models, monkeypatch
):
    run_id = "outage-longer"
    params = _outage_run(run_id, 0.1, epochs=5)  # a 6 s window
    thread, states = _stop_s3_after_the_first_checkpoint(stack, params, monkeypatch)
    try:
        thread.join(300)
    finally:
        start_s3()
    assert states and states[0].is_failed()
    message = states[0].message or ""
    assert "unreachable for" in message and "store_outage_minutes" in message, message
    assert (
        f"--run-id {run_id}" in message and "newest checkpoint that reached S3 is epoch" in message
    )
    assert not stack.exists(layout.manifest_key(run_id))

    thread, states = _run_in_thread(params)  # the same run id: resumes
    thread.join(300)
    assert states and states[0].is_completed(), states[0].message if states else "no state"
    stored = stack.get_json(layout.history_key(run_id, "tiny"))
    assert stored["result"]["resumed_from_epoch"] >= 1
    assert len(stored["history"]["loss"]) == 5
