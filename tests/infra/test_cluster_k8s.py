"""The Kubernetes `gpu` work pool: the Job its worker would create, rendered with
prefect-kubernetes' own code from the template and the train-model/gpu deployment's job
variables (prefect.yaml), validated against the Kubernetes API schema (kubernetes-validate,
offline); the worker manifest (infra/k8s/gpu-worker.yaml) likewise; and the image rules.

Needs the test extras `prefect-kubernetes` and `kubernetes-validate` (skipped without them).
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import uuid

import pytest
import yaml

from deployments.deploy import (
    GPU_IMAGE_ENV,
    IMAGE_PATTERN,
    MUTABLE_TAGS,
    TRAINING_BACKEND_ENV,
    check_image_reference,
    deploy_env,
)
from tests.support.runs import ROOT

K8S = ROOT / "infra" / "k8s"
TEMPLATE = K8S / "gpu-work-pool-base-job-template.json"
WORKER = K8S / "gpu-worker.yaml"
PREFECT_YAML = ROOT / "prefect.yaml"
IMAGE = "registry.example.com/compare-models-worker:0.1.0-3f2c1ab"
K8S_VERSIONS = ("1.29.0", "1.33.0", "1.37.0")


def _template() -> dict:
    return json.loads(TEMPLATE.read_text())


def _gpu_deployment() -> dict:
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    return next(d for d in spec["deployments"] if d["name"] == "gpu")


def _job_variables(image: str = IMAGE) -> dict:
    """The gpu deployment's job variables as `prefect deploy` stores them: `{{ $VAR }}`
    placeholders rendered by Prefect's own templating from the deployer's environment."""
    import os

    from prefect.utilities.templating import apply_values

    saved = os.environ.get(GPU_IMAGE_ENV)
    os.environ[GPU_IMAGE_ENV] = image
    try:
        return apply_values(
            copy.deepcopy(_gpu_deployment()["work_pool"]["job_variables"]),
            os.environ,
            remove_notset=False,
        )
    finally:
        if saved is None:
            os.environ.pop(GPU_IMAGE_ENV)
        else:
            os.environ[GPU_IMAGE_ENV] = saved


def render_job(job_variables: dict, flow_run_variables: dict | None = None) -> dict:
    """The Job manifest prefect-kubernetes' worker submits for a train-model/gpu flow run."""
    kw = pytest.importorskip("prefect_kubernetes.worker")
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse

    template = _template()
    flow = Flow(id=uuid.uuid4(), name="train-model")
    deployment = DeploymentResponse(
        id=uuid.uuid4(),
        name="gpu",
        flow_id=flow.id,
        work_pool_name="gpu",
        job_variables=job_variables,
    )
    flow_run = FlowRun(
        id=uuid.uuid4(),
        name="nightly-20250101-cnn",
        flow_id=flow.id,
        deployment_id=deployment.id,
        job_variables=flow_run_variables or {},
    )
    # As BaseWorker.resolve_for_flow_run merges them: deployment variables, then the flow run's.
    values = {**job_variables}
    run_vars = dict(flow_run.job_variables)
    if isinstance(values.get("env"), dict):
        values["env"] = {**values["env"], **run_vars.pop("env", {})}
    values.update(run_vars)
    config = asyncio.run(
        kw.KubernetesWorkerJobConfiguration.from_template_and_values(template, values)
    )
    config.prepare_for_flow_run(
        flow_run,
        deployment,
        flow,
        WorkPool(name="gpu", type="kubernetes", base_job_template=template),
        "gpu-worker-test",
    )
    return config.job_manifest


def k8s_validate(manifest: dict, *, strict: bool) -> None:
    kv = pytest.importorskip("kubernetes_validate")
    manifest = copy.deepcopy(manifest)
    if "generateName" in manifest["metadata"]:  # the API server names it; the schema wants a name
        manifest["metadata"]["name"] = manifest["metadata"]["generateName"] + "x7k2p"
    if strict and manifest["kind"] == "Job":
        # Prefect's worker requires these two Job fields in the pod spec too (its base manifest
        # check); the API server ignores them there. Strict validation names them, nothing else.
        for key in ("completions", "parallelism"):
            manifest["spec"]["template"]["spec"].pop(key)
    for version in K8S_VERSIONS:
        kv.validate(manifest, version, strict=strict)


def _container(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]["containers"][0]


def _env(manifest: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in _container(manifest)["env"]}


# ── the rendered Job ───────────────────────────────────────────────────────────


def test_the_rendered_job_is_a_valid_kubernetes_job() -> None:
    manifest = render_job(_job_variables())
    k8s_validate(manifest, strict=False)
    k8s_validate(manifest, strict=True)


