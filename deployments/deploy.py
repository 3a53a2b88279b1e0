"""Apply the deployments in prefect.yaml: create the work pools, then `prefect deploy --all`.

Work pools: `cpu` runs the parent flow (compare-models/nightly), `gpu` runs the
train-model/<model> flow runs. Both are process pools here; on Kubernetes create `gpu`
from infra/k8s/gpu-work-pool-base-job-template.json instead (see infra/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tasks.config import project_root

POOLS = {"cpu": "process", "gpu": "process"}


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


def deploy() -> int:
    for name, state in ensure_work_pools().items():
        print(f"work pool {name}: {state}")
    env = {**os.environ, "COMPARE_MODELS_ROOT": os.environ.get("COMPARE_MODELS_ROOT", str(project_root()))}
    return subprocess.call([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=project_root(), env=env)
