"""The deployments store no path of the deployer's machine, and the Kubernetes pool's image
rules hold on a real Prefect server (the test stack's, tests/support/stack.py).

The deployments made here have names of their own (cluster-test-<token>-...), no schedule,
and are deleted at the end; the Kubernetes pool too. The user's deployments are not touched.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from compare_models.local.services import worker_command
from tests.support.runs import ROOT, placeholder_dataset, python_json

pytestmark = pytest.mark.integration
TOKEN = secrets.token_hex(3)
PREFIX = f"cluster-test-{TOKEN}"


@pytest.fixture(scope="module")
def deployed_from_elsewhere(prefect_api, tmp_path_factory):
    """`prefect deploy --all` of a copy of prefect.yaml, run from another directory with
    COMPARE_MODELS_ROOT pointing there: what a deploy from a laptop's checkout looked like."""
    from prefect.client.orchestration import get_client

    from deployments.deploy import deploy_env, ensure_work_pools, work_pool_type

    laptop = tmp_path_factory.mktemp("laptop-checkout")
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    spec.pop("definitions", None)
    for deployment in spec["deployments"]:
        deployment["name"] = f"{PREFIX}-{deployment['name']}"
        deployment.pop("schedules", None)  # never scheduled: nothing runs
        deployment.pop("concurrency_limit", None)
    (laptop / "prefect.yaml").write_text(
        yaml.safe_dump(spec, sort_keys=False)
    )  # nothing else: module entrypoints

    ensure_work_pools()
    if work_pool_type("gpu") == "kubernetes":
        pytest.skip("the local 'gpu' pool is a Kubernetes pool here")
    env = deploy_env(
        work_pool_type("gpu"),
        {**os.environ, "PREFECT_API_URL": prefect_api, "COMPARE_MODELS_ROOT": str(laptop)},
    )
    out = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"],
        cwd=laptop,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    flows = {
        "flows.compare_models.compare_models": "compare-models",
        "flows.train_model.train_model": "train-model",
        "flows.data_watch.data_watch": "data-watch",
        "flows.batch_predict.batch_predict": "batch-predict",
    }
    with get_client(sync_client=True) as client:
        stored = {
            d["name"]: client.read_deployment_by_name(f"{flows[d['entrypoint']]}/{d['name']}")
            for d in spec["deployments"]
        }
    yield laptop, stored
    with get_client(sync_client=True) as client:
        for deployment in stored.values():
            client.delete_deployment(deployment.id)


def test_stored_pull_steps_hold_no_path_of_the_deployer(deployed_from_elsewhere):
    laptop, stored = deployed_from_elsewhere
    for deployment in stored.values():
        steps = deployment.pull_steps
        assert steps == [{"deployments.pull.set_project_root": {}}], steps
        text = json.dumps(steps)
        assert (
            str(laptop) not in text and str(ROOT) not in text and "COMPARE_MODELS_ROOT" not in text
        )
        assert str(laptop) not in json.dumps(deployment.job_variables)
    gpu = stored[f"{PREFIX}-gpu"]
    assert gpu.work_pool_name == "gpu"
    assert gpu.job_variables["env"]["COMPARE_MODELS_REQUIRE_GPU"] == "1"
    assert gpu.job_variables["image"] == ""  # process pool: no image


def test_the_stored_pull_steps_find_the_project_where_the_flow_runs(
    deployed_from_elsewhere, tmp_path
):
    """What a worker does before loading the entrypoint: Prefect's run_steps on the stored steps,
    in a fresh process started somewhere else (a worker's temporary directory)."""
    _, stored = deployed_from_elsewhere
    steps = stored[f"{PREFIX}-gpu"].pull_steps
    code = textwrap.dedent(f"""
        import asyncio, json, os
        from prefect.deployments.steps.core import run_steps
        output = asyncio.run(run_steps({steps!r}))
        print(json.dumps({{"cwd": os.getcwd(), "output": output}}))
    """)
    result = python_json(
        code,
        cwd=tmp_path,
        timeout=120,
        env={**os.environ, "COMPARE_MODELS_ROOT": "/nonexistent/laptop/checkout"},
    )
    from compare_models.config import project_root

    assert Path(result["cwd"]) == project_root() == Path(result["output"]["directory"])


def test_entrypoints_are_module_paths_that_load_in_a_fresh_engine_process(
    deployed_from_elsewhere, tmp_path
):
    """As Prefect's engine loads a deployment's flow in the flow run's process (PREFECT__FLOW_ENTRYPOINT),
    from any directory. A file entrypoint (flows/train_model.py:...) fails there: Prefect puts flows/
    first on sys.path, and flows/compare_models.py hides the compare_models package."""
    _, stored = deployed_from_elsewhere
    for deployment in stored.values():
        entrypoint = deployment.entrypoint
        assert ":" not in entrypoint and entrypoint.startswith("flows."), entrypoint
        code = (
            "import sys; from prefect.flow_engine import _load_flow_from_runtime_entrypoint as load; "
            "print(load(sys.argv[1]).name)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, entrypoint],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        expected = {
            "flows.compare_models.compare_models": "compare-models",
            "flows.train_model.train_model": "train-model",
            "flows.data_watch.data_watch": "data-watch",
            "flows.batch_predict.batch_predict": "batch-predict",
        }
        assert out.stdout.strip().splitlines()[-1] == expected[entrypoint]


