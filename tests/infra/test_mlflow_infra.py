"""The optional MLflow tracking server in the deployment files: the Compose services behind the
profile `mlflow` (infra/compose/docker-compose.yml), its image (infra/docker/Dockerfile.mlflow)
and its Kubernetes Deployment and Service (infra/k8s/mlflow.yaml). Static checks, no Docker
and no cluster: the server's command lines are parsed by MLflow's own CLI and its host-header
check is MLflow's own function; the manifests are validated with kubernetes-validate.
infra/check.sh runs Compose, hadolint and kubernetes-validate on the same files."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.infra.test_infra import (
    COMPOSE_FILE,
    COMPOSE_SCHEMA,
    ENV_EXAMPLE,
    INFRA,
    K8S_TEMPLATE,
    REQUIRED_REF,
    compose_unescape,
    env_of,
)
from tests.infra.test_infra import DOCKERFILE as WORKER_DOCKERFILE
from tests.support.runs import ROOT

DOCKERFILE = INFRA / "docker" / "Dockerfile.mlflow"
MANIFEST = INFRA / "k8s" / "mlflow.yaml"
GPU_WORKER = INFRA / "k8s" / "gpu-worker.yaml"
PROFILE = "mlflow"
MLFLOW_SERVICES = {"mlflow", "mlflow-db-init"}
MLFLOW_VERSION = "3.17.2"
K8S_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")
TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|_KEY$|AUTH_STRING|STORE_URI")


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d]


def _by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


def _container(docs: list[dict]) -> dict:
    return _by_kind(docs)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def _parse_server_args(args: list[str]) -> dict:
    """`mlflow server`'s own click command parses the arguments (unknown flags fail here)."""
    cli = pytest.importorskip("mlflow.cli")
    assert args[:2] == ["mlflow", "server"], args
    ctx = cli.server.make_context("server", list(args[2:]))
    return ctx.params


def _allowed(allowed_hosts: str, host: str) -> bool:
    security = pytest.importorskip("mlflow.server.security_utils")
    hosts = [h.strip() for h in allowed_hosts.split(",")]
    return security.is_allowed_host_header(hosts, host)


def _dockerfile_pins() -> dict[str, str]:
    return dict(re.findall(r"'([A-Za-z0-9_.\-]+)==([^']+)'", DOCKERFILE.read_text()))


# ── Compose: optional, behind its own profile ─────────────────────────────────


