"""Compose next to a Kubernetes GPU pool: the optional local GPU worker, browser-reachable
presigned links, a MinIO init step that fails on real errors, one Prefect version everywhere,
and the first-day checklist. Static checks (no Docker); the compose schema check itself is in
tests/infra/test_infra.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.infra.test_infra import (
    COMPOSE_SCHEMA,
    ENV_EXAMPLE,
    compose_unescape,
    env_of,
    run_minio_init,
)
from tests.support.runs import ROOT

INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "docker" / "Dockerfile.worker"


def prefect_version() -> str:
    return re.search(r"^ARG PREFECT_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE).group(1)


# ── the local GPU worker is optional ───────────────────────────────────────────


def test_gpu_worker_is_behind_a_profile_and_nothing_depends_on_it(compose: dict) -> None:
    services = compose["services"]
    assert services["worker-gpu"]["profiles"] == ["local-gpu"]
    # the optional MLflow server is behind a profile of its own (tests/infra/test_mlflow_infra.py)
    optional = {"worker-gpu", "mlflow", "mlflow-db-init"}
    for name, svc in services.items():
        if name not in optional:
            assert "profiles" not in svc, f"{name} must start by default"
            assert "worker-gpu" not in (svc.get("depends_on") or {}), (
                f"{name} would pull worker-gpu in"
            )


def test_profiles_validate_against_the_compose_schema(compose: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert not list(validator.iter_errors(compose))
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker-gpu"]["profiles"] = "local-gpu"  # must be a list
    assert any(
        "profiles" in "/".join(map(str, e.absolute_path)) for e in validator.iter_errors(broken)
    )


def test_docs_say_how_to_start_the_gpu_worker_and_when_not_to() -> None:
    readme = (INFRA / "README.md").read_text()
    assert (
        "--profile local-gpu" in readme and "COMPOSE_PROFILES=local-gpu" in ENV_EXAMPLE.read_text()
    )
    assert "Kubernetes pool" in readme


# ── presigned links a browser can open ────────────────────────────────────────


def test_workers_presign_for_the_published_minio_port(compose: dict) -> None:
    anchor = compose["x-app-env"]
    assert anchor["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"  # what the containers use
    assert (
        anchor["COMPARE_MODELS_PUBLIC_S3_URL"]
        == "${COMPARE_MODELS_PUBLIC_S3_URL:-http://localhost:${MINIO_API_PORT:-9000}}"
    )
    for name in ("deploy", "worker-cpu", "worker-gpu"):
        assert "COMPARE_MODELS_PUBLIC_S3_URL" in env_of(compose["services"][name])
    assert "# COMPARE_MODELS_PUBLIC_S3_URL=http://localhost:9000" in ENV_EXAMPLE.read_text()


# ── minio-init: only "already attached" is ignored ─────────────────────────────


def _run_minio_init(
    compose: dict, tmp_path: Path, attach_output: str, attach_status: int
) -> subprocess.CompletedProcess:
    return run_minio_init(
        compose_unescape(compose["services"]["minio-init"]["command"][0]),
        tmp_path,
        'if [ "$1 $2 $3" = "admin policy attach" ]; then\n'
        f"  echo '{attach_output}' >&2; exit {attach_status}\n"
        "fi\n",
    )


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
def test_minio_init_accepts_an_already_attached_policy(compose: dict, tmp_path: Path) -> None:
    # mc's message when the policy is attached already (MinIO ErrAdminPolicyChangeAlreadyApplied)
    done = _run_minio_init(
        compose,
        tmp_path,
        "mc: <ERROR> Unable to attach the policy: The specified policy change "
        "is already in effect.",
        1,
    )
    assert done.returncode == 0, done.stderr
    assert "already attached" in done.stdout and "are ready" in done.stdout


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
@pytest.mark.parametrize(
    "message",
    [
        "mc: <ERROR> Unable to attach the policy: The specified user does not exist.",
        "mc: <ERROR> Unable to initialize admin connection. Access Denied.",
    ],
)
def test_minio_init_fails_on_any_other_attach_error(
    compose: dict, tmp_path: Path, message: str
) -> None:
    done = _run_minio_init(compose, tmp_path, message, 1)
    assert done.returncode != 0
    assert message in done.stderr and "are ready" not in done.stdout


# ── one Prefect version ────────────────────────────────────────────────────────


def test_prefect_is_one_version_everywhere(compose: dict) -> None:
    version = prefect_version()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'"prefect>={version},<4"' in pyproject, (
        "the images' Prefect is the project's lower bound"
    )
    assert (
        compose["services"]["prefect-server"]["image"]
        == f"${{PREFECT_IMAGE:-prefecthq/prefect:{version}-python3.11}}"
    )
    assert f"# PREFECT_IMAGE=prefecthq/prefect:{version}-python3.11" in ENV_EXAMPLE.read_text()
    worker = next(
        d
        for d in yaml.safe_load_all((INFRA / "k8s" / "gpu-worker.yaml").read_text())
        if d["kind"] == "Deployment"
    )
    assert (
        worker["spec"]["template"]["spec"]["containers"][0]["image"]
        == f"prefecthq/prefect:{version}-python3.11-kubernetes"
    )
    assert yaml.safe_load((ROOT / "prefect.yaml").read_text())["prefect-version"] == version
    import prefect

    assert prefect.__version__ == version, (
        "the test environment runs another Prefect than the images"
    )


# ── the first-day checklist ────────────────────────────────────────────────────


def test_readme_has_a_gpu_cluster_checklist_with_commands() -> None:
    readme = (INFRA / "README.md").read_text()
    checklist = readme[readme.index("First day with a GPU cluster") :]
    for command in (
        "kubectl get nodes -o jsonpath=",
        "nvidia\\.com/gpu",
        "docker run --rm --gpus all $IMAGE python -m compare_models.device --require-gpu",
        "prefect work-pool inspect gpu",
        "prefect deployment inspect train-model/gpu",
        "deployments.pull.set_project_root",
        "kubectl run",
        "curl",
        "/health",
    ):
        assert command in checklist, command
    assert "not `localhost`" in readme or "Neither may be `localhost`" in readme


# ── where the code is found ────────────────────────────────────────────────────


def test_deployments_import_their_flows_from_the_installed_package() -> None:
    """Module-path entrypoints and a pull step without a path: nothing depends on the deploying
    machine's checkout or on the worker's working directory."""
    import importlib

    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert spec["pull"] == [{"deployments.pull.set_project_root": {}}]
    for deployment in spec["deployments"]:
        module, _, name = deployment["entrypoint"].rpartition(".")
        assert module.startswith("flows.") and ":" not in deployment["entrypoint"]
        assert hasattr(importlib.import_module(module), name)
    assert "$COMPARE_MODELS_ROOT" not in (ROOT / "prefect.yaml").read_text()