def test_a_missing_project_is_a_clear_pull_step_error(tmp_path, monkeypatch):
    from deployments import pull

    monkeypatch.setattr("compare_models.config.project_root", lambda: tmp_path)
    with pytest.raises(RuntimeError, match="has no flows/ folder"):
        pull.set_project_root()


# ── a Kubernetes pool on the real server ───────────────────────────────────────


@pytest.fixture
def k8s_pool(prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    name = f"{PREFIX}-k8s"
    template = json.loads(
        (ROOT / "infra" / "k8s" / "gpu-work-pool-base-job-template.json").read_text()
    )
    with get_client(sync_client=True) as client:
        client.create_work_pool(
            WorkPoolCreate(name=name, type="kubernetes", base_job_template=template)
        )
        flow_id = client.create_flow_from_name(f"{PREFIX}-flow")
    yield name, flow_id
    with get_client(sync_client=True) as client:
        for deployment in client.read_deployments():
            if deployment.name.startswith(PREFIX) and deployment.work_pool_name == name:
                client.delete_deployment(deployment.id)
        client.delete_work_pool(name)
        client.delete_flow(flow_id)


def test_the_server_refuses_mutable_and_missing_images(k8s_pool):
    from prefect.client.orchestration import get_client
    from prefect.exceptions import PrefectHTTPStatusError

    pool, flow_id = k8s_pool
    env = {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", "COMPARE_MODELS_REQUIRE_GPU": "1"}
    with get_client(sync_client=True) as client:
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_deployment(
                flow_id,
                f"{PREFIX}-mutable",
                work_pool_name=pool,
                job_variables={"env": env, "image": "compare-models-worker:gpu"},
            )
        assert refused.value.response.status_code == 422 and "image" in refused.value.response.text

        good = client.create_deployment(
            flow_id,
            f"{PREFIX}-pinned",
            work_pool_name=pool,
            job_variables={
                "env": env,
                "image": "registry.example.com/compare-models-worker:0.1.0-3f2c1ab",
            },
        )
        run = client.create_flow_run_from_deployment(good, name=f"{PREFIX}-run")
        client.delete_flow_run(run.id)

        no_image = client.create_deployment(
            flow_id, f"{PREFIX}-no-image", work_pool_name=pool, job_variables={"env": env}
        )
        with pytest.raises(PrefectHTTPStatusError) as refused:
            client.create_flow_run_from_deployment(no_image, name=f"{PREFIX}-run-2")
        assert refused.value.response.status_code == 422
        assert "'image' is a required property" in refused.value.response.text


# ── a real process worker: the pull step, then the GPU requirement ─────────────


@pytest.fixture
def process_worker(stack, prefect_api, tmp_path):
    """A process worker of a pool of our own, started in an unrelated directory."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    pool = f"{PREFIX}-proc"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "COMPARE_MODELS_ROOT": "/nonexistent/laptop/checkout",
    }
    env.pop("COMPARE_MODELS_ALLOW_CPU_TRAINING", None)
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        worker_command(pool, 1, f"{PREFIX}-worker"),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield pool, tmp_path / "worker.log"
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        with get_client(sync_client=True) as client:
            for deployment in client.read_deployments():
                if deployment.work_pool_name == pool:
                    client.delete_deployment(deployment.id)
            time.sleep(1)
            client.delete_work_pool(pool)


@pytest.mark.parametrize("backend", ["", "jax"])
def test_a_gpu_pool_run_without_a_gpu_fails_with_the_reason(process_worker, backend):
    """On this GPU-less machine, through a real process worker: the stored pull step finds the
    project, the flow loads, and the training refuses to run on the CPU (COMPARE_MODELS_REQUIRE_GPU=1
    from prefect.yaml's gpu deployment; the worker does not allow CPU training), on the Keras
    backend the deployment's job variables name (as `compare-models deploy` renders them from
    COMPARE_MODELS_TRAINING_BACKEND: empty is TensorFlow)."""
    import time

    from prefect.client.orchestration import get_client

    from compare_models.config import TrainParams
    from compare_models.training.jobs import TrainingJob

    pool, worker_log = process_worker
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    gpu = next(d for d in spec["deployments"] if d["name"] == "gpu")
    env = {
        name: value.replace("{{ $COMPARE_MODELS_TRAINING_BACKEND }}", backend)
        for name, value in gpu["work_pool"]["job_variables"]["env"].items()
    }
    assert env["KERAS_BACKEND"] == backend
    name = f"{PREFIX}-nogpu{'-' + backend if backend else ''}"
    job = TrainingJob(
        run_id=name, model="cnn", dataset=placeholder_dataset(), train=TrainParams()
    ).model_dump(mode="json")
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train-model")
        deployment_id = client.create_deployment(
            flow_id,
            name,
            entrypoint=gpu["entrypoint"],
            work_pool_name=pool,
            pull_steps=spec["pull"],
            job_variables={"env": env},
        )
        run = client.create_flow_run_from_deployment(
            deployment_id, parameters={"job": job}, name=f"{name}-cnn"
        )
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state.is_final():
                break
            time.sleep(2)
        client.delete_flow_run(run.id)
    assert run.state.is_final(), (
        f"still {run.state.name}; worker log:\n{worker_log.read_text()[-3000:]}"
    )
    assert run.state.is_failed(), (run.state, worker_log.read_text()[-5000:])
    library = "JAX" if backend == "jax" else "TensorFlow"
    assert f"{library} sees no GPU" in (run.state.message or ""), (
        run.state.message,
        worker_log.read_text()[-3000:],
    )
    assert "COMPARE_MODELS_ALLOW_CPU_TRAINING=1" in run.state.message
