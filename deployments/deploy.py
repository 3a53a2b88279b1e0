"""Apply the deployments in prefect.yaml: create the work pools, then `prefect deploy --all`.

Work pools: `cpu` runs the parent flow (compare-models/nightly), `gpu` runs the
train-model/gpu flow runs (one per model). Both are process pools here; on Kubernetes create `gpu`
from infra/k8s/gpu-work-pool-base-job-template.json instead (see infra/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

from compare_models.config import project_root

POOLS = {"cpu": "process", "gpu": "process"}

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
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.id": "prefect.tag.compare-models",
                                                 "prefect.resource.role": "tag"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=crash_after_seconds),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=(
            f"no heartbeat for {crash_after_seconds} s: the worker process or its machine died. Re-run the "
            "deployment with the same run id to resume training from the last checkpoint."))],
    )


def ensure_zombie_automation() -> str:
    """Create the automation once; an existing one (maybe edited in the UI) is kept."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        if client.read_automations_by_name(ZOMBIE_AUTOMATION):
            return "exists"
    zombie_automation().create()
    return "created"


def deploy() -> int:
    for name, state in ensure_work_pools().items():
        print(f"work pool {name}: {state}")
    print(f"automation {ZOMBIE_AUTOMATION!r}: {ensure_zombie_automation()}")
    env = {**os.environ, "COMPARE_MODELS_ROOT": os.environ.get("COMPARE_MODELS_ROOT", str(project_root()))}
    return subprocess.call([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=project_root(), env=env)
