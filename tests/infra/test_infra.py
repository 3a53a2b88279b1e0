"""Static checks of the deployment files under infra/ (fast, no network, no Docker).

What these tests cannot do is start the containers: see infra/README.md, "What was and was
not exercised", for the checks made with Docker Compose, hadolint, check-jsonschema,
kubernetes-validate and a Prefect server.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.support.runs import ROOT  # noqa: E402

INFRA = ROOT / "infra"
COMPOSE_FILE = INFRA / "compose" / "docker-compose.yml"
COMPOSE_SCHEMA = INFRA / "compose" / "compose-spec.schema.json"
ENV_EXAMPLE = INFRA / "compose" / ".env.example"
DOCKERFILE = INFRA / "docker" / "Dockerfile.worker"
DOCKERIGNORE = INFRA / "docker" / "Dockerfile.worker.dockerignore"
K8S_TEMPLATE = INFRA / "k8s" / "gpu-work-pool-base-job-template.json"
PREFECT_YAML = ROOT / "prefect.yaml"

SERVICES = {
    "minio",
    "minio-init",
    "postgres",
    "prefect-server",
    "deploy",
    "worker-cpu",
    "worker-gpu",
}
APP_SERVICES = {"deploy", "worker-cpu", "worker-gpu"}
APP_ENV = {
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "COMPARE_MODELS_BUCKET",
    "PREFECT_API_URL",
    "COMPARE_MODELS_HOME",
    "PREFECT_WORKER_QUERY_SECONDS",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
    "PREFECT_API_AUTH_STRING",
}
SECRET_KEY = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|ROOT_USER|_KEY$|AUTH_STRING")
REQUIRED_REF = re.compile(r"^\$\{(?P<name>[A-Z][A-Z0-9_]*):\?[^}]*\}$")
PLACEHOLDER = re.compile(r"\{\{\s*([\w.\-]+)\s*\}\}")


# ── helpers ──────────────────────────────────────────────────────────────────


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


def compose_unescape(text: str) -> str:
    """What the container receives: Compose turns `$$` into `$`."""
    return text.replace("$$", "$")


def dockerfile_stages() -> dict[str, dict]:
    """{stage name: {"from": image, "lines": [instruction lines]}} with continuations joined."""
    logical: list[str] = []
    buf = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: dict[str, dict] = {}
    current = None
    for line in logical:
        m = re.match(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", line, re.IGNORECASE)
        if m:
            current = (m.group(2) or f"stage{len(stages)}").lower()
            stages[current] = {"from": m.group(1), "lines": []}
        elif current:
            stages[current]["lines"].append(line)
    return stages


# ── docker-compose.yml ───────────────────────────────────────────────────────


def test_compose_has_the_services_and_no_version_key(compose: dict, services: dict) -> None:
    assert "version" not in compose, "Compose Specification files have no `version:` key"
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"


def test_compose_validates_against_the_vendored_compose_spec_schema(compose: dict) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(compose), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors
    )


def test_vendored_schema_rejects_a_broken_file(compose: dict) -> None:
    """The schema check above has teeth: an unknown service key fails it."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker-gpu"]["gpus_please"] = True
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert any("gpus_please" in e.message for e in validator.iter_errors(broken))


def test_gpu_worker_reserves_an_nvidia_gpu(services: dict) -> None:
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices
    ), devices
    for d in devices:
        assert not ("count" in d and "device_ids" in d), (
            "count and device_ids are mutually exclusive"
        )
    assert "devices" not in json.dumps(services["worker-cpu"].get("deploy", {}))


@pytest.mark.parametrize(
    "service, pool, target", [("worker-cpu", "cpu", "cpu"), ("worker-gpu", "gpu", "gpu")]
)
def test_workers_poll_their_pool_with_limit_2(
    services: dict, service: str, pool: str, target: str
) -> None:
    svc = services[service]
    cmd = command_text(svc)
    assert cmd.startswith("prefect worker start")
    assert (
        re.search(rf"--pool {pool}\b", cmd)
        and "--type process" in cmd
        and re.search(r"--limit 2\b", cmd)
    ), cmd
    assert svc["build"]["target"] == target
    assert (
        COMPOSE_FILE.parent / svc["build"]["context"] / svc["build"]["dockerfile"]
    ).resolve() == DOCKERFILE
    env = env_of(svc)
    assert env["PREFECT_WORKER_QUERY_SECONDS"] == "5"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["COMPARE_MODELS_WORKER_SLOTS"] == "2", (
        "the worker's TF thread share must match its --limit"
    )


