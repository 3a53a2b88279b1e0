"""Apply the deployments in prefect.yaml: create the work pools, then `prefect deploy --all`.

Work pools: `cpu` runs the parent flow (compare-models/nightly), `gpu` runs the
train-model/gpu flow runs (one per model). Both are process pools here; on Kubernetes create `gpu`
from infra/k8s/gpu-work-pool-base-job-template.json instead (see infra/README.md).

Nothing about the deployer's machine is stored: the pull step finds the code where the flow
runs (deployments/pull.py). When `gpu` is a Kubernetes pool, the train-model/gpu deployment's
image comes from COMPARE_MODELS_GPU_IMAGE, which must name an immutable tag or a digest.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

from compare_models.config import project_root
from compare_models.device import DEFAULT_BACKEND, SUPPORTED_BACKENDS
from deployments.alerts import AUTOMATION as REGRESSION_AUTOMATION
from deployments.alerts import ensure_regression_automation

POOLS = {"cpu": "process", "gpu": "process"}

#: Where `compare-models deploy` reads the trainings' Keras backend (prefect.yaml renders it into
#: the train-model deployment's KERAS_BACKEND).
TRAINING_BACKEND_ENV = "COMPARE_MODELS_TRAINING_BACKEND"
#: Where `compare-models deploy` reads the Kubernetes gpu pool's image (prefect.yaml renders it).
GPU_IMAGE_ENV = "COMPARE_MODELS_GPU_IMAGE"
#: Tags that name different images over time: a node that pulled one keeps running it
#: (imagePullPolicy IfNotPresent), so a deployment must not use them.
MUTABLE_TAGS = ("latest", "gpu", "cpu", "main", "master", "stable", "dev")
#: An image reference pinned by digest, or by a tag that is not one of MUTABLE_TAGS. The same
#: pattern is the `image` variable's `pattern` in infra/k8s/gpu-work-pool-base-job-template.json,
#: so the Prefect server refuses such a job variable too (tests/infra/test_cluster_k8s.py).
IMAGE_PATTERN = (
    r"^[a-z0-9][^\s@:]*(?::[0-9]+)?(?:/[^\s@:]+)*"
    r"(?:@sha256:[0-9a-f]{64}|:(?!(?:"
    + "|".join(MUTABLE_TAGS)
    + r")$)[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
    r"(?:@sha256:[0-9a-f]{64})?)$"
)


def check_image_reference(image: str) -> str:
    """`image` if it names an immutable tag or a digest; ValueError with the fix otherwise."""
    if not image or not re.match(IMAGE_PATTERN, image):
        raise ValueError(
            f"{GPU_IMAGE_ENV}={image!r} is not an immutable image reference: push the gpu image with a tag that "
            "never moves (a version or git commit, e.g. registry.example.com/compare-models-worker:0.1.0-3f2c1ab) "
            f"or pin its digest (...@sha256:<64 hex>); not a bare name or the tags {', '.join(MUTABLE_TAGS)}: Kubernetes "
            "nodes keep the image they pulled first under a reused tag (imagePullPolicy IfNotPresent)"
        )
    return image


# Flow runs send a heartbeat every HEARTBEAT_SECONDS (PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set
# on the workers); a run that has been silent for CRASH_AFTER_SECONDS is marked Crashed, so a
# killed worker or a lost node does not leave a run "Running" in the UI forever.
HEARTBEAT_SECONDS = 30
CRASH_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
ZOMBIE_AUTOMATION = "compare-models: crash unresponsive flow runs"


def ensure_work_pools(pools: dict[str, str] = POOLS) -> dict[str, str]:
    """Create missing work pools (existing ones, whatever their type, are kept)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    result = {}
    with get_client(sync_client=True) as client:
        for name, kind in pools.items():
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type=kind))
                result[name] = f"created ({kind})"
            except ObjectAlreadyExists:
                result[name] = "exists"
    return result


def zombie_automation(crash_after_seconds: int = CRASH_AFTER_SECONDS):
    """Prefect's documented zombie-run automation, limited to this project's tagged runs."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=ZOMBIE_AUTOMATION,
        description=f"Marks compare-models flow runs Crashed after {crash_after_seconds} s without a heartbeat.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification(
                {
                    "prefect.resource.id": "prefect.tag.compare-models",
                    "prefect.resource.role": "tag",
                }
            ),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"no heartbeat for {crash_after_seconds} s: the worker process or its machine died. Re-run the "
                    "deployment with the same run id to resume training from the last checkpoint."
                ),
            )
        ],
    )


def ensure_zombie_automation() -> str:
    """Create the automation once; an existing one (maybe edited in the UI) is kept."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(ZOMBIE_AUTOMATION):
            return "exists"
    zombie_automation().create()
    return "created"


def work_pool_type(name: str) -> str | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name).type
        except ObjectNotFound:
            return None


def deploy_env(
    gpu_pool_type: str | None, environ: Mapping[str, str] = os.environ
) -> dict[str, str]:
    """The environment `prefect deploy` renders prefect.yaml's `{{ $VAR }}` placeholders from.

    A Kubernetes gpu pool needs COMPARE_MODELS_GPU_IMAGE (checked: immutable); a process pool
    has no image, so it is rendered empty unless given. COMPARE_MODELS_TRAINING_BACKEND becomes
    the train-model deployment's KERAS_BACKEND (empty: tensorflow; checked: tensorflow or jax)."""
    env = dict(environ)
    backend = env.get(TRAINING_BACKEND_ENV, "").strip().lower()
    if backend and backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"{TRAINING_BACKEND_ENV}={backend!r} is not a Keras backend compare-models trains "
            f"with: use one of {', '.join(SUPPORTED_BACKENDS)}, or leave it unset for "
            f"{DEFAULT_BACKEND}"
        )
    env[TRAINING_BACKEND_ENV] = backend
    if gpu_pool_type == "kubernetes":
        if not env.get(GPU_IMAGE_ENV):
            raise ValueError(
                f"the work pool 'gpu' is a Kubernetes pool: set {GPU_IMAGE_ENV} to the gpu image the Jobs run, pushed "
                "with an immutable tag or by digest (infra/k8s/README.md), e.g. "
                f"{GPU_IMAGE_ENV}=registry.example.com/compare-models-worker:0.1.0-3f2c1ab compare-models deploy"
            )
        check_image_reference(env[GPU_IMAGE_ENV])
    else:
        env.setdefault(GPU_IMAGE_ENV, "")
    return env


def deploy_command() -> list[str]:
    return [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]


def deploy() -> int:
    try:
        env = deploy_env(work_pool_type("gpu"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, state in ensure_work_pools().items():
        print(f"work pool {name}: {state}")
    print(f"automation {ZOMBIE_AUTOMATION!r}: {ensure_zombie_automation()}")
    print(f"automation {REGRESSION_AUTOMATION!r}: {ensure_regression_automation()}")
    # Run where prefect.yaml is. Nothing of this machine is stored: the entrypoints are module
    # paths and the pull step finds the installed project where each flow run runs.
    return subprocess.call(deploy_command(), cwd=project_root(), env=env)
