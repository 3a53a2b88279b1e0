"""The deployments' pull step: find the project's code where the flow run runs.

prefect.yaml stores this step, not a path:

    pull:
      - deployments.pull.set_project_root: {}

Prefect runs pull steps where the flow run runs, before it loads the entrypoint
(`prefect.deployments.steps.core.run_steps`): this function then finds the project the
worker has installed (`compare_models.config.project_root()`: the checkout for
`compare-models up --workers`, /app in the worker image), checks it is complete and changes
into it, so the flow run works in the project's directory wherever it runs. The entrypoints
themselves are module paths (`flows.train_model.train_model`), imported from the installed
package. A path rendered at deploy time (`set_working_directory: "{{ $COMPARE_MODELS_ROOT }}"`)
would be the deployer's checkout, which does not exist in a container or on another machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def installed_project_root() -> Path:
    """The installed project's root, checked to hold the flows the deployments name."""
    from compare_models.config import project_root

    root = project_root()
    if not (root / "flows").is_dir():
        raise RuntimeError(
            f"the compare-models project installed here ({root}) has no flows/ folder: install the project "
            "from its checkout (`pip install -e .`, as the worker image does) on the worker"
        )
    return root


def set_project_root() -> dict[str, str]:
    """Pull step: chdir into the installed project; returns {"directory": ...} as Prefect's
    own `set_working_directory` step does (Prefect changes into that directory too)."""
    root = installed_project_root()
    os.chdir(root)
    return {"directory": str(root)}
