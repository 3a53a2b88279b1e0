"""The Prefect API with its own authentication on, for real: `compare-models up --auth --workers`
in a home and on ports of its own (not the test stack's, whose server stays open for the other
tests). A request without the auth string is refused; the CLI, a worker and a deployment run
work with it; the string shows in no log, parameter or artifact."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.support import stack as test_stack
from tests.support.runs import ROOT, cli

pytestmark = pytest.mark.integration

#: this stack's ports: the test stack's, moved by this much (free beside it, the user's and the
#: serial tests' stack of `make test`, moved by 25)
PORT_OFFSET = 50


def _auth_stack_env(home: Path) -> dict[str, str]:
    from compare_models.local.envfile import stack_environment

    ports = {name: port + PORT_OFFSET for name, port in test_stack.PORTS.items()}
    env = {k: v for k, v in os.environ.items() if not test_stack.inherited(k)}
    return {**env, **stack_environment(home, ports), "PYTHONPATH": str(ROOT)}


def _env_file_value(path: Path, name: str) -> str:
    for line in path.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in {path}")


def _deploy_and_run(api: str, auth: str) -> tuple[str, list[str], list[str], dict]:
    """Deploys the probe flow to the `cpu` pool and runs it; returns (final state, its log
    lines, its artifacts' contents, its parameters and job variables)."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api, PREFECT_API_AUTH_STRING: auth}):
        probe = flow.from_source(
            source=str(ROOT), entrypoint="tests/auth_probe/probe_flow.py:auth_probe"
        )
        probe.deploy(name="probe", work_pool_name="cpu", print_next_steps=False)
        run = run_deployment("auth-probe/probe", parameters={"note": "hello"}, timeout=240)
        with get_client(sync_client=True) as client:
            # the run's process sends its logs in batches: the last may land after its end
            for _ in range(30):
                logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
                if any("auth probe says hello" in log.message for log in logs):
                    break
                time.sleep(1)
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            run = client.read_flow_run(run.id)
    recorded = {"parameters": run.parameters, "job_variables": run.job_variables}
    return (
        run.state.name if run.state else "none",
        [log.message for log in logs],
        [str(a.data) for a in artifacts],
        recorded,
    )


def test_the_prefect_api_refuses_requests_without_the_auth_string(tmp_path):
    home = tmp_path / "auth-stack"
    home.mkdir()
    env = _auth_stack_env(home)
    api = env["PREFECT_API_URL"]
    try:
        up = cli("up", "--auth", "--workers", env=env, timeout=600)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "auth: on" in up.stdout
        auth = _env_file_value(home / "stack.env", "PREFECT_API_AUTH_STRING")
        assert auth.startswith("compare-models:") and len(auth) > 30
        header = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
        wrong = {"Authorization": "Basic " + base64.b64encode(b"compare-models:guess").decode()}

        assert httpx.post(f"{api}/flows/filter", json={}).status_code == 401
        assert httpx.post(f"{api}/flows/filter", json={}, headers=wrong).status_code == 401
        assert httpx.post(f"{api}/flows/filter", json={}, headers=header).status_code == 200
        assert httpx.get(f"{api}/health").status_code == 200  # probes need no credentials

        # the CLI finds the string in the env file and sends it; the worker came up with it
        status = cli("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert '"worker-cpu"' in status.stdout and auth not in status.stdout + status.stderr
        state, logs, artifacts, recorded = _deploy_and_run(api, auth)
        assert state == "Completed", (state, logs)
        assert any("auth probe says hello" in line for line in logs)
        everything = "\n".join([*logs, *artifacts, repr(recorded), up.stdout, up.stderr])
        everything += "".join(p.read_text(errors="replace") for p in (home / "logs").glob("*.log"))
        assert auth not in everything and auth.split(":", 1)[1] not in everything
    finally:
        down = cli("down", env=env, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