def test_build_context_is_the_repository_root(services: dict) -> None:
    for name in APP_SERVICES:
        context = (COMPOSE_FILE.parent / services[name]["build"]["context"]).resolve()
        assert context == ROOT, f"{name}: build context {context}"


def test_app_services_share_the_settings_anchor(compose: dict, services: dict) -> None:
    anchor = compose["x-app-env"]
    assert APP_ENV <= set(anchor), APP_ENV - set(anchor)
    assert anchor["AWS_ENDPOINT_URL_S3"] == "http://minio:9000"
    assert anchor["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert anchor["COMPARE_MODELS_BUCKET"] == "${COMPARE_MODELS_BUCKET:-compare-models}"
    assert anchor["COMPARE_MODELS_HOME"] == "/var/lib/compare-models"
    for name in APP_SERVICES:
        env = env_of(services[name])
        assert all(env[k] == str(anchor[k]) for k in anchor), f"{name} does not use x-app-env"


def test_dependency_order(services: dict) -> None:
    def cond(service: str, dep: str) -> str:
        return services[service]["depends_on"][dep]["condition"]

    assert cond("minio-init", "minio") == "service_healthy"
    assert cond("prefect-server", "postgres") == "service_healthy"
    assert cond("deploy", "prefect-server") == "service_healthy"
    for worker in ("worker-cpu", "worker-gpu"):
        assert cond(worker, "prefect-server") == "service_healthy"
        assert cond(worker, "minio-init") == "service_completed_successfully"
    for name in ("minio", "postgres", "prefect-server", "worker-cpu", "worker-gpu"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for one_shot in ("minio-init", "deploy"):
        assert services[one_shot].get("restart") == "no"


def test_minio_and_bucket(services: dict) -> None:
    minio = services["minio"]
    assert minio["image"].split(":-", 1)[-1].startswith("minio/minio:")
    assert command_text(minio) == "server /data --console-address :9001"
    assert any(str(v).endswith(":/data") for v in minio["volumes"])
    script = compose_unescape(command_text(services["minio-init"]))
    assert 'mc mb --ignore-existing "local/$BUCKET"' in script
    assert env_of(services["minio-init"])["BUCKET"] == "${COMPARE_MODELS_BUCKET:-compare-models}"


def run_minio_init(script: str, tmp_path: Path, fake_mc: str) -> subprocess.CompletedProcess:
    """Run minio-init's shell script (unescaped) with a stand-in `mc` (`fake_mc`: the body of a
    /bin/sh script) first on PATH and the app credentials in its environment."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "mc").write_text("#!/bin/sh\n" + fake_mc)
    (bindir / "mc").chmod(0o755)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "BUCKET": "compare-models",
        "MINIO_ROOT_USER": "root-user",
        "MINIO_ROOT_PASSWORD": "root-password",
        "APP_ACCESS_KEY": "app-key",
        "APP_SECRET_KEY": "app-secret-123",
    }
    # The container writes /tmp/compare-models-rw.json; run the script with that path moved.
    script = script.replace("/tmp/compare-models-rw.json", str(tmp_path / "rw.json"))
    return subprocess.run(
        ["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=30
    )


@pytest.mark.skipif(not Path("/bin/sh").exists(), reason="needs /bin/sh")
def test_minio_init_script_runs_and_writes_a_valid_policy(services: dict, tmp_path: Path) -> None:
    """Run minio-init's shell script with a stand-in `mc` that records its calls."""
    init = services["minio-init"]
    assert init["entrypoint"][:2] == ["/bin/sh", "-ec"]
    calls = tmp_path / "calls.txt"
    policy_copy = tmp_path / "policy.json"
    done = run_minio_init(
        compose_unescape(init["command"][0]),
        tmp_path,
        f'echo "$*" >> "{calls}"\n'
        f'if [ "$1 $2 $3" = "admin policy create" ]; then cp "$6" "{policy_copy}"; fi\n',
    )
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0] == "alias set local http://minio:9000 root-user root-password"
    assert "mb --ignore-existing local/compare-models" in lines
    assert "admin user add local app-key app-secret-123" in lines
    assert "admin policy attach local compare-models-rw --user app-key" in lines
    policy = json.loads(policy_copy.read_text())
    resources = {r for s in policy["Statement"] for r in s["Resource"]}
    assert resources == {"arn:aws:s3:::compare-models", "arn:aws:s3:::compare-models/*"}


def _walk_env(compose: dict):
    yield "x-app-env", compose["x-app-env"]
    for name, svc in compose["services"].items():
        yield name, env_of(svc)


def test_no_literal_secrets(compose: dict) -> None:
    for where, env in _walk_env(compose):
        for key, value in env.items():
            if SECRET_KEY.search(key):
                assert REQUIRED_REF.match(str(value)), (
                    f"{where}.{key} must be a required ${{VAR:?...}} reference, not {value!r}"
                )
    url = env_of(compose["services"]["prefect-server"])["PREFECT_API_DATABASE_CONNECTION_URL"]
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert REQUIRED_REF.match(password), (
        "the database URL's password must come from the environment"
    )
    for svc in compose["services"].values():
        assert "env_file" not in svc or all(".env.example" not in str(f) for f in svc["env_file"])


def test_env_example_lists_every_required_variable(compose: dict) -> None:
    text = json.dumps(compose)  # values only, not the comments
    required = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):\?", text))
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required == set(example), (
        f"required in compose: {sorted(required)}, in .env.example: {sorted(example)}"
    )
    assert all(v.startswith("change-me") for v in example.values()), (
        "placeholders only in .env.example"
    )


