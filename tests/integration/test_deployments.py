"""Deployments, real process workers and `prefect deployment run`, against the test stack.

The module starts the test stack's workers (same pools as `compare-models up --workers`, this
session's test bucket in their environment) and stops them at the end. No other test uses
those workers or the `compare-models/*` deployments, so the module runs beside the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC

import pytest

from compare_models.runs.decision import FIRST
from compare_models.storage import layout
from tests.support import stack as test_stack
from tests.support.archives import png_bytes
from tests.support.runs import ROOT, cli, cli_command, placeholder_dataset

pytestmark = pytest.mark.integration
PREFECT = [sys.executable, "-m", "prefect"]


@pytest.fixture(scope="module")
def deployed(stack, plugin_models):  # the workers see the tiny plugin model too
    from compare_models.local.services import WORKERS, down

    down(only=WORKERS)
    test_stack.up(workers=True)  # inherits this session's COMPARE_MODELS_BUCKET
    out = cli("deploy", timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    yield
    down(only=WORKERS)


def _run_nightly(params: str) -> subprocess.CompletedProcess:
    """`prefect deployment run compare-models/nightly --params PARAMS`, as a user triggers it."""
    return subprocess.run(
        [*PREFECT, "deployment", "run", "compare-models/nightly", "--params", params],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _flow_run(flow_run_id):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(flow_run_id)

    return asyncio.run(read())


def test_deployments_are_declared_as_in_prefect_yaml(deployed):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            return {
                name: await client.read_deployment_by_name(name)
                for name in ("compare-models/nightly", "train-model/gpu")
            }

    deployments = asyncio.run(read())
    nightly = deployments["compare-models/nightly"]
    assert nightly.work_pool_name == "cpu" and nightly.enforce_parameter_schema
    crons = [(s.schedule.cron, s.schedule.timezone, s.active) for s in nightly.schedules]
    assert crons == [("0 2 * * *", "UTC", True)]
    assert (
        "params" in nightly.parameter_openapi_schema["properties"]
    )  # typed: the UI renders a form
    assert (
        deployments["train-model/gpu"].work_pool_name == "gpu"
    )  # one deployment trains any registered model
    from deployments.deploy import HEARTBEAT_SECONDS

    for (
        deployment
    ) in deployments.values():  # heartbeats feed the zombie-run automation (prefect.yaml says 30)
        assert (
            deployment.job_variables["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]
            == str(HEARTBEAT_SECONDS)
            == "30"
        )


def test_the_data_watch_and_the_nightlys_data_trigger_are_deployed_off(deployed):
    from prefect.client.orchestration import get_client

    async def read():
        async with get_client() as client:
            watch = await client.read_deployment_by_name("data-watch/watch")
            nightly = await client.read_deployment_by_name("compare-models/nightly")
            automations = await client.read_automations()
            return watch, nightly, automations

    watch, nightly, automations = asyncio.run(read())
    assert watch.work_pool_name == "cpu"
    assert [(s.schedule.interval.total_seconds(), s.active) for s in watch.schedules] == [
        (900.0, False)
    ]
    triggers = [
        a
        for a in automations
        if "compare-models.data.changed" in getattr(a.trigger, "expect", set())
        and any(getattr(x, "deployment_id", None) == nightly.id for x in a.actions)
    ]
    assert len(triggers) == 1 and not triggers[0].enabled


def test_deploy_creates_the_zombie_run_automation_once(deployed):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    from deployments.deploy import CRASH_AFTER_SECONDS, ZOMBIE_AUTOMATION

    out = cli("deploy", timeout=300)
    assert out.returncode == 0 and "exists" in out.stdout  # deploying again does not duplicate it
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert len(automations) == 1 and automations[0].enabled
    trigger, action = automations[0].trigger, automations[0].actions[0]
    assert trigger.posture == "Proactive" and trigger.within.total_seconds() == CRASH_AFTER_SECONDS
    assert trigger.after == {"prefect.flow-run.heartbeat"} and action.state == StateType.CRASHED


def test_invalid_parameters_are_rejected_before_a_run_starts(deployed):
    bad = json.dumps({"params": {"train": {"epochs": 0}, "models": ["cnn"]}})
    out = _run_nightly(bad)
    assert out.returncode != 0
    assert "epochs" in out.stdout + out.stderr


#: The tag of this module's copies of the batch-prediction trigger (never the deployed one).
TRIGGER_COPY = "compare-models-test-trigger-copy"


def _batch_prediction_trigger(client):
    """The batch-predict deployment and prefect.yaml's trigger on it, as `deploy` created them
    (copies an interrupted earlier session left behind are removed)."""
    predict = client.read_deployment_by_name("batch-predict/predict")
    found = [
        a
        for a in client.read_automations()
        if "compare-models.champion.promoted" in getattr(a.trigger, "expect", set())
        and any(getattr(x, "deployment_id", None) == predict.id for x in a.actions)
    ]
    for leftover in [a for a in found if TRIGGER_COPY in a.tags]:
        client.delete_automation(leftover.id)
    found = [a for a in found if TRIGGER_COPY not in a.tags]
    assert len(found) == 1 and not found[0].enabled  # off by default
    return predict, found[0]


@contextlib.contextmanager
def _batch_prediction_on(track: str, model: str):
    """prefect.yaml's batch-prediction trigger turned on for one track's `model` only: an enabled
    copy of the deployed automation (its trigger and its action unchanged) whose match names
    that track, so that other tests' promotions on the shared test server start no run."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.events.schemas.events import ResourceSpecification

    from compare_models.events import champion_resource_id

    with get_client(sync_client=True) as client:
        predict, deployed_trigger = _batch_prediction_trigger(client)
        narrowed = deployed_trigger.trigger.model_copy(
            update={
                "match": ResourceSpecification(
                    {"prefect.resource.id": champion_resource_id(track, model)}
                )
            }
        )
        automation_id = client.create_automation(
            AutomationCore(
                name=f"{deployed_trigger.name} ({track})",
                enabled=True,
                tags=[TRIGGER_COPY],
                trigger=narrowed,
                actions=deployed_trigger.actions,
            )
        )
    try:
        yield predict.id
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)