def test_mlflow_is_behind_its_profile_and_nothing_outside_it_depends_on_it(services) -> None:
    for name in MLFLOW_SERVICES:
        assert services[name]["profiles"] == [PROFILE], name
    for name, svc in services.items():
        if PROFILE in svc.get("profiles", []):
            continue
        deps = set(svc.get("depends_on") or {})
        assert not deps & MLFLOW_SERVICES, f"{name} would pull the optional MLflow server in"
        assert "links" not in svc and "extends" not in svc
    # ...and what MLflow needs starts first, once: its database and the app's bucket key
    deps = services["mlflow"]["depends_on"]
    assert deps["mlflow-db-init"]["condition"] == "service_completed_successfully"
    assert deps["minio-init"]["condition"] == "service_completed_successfully"
    assert services["mlflow-db-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["mlflow-db-init"]["restart"] == "no"


def test_compose_with_mlflow_validates_against_the_vendored_schema(compose: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = list(validator.iter_errors(compose))
    assert not errors, [e.message for e in errors]
    broken = copy.deepcopy(compose)
    broken["services"]["mlflow"]["profiles"] = PROFILE  # must be a list
    broken["services"]["mlflow-db-init"]["allowed_hosts"] = "*"  # no such key
    messages = [
        "/".join(map(str, e.absolute_path)) + " " + e.message for e in validator.iter_errors(broken)
    ]
    assert any("mlflow/profiles" in m for m in messages), messages
    assert any("allowed_hosts" in m for m in messages), messages


def test_mlflow_publishes_its_port_on_loopback_only(services) -> None:
    assert services["mlflow"]["ports"] == ["127.0.0.1:${MLFLOW_PORT:-5000}:5000"]
    assert "ports" not in services["mlflow-db-init"]


def test_mlflow_server_command_and_health(services) -> None:
    command = services["mlflow"]["command"]
    params = _parse_server_args(command)
    assert params["host"] == "0.0.0.0" and params["port"] == 5000
    assert params["serve_artifacts"] is True and params["workers"] == "1"
    assert params["artifacts_destination"] == "s3://${COMPARE_MODELS_BUCKET:-compare-models}/mlflow"
    # the backend store (with its password) comes from the environment, never the command line
    assert "--backend-store-uri" not in command and "postgres" not in " ".join(command)
    # containers reach it as http://mlflow:5000, the browser at the published port
    allowed = params["allowed_hosts"]
    for host in ("mlflow:5000", "mlflow", "localhost:5000", "127.0.0.1:5000", "localhost:5123"):
        assert _allowed(allowed, host), host
    for host in ("evil.example.com", "mlflow.evil.example.com:5000", "minio:9000"):
        assert not _allowed(allowed, host), host
    assert "*" not in allowed.split(",")
    health = " ".join(services["mlflow"]["healthcheck"]["test"])
    assert "http://127.0.0.1:5000/health" in health
    build = services["mlflow"]["build"]
    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert services["mlflow"]["image"] == f"compare-models-mlflow:{MLFLOW_VERSION}"


def test_mlflow_gets_the_app_key_and_its_own_database_password_only(compose, services) -> None:
    env = env_of(services["mlflow"])
    app = compose["x-app-env"]
    # the bucket-scoped key the workers get, never MinIO's root credentials
    assert env["AWS_ACCESS_KEY_ID"] == app["AWS_ACCESS_KEY_ID"]
    assert env["AWS_SECRET_ACCESS_KEY"] == app["AWS_SECRET_ACCESS_KEY"]
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    text = json.dumps(services["mlflow"])
    assert "MINIO_ROOT" not in text and "POSTGRES_PASSWORD" not in text
    # its backend store: the database `mlflow` of the compose PostgreSQL, as the role `mlflow`
    m = re.fullmatch(
        r"postgresql://mlflow:(?P<password>.+)@postgres:5432/mlflow",
        env["MLFLOW_BACKEND_STORE_URI"],
    )
    assert m and REQUIRED_REF.match(m["password"]), env["MLFLOW_BACKEND_STORE_URI"]
    assert REQUIRED_REF.match(m["password"])["name"] == "MLFLOW_DB_PASSWORD"
    init = env_of(services["mlflow-db-init"])
    assert REQUIRED_REF.match(init["MLFLOW_DB_PASSWORD"])["name"] == "MLFLOW_DB_PASSWORD"
    assert REQUIRED_REF.match(init["PGPASSWORD"])["name"] == "POSTGRES_PASSWORD"
    for name in MLFLOW_SERVICES:
        for key, value in env_of(services[name]).items():
            if SECRET_NAME.search(key) and key != "MLFLOW_BACKEND_STORE_URI":
                assert REQUIRED_REF.match(value), f"{name}.{key}: {value!r}"


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
def test_mlflow_db_init_creates_the_role_and_database_only_if_missing(services, tmp_path) -> None:
    """Run mlflow-db-init's script with a stand-in `psql` that records its arguments and the SQL
    it is given: idempotent statements, the password read by psql from its environment."""
    init = services["mlflow-db-init"]
    assert init["image"] == services["postgres"]["image"]
    assert init["entrypoint"] == ["/bin/sh", "-ec"]
    env = env_of(init)
    assert (env["PGHOST"], env["PGUSER"], env["PGDATABASE"]) == ("postgres", "prefect", "prefect")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "psql").write_text(
        f'#!/bin/sh\necho "$*" > "{tmp_path}/args"\ncat > "{tmp_path}/sql"\n'
    )
    (bindir / "psql").chmod(0o755)
    done = subprocess.run(
        ["/bin/sh", "-ec", compose_unescape(init["command"][0])],
        env={"PATH": f"{bindir}:/usr/bin:/bin", "MLFLOW_DB_PASSWORD": "pw-123", "PGPASSWORD": "x"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args").read_text()
    assert "ON_ERROR_STOP=1" in args and "pw-123" not in args
    sql = (tmp_path / "sql").read_text()
    assert "pw-123" not in sql and "$" not in sql  # nothing left to the shell
    lines = [line.strip() for line in sql.splitlines() if line.strip()]
    assert lines[0] == r"\getenv mlflow_password MLFLOW_DB_PASSWORD"
    assert (
        "SELECT 'CREATE ROLE mlflow LOGIN' WHERE NOT EXISTS "
        "(SELECT FROM pg_roles WHERE rolname = 'mlflow') \\gexec" in lines
    )
    assert "ALTER ROLE mlflow WITH LOGIN PASSWORD :'mlflow_password';" in lines
    assert (
        "SELECT 'CREATE DATABASE mlflow OWNER mlflow' WHERE NOT EXISTS "
        "(SELECT FROM pg_database WHERE datname = 'mlflow') \\gexec" in lines
    )


def test_telemetry_is_off_in_compose(compose, services) -> None:
    for where, env in (("mlflow", env_of(services["mlflow"])), ("x-app-env", compose["x-app-env"])):
        for key, value in TELEMETRY_OFF.items():
            assert str(env.get(key)) == value, f"{where}.{key}"


def test_workers_log_to_mlflow_only_when_the_user_sets_the_uri(compose, services) -> None:
    assert compose["x-app-env"]["MLFLOW_TRACKING_URI"] == "${MLFLOW_TRACKING_URI:-}"  # empty: off
    for name in ("worker-cpu", "worker-gpu", "deploy"):
        assert env_of(services[name])["MLFLOW_TRACKING_URI"] == "${MLFLOW_TRACKING_URI:-}"
    example = ENV_EXAMPLE.read_text()
    assert "# MLFLOW_TRACKING_URI=http://mlflow:5000" in example
    assert "COMPOSE_PROFILES=mlflow" in example and "# MLFLOW_PORT=5000" in example
    assert re.search(r"^MLFLOW_DB_PASSWORD=change-me", example, re.MULTILINE)


# ── the image ──────────────────────────────────────────────────────────────────


def test_mlflow_image_pins_match_the_project() -> None:
    text = DOCKERFILE.read_text()
    worker_base = re.search(r"^FROM (\S+) AS base$", WORKER_DOCKERFILE.read_text(), re.MULTILINE)
    froms = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert froms == [worker_base.group(1)] == ["python:3.11-slim"]
    pins = _dockerfile_pins()
    assert pins["mlflow"] == MLFLOW_VERSION and {"boto3", "psycopg2-binary"} <= set(pins)
    # the pins lie inside pyproject's ranges where it names the package (any extra)
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [
        Requirement(r)
        for group in (project["dependencies"], *project.get("optional-dependencies", {}).values())
        for r in group
    ]
    for req in declared:
        if req.name in pins:
            assert req.specifier.contains(pins[req.name]), f"{req} excludes {pins[req.name]}"
    run = next(line for line in text.splitlines() if "pip install" in line)
    assert "--no-cache-dir" in run
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    for key, value in TELEMETRY_OFF.items():
        assert f"{key}={value}" in text
    assert "COPY" not in text and "ADD " not in text  # no file of the repository, no secret


def test_check_sh_validates_the_new_files() -> None:
    check = (INFRA / "check.sh").read_text()
    assert '--failure-threshold style "$ROOT/infra/docker/Dockerfile.mlflow"' in check
    assert "for manifest in gpu-worker.yaml mlflow.yaml" in check
    assert "--profile mlflow config --quiet" in check


# ── Kubernetes ─────────────────────────────────────────────────────────────────


def test_mlflow_manifests_are_valid_kubernetes_objects(k8s_docs) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    assert sorted(d["kind"] for d in k8s_docs) == ["Deployment", "Service"]
    for doc in k8s_docs:
        for version in K8S_VERSIONS:
            kv.validate(doc, version, strict=True)


def test_mlflow_lives_beside_the_gpu_worker(k8s_docs) -> None:
    worker = [d for d in yaml.safe_load_all(GPU_WORKER.read_text()) if d]
    namespace = json.loads(K8S_TEMPLATE.read_text())["variables"]["properties"]["namespace"][
        "default"
    ]
    assert (
        {d["metadata"]["namespace"] for d in k8s_docs}
        == {d["metadata"]["namespace"] for d in worker}
        == {namespace}
    )
    by_kind = _by_kind(k8s_docs)
    deployment, service = by_kind["Deployment"], by_kind["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/part-of"] == "compare-models"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP" and service["metadata"]["name"] == "mlflow"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 5000
    container_ports = {p["name"]: p["containerPort"] for p in _container(k8s_docs)["ports"]}
    assert container_ports[port["targetPort"]] == 5000


def test_mlflow_takes_every_credential_from_a_secret(k8s_docs) -> None:
    container = _container(k8s_docs)
    env = {e["name"]: e for e in container["env"]}
    assert "envFrom" not in container
    for name in ("MLFLOW_BACKEND_STORE_URI", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["key"], name
        assert not env[name]["valueFrom"]["secretKeyRef"].get("optional"), name
    for name, e in env.items():
        if SECRET_NAME.search(name):
            assert "secretKeyRef" in e.get("valueFrom", {}), f"{name} must come from a Secret"
        value = e.get("value") or ""
        assert not re.search(r"://[^/]*@", value), f"{name} has credentials in a URL"
    store = env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert store["name"] == "compare-models-mlflow"
    # S3: the Secret (and so the bucket-scoped key) the gpu pool's Jobs read
    s3_secret = json.loads(K8S_TEMPLATE.read_text())["variables"]["properties"]["s3_secret_name"]
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == s3_secret["default"]
    assert (
        env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_ENDPOINT_URL_S3"
    )


def test_mlflow_k8s_server_command(k8s_docs) -> None:
    container = _container(k8s_docs)
    args = container["args"]
    assert "command" not in container
    params = _parse_server_args(args)
    assert params["host"] == "0.0.0.0" and params["port"] == 5000 and params["workers"] == "1"
    assert params["serve_artifacts"] is True and "--backend-store-uri" not in args
    assert params["artifacts_destination"] == "s3://$(COMPARE_MODELS_BUCKET)/mlflow"
    # Kubernetes expands $(VAR) in args only from the container's own env (else it stays literal)
    defined = {e["name"] for e in container["env"]}
    assert set(re.findall(r"\$\((\w+)\)", " ".join(args))) <= defined
    namespace = k8s_docs[0]["metadata"]["namespace"]
    for host in (
        "mlflow:5000",
        f"mlflow.{namespace}:5000",
        f"mlflow.{namespace}.svc:5000",
        f"mlflow.{namespace}.svc.cluster.local:5000",
        "localhost:5000",  # kubectl port-forward
    ):
        assert _allowed(params["allowed_hosts"], host), host
    assert not _allowed(params["allowed_hosts"], f"mlflow.{namespace}.svc.evil.example.com")


def test_mlflow_k8s_telemetry_off_probes_and_hardening(k8s_docs) -> None:
    container = _container(k8s_docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    for key, value in TELEMETRY_OFF.items():
        assert env[key] == value
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    pod = _by_kind(k8s_docs)["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/tmp", env["HOME"]} <= mounts  # writable where the server writes
    assert container["resources"]["limits"]["memory"]


def test_mlflow_k8s_image_is_immutable_and_the_pinned_version(k8s_docs) -> None:
    container = _container(k8s_docs)
    image = container["image"]
    assert container["imagePullPolicy"] == "IfNotPresent"
    deploy = pytest.importorskip("deployments.deploy")
    assert deploy.check_image_reference(image) == image
    assert image.rsplit(":", 1)[1].startswith(MLFLOW_VERSION)


# ── documentation ──────────────────────────────────────────────────────────────


def test_readmes_say_how_to_run_mlflow() -> None:
    k8s = (INFRA / "k8s" / "README.md").read_text()
    assert "kubectl create secret generic compare-models-mlflow" in k8s
    assert "infra/k8s/mlflow.yaml" in k8s
    assert "http://mlflow.compare-models.svc:5000" in k8s and "MLFLOW_TRACKING_URI" in k8s
    infra = (INFRA / "README.md").read_text()
    assert "--profile mlflow" in infra and "MLFLOW_TRACKING_URI=http://mlflow:5000" in infra
    docker = (INFRA / "docker" / "README.md").read_text()
    assert "Dockerfile.mlflow" in docker