def test_env_file_is_git_ignored() -> None:
    patterns = (INFRA / "compose" / ".gitignore").read_text().splitlines()
    assert ".env" in patterns
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env"], cwd=ROOT)
        assert ignored.returncode == 0, "infra/compose/.env is not git-ignored"
        kept = subprocess.run(["git", "check-ignore", "-q", "infra/compose/.env.example"], cwd=ROOT)
        assert kept.returncode == 1, "infra/compose/.env.example must not be git-ignored"


def test_prefect_server_uses_postgres_and_no_analytics(services: dict) -> None:
    server = services["prefect-server"]
    env = env_of(server)
    url = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://prefect:") and url.endswith(
        "@postgres:5432/prefect"
    ), url
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert command_text(server).startswith("prefect server start --host 0.0.0.0")
    assert "/api/health" in command_text({"command": server["healthcheck"]["test"]})
    assert any(str(p).endswith(":4200") for p in server["ports"])
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in command_text({"command": postgres["healthcheck"]["test"]})
    assert (
        env_of(postgres)["POSTGRES_USER"] == "prefect"
        and env_of(postgres)["POSTGRES_DB"] == "prefect"
    )


def test_published_ports_bind_to_loopback(services: dict) -> None:
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_deploy_job_applies_prefect_yaml(services: dict) -> None:
    deploy = services["deploy"]
    assert deploy["build"]["target"] == "cpu"
    assert command_text(deploy) == "compare-models deploy"


def test_prefect_yaml_pools_are_served_by_compose_workers(services: dict) -> None:
    if not PREFECT_YAML.exists():
        pytest.skip("prefect.yaml not present")
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    pools = {d["work_pool"]["name"] for d in spec.get("deployments", []) if d.get("work_pool")}
    served = {
        re.search(r"--pool (\S+)", command_text(s)).group(1)
        for n, s in services.items()
        if n.startswith("worker-")
    }
    assert pools <= served, f"deployments use pools {pools}, compose workers serve {served}"


# ── Dockerfile.worker ────────────────────────────────────────────────────────


def _stage_text(stages: dict[str, dict], name: str) -> str:
    """A stage's instructions together with those of the stages it is built FROM."""
    lines: list[str] = []
    while name in stages:
        lines = stages[name]["lines"] + lines
        name = stages[name]["from"].lower()
    return "\n".join(lines)