def test_the_rendered_job_runs_the_deployments_image_on_any_gpu_node() -> None:
    manifest = render_job(_job_variables())
    pod = manifest["spec"]["template"]["spec"]
    container = _container(manifest)
    assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    # No GPU-Operator-only label: the nvidia.com/gpu request is what selects GPU nodes.
    assert not pod.get("nodeSelector")
    assert (
        container["resources"]["requests"]["nvidia.com/gpu"]
        == container["resources"]["limits"]["nvidia.com/gpu"]
        == 1
    )
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert manifest["metadata"]["namespace"] == "compare-models"
    env = _env(manifest)
    # the deployment's env (heartbeats, the GPU requirement) on top of the pool's defaults
    assert (
        env["COMPARE_MODELS_REQUIRE_GPU"] == "1"
        and env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    )
    assert env["COMPARE_MODELS_WORKER_SLOTS"] == "1"
    assert "COMPARE_MODELS_ALLOW_CPU_TRAINING" not in env
    assert container["envFrom"] == [{"secretRef": {"name": "compare-models-s3"}}]
    assert manifest["spec"]["backoffLimit"] == 0


def test_a_flow_run_can_pick_a_gpu_model_and_more_gpus() -> None:
    manifest = render_job(
        _job_variables(),
        {
            "gpu_count": 2,
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "cpu_limit": "8",
            "memory_limit": "32Gi",
        },
    )
    k8s_validate(manifest, strict=True)
    pod = manifest["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert _container(manifest)["resources"]["limits"] == {
        "cpu": "8",
        "memory": "32Gi",
        "nvidia.com/gpu": 2,
    }


def test_the_template_has_no_mutable_image_default_and_no_operator_only_node_selector() -> None:
    variables = _template()["variables"]
    image = variables["properties"]["image"]
    assert "default" not in image and "image" in variables["required"]
    assert image["pattern"] == IMAGE_PATTERN
    assert variables["properties"]["node_selector"]["default"] == {}
    assert "gpu.present" not in json.dumps(variables["properties"]["node_selector"]["default"])


# ── the image rules: deploy.py and the Prefect server agree ───────────────────


IMMUTABLE = [
    IMAGE,
    "registry.example.com:5000/team/compare-models-worker:2025.06.01",
    "registry.example.com/compare-models-worker@sha256:" + "a" * 64,
    "registry.example.com/compare-models-worker:gpu@sha256:" + "b" * 64,
]
MUTABLE = [
    "compare-models-worker:gpu",
    "registry.example.com/compare-models-worker:latest",
    "registry.example.com/compare-models-worker",
    "registry.example.com:5000/compare-models-worker",
    "",
    "{{ $COMPARE_MODELS_GPU_IMAGE }}",
    *(f"r.example.com/x:{tag}" for tag in MUTABLE_TAGS),
]


@pytest.mark.parametrize("image", IMMUTABLE)
def test_immutable_images_are_accepted(image: str) -> None:
    assert check_image_reference(image) == image
    assert _server_errors({**_job_variables(image)}, ignore_required=True) == []


@pytest.mark.parametrize("image", MUTABLE)
def test_mutable_or_missing_images_are_refused_by_deploy_and_by_the_server(image: str) -> None:
    with pytest.raises(ValueError, match="immutable"):
        check_image_reference(image)
    errors = _server_errors(_job_variables(image), ignore_required=True)
    assert errors and "image" in errors[0]


def test_a_flow_run_without_an_image_is_refused() -> None:
    """Flow-run creation validates required variables: no image, no run (the server's 422)."""
    variables = _job_variables()
    variables.pop("image")
    assert _server_errors(variables, ignore_required=True) == []  # a deployment may omit it...
    assert any(
        "'image' is a required property" in e
        for e in _server_errors(variables, ignore_required=False)
    )


def _server_errors(job_variables: dict, *, ignore_required: bool) -> list[str]:
    """The Prefect server's job-variable validation (prefect.server.api.validation), offline."""
    from prefect.utilities.schema_tools import validate

    schema = _template()["variables"]
    defaults = {k: v["default"] for k, v in schema["properties"].items() if "default" in v}
    errors = validate(
        {**defaults, **job_variables},
        schema,
        raise_on_error=False,
        preprocess=True,
        ignore_required=ignore_required,
        allow_none_with_default=True,
    )
    return [f"{'/'.join(map(str, e.path))}: {e.message}" if e.path else e.message for e in errors]


