"""Deployments, real process workers and `prefect deployment run`, against the test stack.

The module starts the test stack's workers (same pools as `compare-models up --workers`, this
session's test bucket in their environment) and stops them at the end. No other test uses
those workers or the `compare-models/*` deployments, so the module runs beside the others.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import subprocess
import sys
from datetime import UTC

import pytest

from compare_models.storage import layout
from tests.support import stack as test_stack
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
    out = subprocess.run(
        [*PREFECT, "deployment", "run", "compare-models/nightly", "--params", bad],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "epochs" in out.stdout + out.stderr


def test_nightly_deployment_run_trains_both_models_in_parallel_on_workers(
    deployed, stack, plugin_models
):
    """The CNN and a second model (the tiny plugin model: which model does not matter here,
    ResNet50's own run is in test_flow.py) train at once on the gpu pool's two slots."""
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
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # as `make demo` does: the deployment run, then `compare-models watch` (off a terminal here:
    # plain lines) until the run ends
    out = subprocess.run(
        [*PREFECT, "deployment", "run", "compare-models/nightly", "--params", params],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    watched = cli("watch", "--timeout", "600", timeout=700)
    assert watched.returncode == 0, watched.stdout[-3000:] + watched.stderr[-2000:]

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