def test_dockerfile_targets() -> None:
    stages = dockerfile_stages()
    # Both targets on slim Python; the GPU one gets CUDA/cuDNN as TensorFlow's own wheels
    # (the `gpu` extra, tensorflow[and-cuda]), not from a base image with its own cuDNN.
    assert stages["base"]["from"] == "python:3.11-slim"
    assert stages["gpu"]["from"] == "base" and stages["cpu"]["from"] == "base"
    for name in ("gpu", "cpu"):
        lines = stages[name]["lines"]
        text = _stage_text(stages, name)
        users = [line.split()[1] for line in lines if line.upper().startswith("USER ")]
        assert users and users[-1].split(":")[0] not in {"root", "0"}, (
            f"{name}: must end as a non-root user"
        )
        assert "WORKDIR /app" in text.splitlines()
        assert "COMPARE_MODELS_HOME=/var/lib/compare-models" in text
        assert (
            "PIP_CONSTRAINT=/etc/compare-models/constraints.txt" in text
            and 'echo "prefect==${PREFECT_VERSION}"' in text
        )
        pip_lines = [line for line in lines if "pip install" in line]
        assert pip_lines and all("--no-cache-dir" in line for line in pip_lines)
        assert "COMPARE_MODELS_ROOT" not in text, (
            "the pull step finds the project itself (deployments/pull.py)"
        )
    gpu_text = "\n".join(stages["gpu"]["lines"])
    # The GPU target builds either way: TensorFlow's CUDA wheels (gpu, the default) or JAX's
    # (gpu-jax), each an extra of pyproject.toml; the build check checks that extra's backend.
    assert "ARG GPU_EXTRA=gpu" in gpu_text
    assert "['optional-dependencies'][os.environ['GPU_EXTRA']]" in gpu_text
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, backend in (("gpu", "tensorflow"), ("gpu-jax", "jax")):
        assert f"{extra}) echo {backend} ;;" in gpu_text and extra in extras
    assert any(r.startswith("jax[cuda") for r in extras["gpu-jax"])
    assert (
        'KERAS_BACKEND="$(cat /etc/compare-models/keras-backend)" python3 -m '
        "compare_models.device --expect-cuda" in gpu_text
    )  # the build check
    assert (
        "NVIDIA_DRIVER_CAPABILITIES=compute,utility" in gpu_text
    )  # else no libcuda in a non-CUDA image
    # cpu: no GPU extra; both targets add the MLflow client (the `mlflow` extra), if pyproject has it
    cpu_text = "\n".join(stages["cpu"]["lines"])
    assert "GPU_EXTRA" not in cpu_text and "'gpu" not in cpu_text
    for name in ("gpu", "cpu"):
        assert "p['optional-dependencies'].get('mlflow', [])" in "\n".join(stages[name]["lines"])
    assert not any(s["from"].startswith("tensorflow/") for s in stages.values())


def test_dockerfile_copies_files_that_exist() -> None:
    stages = dockerfile_stages()
    for line in stages["source"]["lines"]:
        if line.upper().startswith("COPY ") and "--from" not in line:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"Dockerfile copies {src}, which the repository lacks"


def test_dockerignore_keeps_secrets_out_of_the_build_context() -> None:
    patterns = DOCKERIGNORE.read_text().splitlines()
    assert "**/.env" in patterns and ".git" in patterns and ".venv" in patterns