def test_deploy_env_requires_an_immutable_image_only_for_a_kubernetes_pool() -> None:
    with pytest.raises(ValueError, match="Kubernetes pool: set COMPARE_MODELS_GPU_IMAGE"):
        deploy_env("kubernetes", {})
    with pytest.raises(ValueError, match="immutable"):
        deploy_env("kubernetes", {GPU_IMAGE_ENV: "compare-models-worker:gpu"})
    assert deploy_env("kubernetes", {GPU_IMAGE_ENV: IMAGE})[GPU_IMAGE_ENV] == IMAGE
    assert deploy_env("process", {})[GPU_IMAGE_ENV] == ""
    assert deploy_env(None, {"PATH": "/bin"}) == {
        "PATH": "/bin",
        GPU_IMAGE_ENV: "",
        TRAINING_BACKEND_ENV: "",
    }
    assert deploy_env(None, {TRAINING_BACKEND_ENV: " JAX "})[TRAINING_BACKEND_ENV] == "jax"
    with pytest.raises(
        ValueError, match="COMPARE_MODELS_TRAINING_BACKEND='torch'.*tensorflow, jax"
    ):
        deploy_env(None, {TRAINING_BACKEND_ENV: "torch"})
    # the deployer's checkout is not handed to `prefect deploy` (the pull step resolves it on the worker)
    assert "COMPARE_MODELS_ROOT" not in deploy_env("process", {})


# ── the worker: namespace-scoped permissions and observer ─────────────────────


@pytest.fixture(scope="module")
def worker_docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(WORKER.read_text()) if d]


def test_worker_manifests_are_valid_kubernetes_objects(worker_docs) -> None:
    assert {d["kind"] for d in worker_docs} == {
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Deployment",
    }
    for doc in worker_docs:
        k8s_validate(doc, strict=True)


def test_worker_observer_watches_only_the_namespace_its_role_covers(worker_docs) -> None:
    by_kind = {d["kind"]: d for d in worker_docs}
    namespace = _template()["variables"]["properties"]["namespace"]["default"]
    assert {d["metadata"]["namespace"] for d in worker_docs} == {namespace}
    assert "ClusterRole" not in by_kind and "ClusterRoleBinding" not in by_kind
    assert by_kind["RoleBinding"]["subjects"][0]["namespace"] == namespace
    container = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == namespace
    # prefect-kubernetes reads that variable as the observer's namespaces (else it watches cluster-wide)
    settings = pytest.importorskip("prefect_kubernetes.settings")
    import os

    os.environ["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] = namespace
    try:
        assert settings.KubernetesSettings().observer.namespaces == {namespace}
    finally:
        del os.environ["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"]
    rules = {
        (g, r)
        for rule in by_kind["Role"]["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert {("batch", "jobs"), ("", "pods"), ("", "pods/log")} <= rules


def test_worker_runs_the_pinned_prefect_without_a_misleading_limit(worker_docs) -> None:
    container = next(d for d in worker_docs if d["kind"] == "Deployment")["spec"]["template"][
        "spec"
    ]["containers"][0]
    assert container["image"] == f"prefecthq/prefect:{_prefect_version()}-python3.11-kubernetes"
    args = container["args"]
    assert args[:3] == ["prefect", "worker", "start"] and "--limit" not in args
    assert (
        args[args.index("--pool") + 1] == "gpu" and args[args.index("--type") + 1] == "kubernetes"
    )


def _prefect_version() -> str:
    text = (ROOT / "infra" / "docker" / "Dockerfile.worker").read_text()
    return re.search(r"^ARG PREFECT_VERSION=(\S+)$", text, re.MULTILINE).group(1)


# ── the README's advice ────────────────────────────────────────────────────────


def test_k8s_readme_caps_concurrency_with_the_work_pool_limit() -> None:
    text = (K8S / "README.md").read_text()
    assert "prefect work-pool set-concurrency-limit gpu" in text
    assert "PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES" in text
    assert "`--limit 2` caps the worker at two concurrent" not in text


def test_worker_and_its_jobs_take_the_prefect_auth_string_from_a_secret(worker_docs) -> None:
    """The worker sends PREFECT_API_AUTH_STRING from a Secret (no default value anywhere), and
    prefect-kubernetes gives the flow runs' Jobs a reference to that Secret, not its value."""
    deployment = next(d for d in worker_docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    ref = env["PREFECT_API_AUTH_STRING"]["valueFrom"]["secretKeyRef"]
    assert "value" not in env["PREFECT_API_AUTH_STRING"]
    settings = pytest.importorskip("prefect_kubernetes.settings")
    import os

    names = {
        "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_NAME": ref["name"],
        "PREFECT_INTEGRATIONS_KUBERNETES_WORKER_API_AUTH_STRING_SECRET_KEY": ref["key"],
    }
    assert {k: env[k]["value"] for k in names} == names
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        worker = settings.KubernetesSettings().worker  # what the worker reads from them
        assert (worker.api_auth_string_secret_name, worker.api_auth_string_secret_key) == (
            ref["name"],
            ref["key"],
        )
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