def _finished_run_of(deployment_id, track: str, *, timeout: float):
    """The first run of `deployment_id` for `track` to end, within `timeout` seconds (the test
    stack's server keeps other sessions' runs)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(deployment_id={"any_": [deployment_id]})
            )
            ended = [
                r
                for r in runs
                if r.state
                and r.state.is_final()
                and (r.parameters.get("params") or {}).get("track") == track
            ]
            if ended:
                return ended[0]
            time.sleep(2)
    raise AssertionError(f"no run of the batch-predict deployment ended within {timeout} s")


def test_nightly_deployment_run_trains_both_models_in_parallel_on_workers(
    deployed, stack, plugin_models
):
    """The CNN and a second model (the tiny plugin model: which model does not matter here,
    ResNet50's own run is in test_flow.py) train at once on the gpu pool's two slots. The run
    makes the CNN the champion of a track of its own, where prefect.yaml's batch-prediction
    trigger is on: the promotion runs the batch-predict deployment on a worker, which scores the
    track's incoming/ folder with the champion's served export."""
    track = f"trigger-{secrets.token_hex(3)}"
    incoming = layout.incoming_prefix(track)
    for name in ("a.png", "b.png", "c.png"):
        stack.put_bytes(png_bytes((40, 30)), incoming + name)
    stack.put_bytes(b"not an image", incoming + "broken.png")
    params = subprocess.run(
        cli_command(
            "params",
            "--preset",
            "smoke",
            "--models",
            f"cnn,{plugin_models}",
            "--data",
            "synthetic:200",
            "--split",
            "sizes",
            "--train-size",
            "100",
            "--val-size",
            "40",
            "--test-size",
            "40",
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--resnet-weights",
            "none",
            "--trainer",
            "deployment",
            "--track",
            track,
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    with _batch_prediction_on(track, "cnn") as predict_deployment:
        # as `make demo` does: the deployment run, then `compare-models watch` (off a terminal
        # here: plain lines) until the run ends
        out = _run_nightly(params)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        watched = cli("watch", "--timeout", "600", timeout=700)
        assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr[-2000:]
        predicted = _finished_run_of(predict_deployment, track, timeout=300)

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId
    from prefect.client.schemas.sorting import FlowRunSort

    async def read():
        async with get_client() as client:
            deployment = await client.read_deployment_by_name("compare-models/nightly")
            parent = (
                await client.read_flow_runs(
                    sort=FlowRunSort.START_TIME_DESC,
                    limit=1,
                    flow_run_filter=FlowRunFilter(
                        deployment_id={"any_": [deployment.id]},
                        state={"type": {"any_": ["COMPLETED"]}},
                    ),
                )
            )[0]
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent.id])
                )
            )
            return parent, children

    parent, children = asyncio.run(read())
    assert parent.state_name == "Completed"
    trainings = [c for c in children if c.name.endswith(("-cnn", f"-{plugin_models}"))]
    assert sorted(c.name.rsplit("-", 1)[1] for c in trainings) == ["cnn", plugin_models]
    assert all(c.state_name == "Completed" for c in trainings)
    # both trainings ran at the same time on the gpu pool's two slots
    (a, b) = trainings
    overlap = min(a.end_time, b.end_time) - max(a.start_time, b.start_time)
    assert overlap.total_seconds() > 0
    latest = stack.get_json(layout.LATEST)
    manifest = stack.get_json(latest["manifest"].split(f"s3://{stack.bucket}/", 1)[1])
    assert manifest["status"] == "complete" and manifest["flow_run_id"] == str(parent.id)
    assert manifest["params"]["execution"]["trainer"] == "deployment"
    # `watch` drew every epoch of both trainings from their lines on the Prefect server, each
    # once, in order, and the run's end; no heartbeat or other event line
    lines = watched.stdout.splitlines()
    for model in ("cnn", plugin_models):
        epochs = [
            re.search(r" epoch (\d+)/2 ", line) for line in lines if f" {model} epoch " in line
        ]
        assert [m[1] for m in epochs if m] == ["1", "2"], watched.stdout
    assert f"run {parent.name}: Completed" in watched.stdout
    assert "heartbeat" not in watched.stdout.lower()
    assert all(
        " epoch " in line or " run " in line or " training " in line or "watching" in line
        for line in lines
    ), watched.stdout
    # the worker sized each training's threads from its share of the cores (by model cost)
    from compare_models.device import available_cpus
    from compare_models.training.jobs import cpu_shares, threads_from_share

    shares = cpu_shares(("cnn", plugin_models), "weighted")
    assert {m: v["device"]["threads"] for m, v in manifest["models"].items()} == {
        m: threads_from_share(share, available_cpus()) for m, share in shares.items()
    }
    # the promotion ran the batch prediction with the event's track and model, on the track's
    # incoming/ folder (the default source): three images scored, the broken file skipped
    assert manifest["gate"]["cnn"]["decision"] == FIRST
    assert predicted.state_name == "Completed", predicted.state
    assert predicted.parameters == {"params": {"track": track, "model": "cnn"}}
    summaries = [
        key
        for key in stack.list_keys(f"predictions/{track}/cnn/")
        if key.endswith(layout.PREDICTIONS_SUMMARY)
    ]
    assert len(summaries) == 1
    summary = stack.get_json(summaries[0])
    assert summary["source"] == stack.uri(incoming)
    assert (summary["images"], summary["skipped"]) == (3, 1)
    assert summary["skipped_files"][0]["key"].endswith("broken.png")
    assert summary["export_version"] == manifest["gate"]["cnn"]["export"]["version"]
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[predicted.id]))
        )
    tables = [a for a in artifacts if a.key == "compare-models-predictions"]
    assert len(tables) == 1 and tables[0].type == "table"


def test_a_training_no_worker_starts_fails_the_attempt_instead_of_waiting_forever(
    deployed, stack, prefect_api
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from compare_models.config import RunParams
    from compare_models.local.services import WORKERS, down
    from flows.compare_models import compare_models

    gpu_worker = next(w for w in WORKERS if w.name == "worker-gpu")
    run_id = f"no-gpu-worker-{secrets.token_hex(3)}"  # the test server keeps earlier sessions' runs
    down(only=(gpu_worker,))
    try:
        params = RunParams.model_validate(
            {
                "data": "synthetic:200",
                "split": {"protocol": "sizes", "train": 100, "val": 40, "test": 40},
                "models": ["cnn"],
                "run_id": run_id,
                "execution": {"trainer": "deployment", "retries": 0, "start_timeout_seconds": 3},
            }
        )
        state = compare_models(params=params, return_state=True)
    finally:
        test_stack.up(workers=True)
    assert state.is_failed() and "no worker of the 'gpu' work pool started" in state.message
    with get_client(sync_client=True) as client:
        [child] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{run_id}-cnn"]))
        )
    assert child.state.is_cancelled()  # not left Scheduled for a worker to pick up later


def test_a_retry_cancels_the_child_an_earlier_attempt_left_unfinished(deployed, prefect_api):
    from datetime import datetime, timedelta

    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from compare_models.config import TrainParams
    from compare_models.training.jobs import TrainingJob
    from tasks.child_runs import cancel_earlier_attempts

    job = TrainingJob(
        run_id="stale", model="cnn", dataset=placeholder_dataset(), train=TrainParams()
    ).model_dump(mode="json")
    tomorrow = datetime.now(UTC) + timedelta(days=1)  # no worker picks these up
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("train-model/gpu")
        old, new = (
            client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"job": job},
                name="stale-cnn",
                state=Scheduled(scheduled_time=tomorrow),
            )
            for _ in range(2)
        )
        flow(name="cancel-earlier-attempts-test")(
            lambda: cancel_earlier_attempts(new, logging.getLogger("test"))
        )()
        old, new = client.read_flow_run(old.id), client.read_flow_run(new.id)
        assert old.state.name in ("Cancelling", "Cancelled")
        assert new.state.is_scheduled()  # the current attempt's child is left alone
        client.delete_flow_run(new.id)
        client.delete_flow_run(old.id)