def test_pull_step_finds_the_project_where_the_flow_runs() -> None:
    """No deploy-time path: the step resolves the installed project on the worker, and the
    images install the project (editable) with the step's module."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    assert spec["pull"] == [{"deployments.pull.set_project_root": {}}]
    assert "{{ $COMPARE_MODELS_ROOT }}" not in PREFECT_YAML.read_text()
    for name in ("gpu", "cpu"):
        text = "\n".join(dockerfile_stages()[name]["lines"])
        assert "--editable ." in text and "deployments.pull" in text


# ── Kubernetes work pool template ────────────────────────────────────────────


@pytest.fixture(scope="module")
def k8s_template() -> dict:
    return json.loads(K8S_TEMPLATE.read_text())


def _container(template: dict) -> dict:
    return template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][
        0
    ]


def test_k8s_template_shape(k8s_template: dict) -> None:
    assert set(k8s_template) == {"job_configuration", "variables"}
    manifest = k8s_template["job_configuration"]["job_manifest"]
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    pod = manifest["spec"]["template"]["spec"]
    # The Kubernetes worker refuses a manifest without these (prefect_kubernetes' base manifest).
    assert pod["restartPolicy"] == "Never" and pod["completions"] == 1 and pod["parallelism"] == 1
    container = _container(k8s_template)
    assert container["name"] == "prefect-job"
    assert container["image"] == "{{ image }}"
    assert container["env"] == "{{ env }}"
    assert container["args"] == "{{ command }}"
    assert manifest["spec"]["backoffLimit"] == "{{ backoff_limit }}"
    assert manifest["spec"]["ttlSecondsAfterFinished"] == "{{ finished_job_ttl }}"
    props = k8s_template["variables"]["properties"]
    assert props["backoff_limit"]["default"] == 0
    assert (
        isinstance(props["finished_job_ttl"]["default"], int)
        and props["finished_job_ttl"]["default"] > 0
    )


def test_k8s_gpu_request_and_limit_use_the_gpu_count_variable(k8s_template: dict) -> None:
    resources = _container(k8s_template)["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert resources["requests"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    gpu_count = k8s_template["variables"]["properties"]["gpu_count"]
    assert (
        gpu_count["type"] == "integer" and gpu_count["default"] == 1 and gpu_count["minimum"] == 1
    )


def test_k8s_gpu_scheduling_and_secret(k8s_template: dict) -> None:
    pod = k8s_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert pod["nodeSelector"] == "{{ node_selector }}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    env_from = _container(k8s_template)["envFrom"]
    assert env_from == [{"secretRef": {"name": "{{ s3_secret_name }}"}}]
    assert (
        k8s_template["variables"]["properties"]["s3_secret_name"]["default"] == "compare-models-s3"
    )


def test_k8s_every_placeholder_is_a_declared_variable(k8s_template: dict) -> None:
    """The same rule the Prefect server enforces when the work pool is created."""
    used = set(PLACEHOLDER.findall(json.dumps(k8s_template["job_configuration"])))
    declared = set(k8s_template["variables"]["properties"])
    assert used <= declared, f"undeclared variables: {used - declared}"


def test_k8s_template_renders_the_gpu_count() -> None:
    """Prefect's own templating turns the placeholder into the integer Kubernetes expects."""
    templating = pytest.importorskip("prefect.utilities.templating")
    template = json.loads(K8S_TEMPLATE.read_text())
    defaults = {
        k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v
    }
    for values, expected in ((defaults, 1), ({**defaults, "gpu_count": 2}, 2)):
        rendered = templating.apply_values(template["job_configuration"], values)
        container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == expected
        assert container["resources"]["requests"]["nvidia.com/gpu"] == expected
        assert container["envFrom"][0]["secretRef"]["name"] == "compare-models-s3"
        # No default image: each deployment sets one (the server refuses a flow run without it,
        # tests/infra/test_cluster_k8s.py), so the worker never falls back to Prefect's own image.
        assert "image" not in defaults and "image" not in container
        assert rendered["job_manifest"]["spec"]["backoffLimit"] == 0


# ── documentation ────────────────────────────────────────────────────────────


def test_readmes_name_the_commands() -> None:
    docker = (INFRA / "docker" / "README.md").read_text()
    assert (
        "docker build -f infra/docker/Dockerfile.worker --target gpu -t compare-models-worker:gpu ."
        in docker
    )
    k8s = (INFRA / "k8s" / "README.md").read_text()
    assert (
        "prefect work-pool create gpu --type kubernetes --base-job-template infra/k8s/gpu-work-pool-base-job-template.json"
        in k8s
    )
    assert "kubectl create secret generic compare-models-s3" in k8s
    infra = (INFRA / "README.md").read_text()
    assert "cp infra/compose/.env.example infra/compose/.env" in infra
    assert "What was and was not exercised" in infra


def test_the_prefect_api_requires_the_auth_string_the_clients_send(services: dict, compose) -> None:
    """Prefect's own API authentication is on: the server requires the string that every
    application container sends, both from one required variable (never a default)."""
    server = env_of(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"]
    client = compose["x-app-env"]["PREFECT_API_AUTH_STRING"]
    assert REQUIRED_REF.match(server) and REQUIRED_REF.match(client)
    assert REQUIRED_REF.match(server)["name"] == REQUIRED_REF.match(client)["name"]
    for name in APP_SERVICES:
        assert env_of(services[name])["PREFECT_API_AUTH_STRING"] == client
