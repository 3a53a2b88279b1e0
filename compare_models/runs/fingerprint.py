"""What a run depended on: code, libraries, machine, data and seeds.

The manifest records a fingerprint per run so that a replay (`compare-models replay`) can
say which of these changed between the original and the replay: the code (commit, dirty
tree), the libraries, the machine (CPU model, GPU, precision policy), or nothing at all,
in which case a difference in predictions is plain nondeterminism.

Nothing here imports TensorFlow: library versions come from the installed distributions'
metadata, and the training processes report their own host and device.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from compare_models.config import IMAGE_SIZE, project_root
from compare_models.runs.record import Fingerprint

#: The libraries whose versions can change a run's numbers.
LIBRARIES = (
    "tensorflow",
    "jax",
    "jaxlib",
    "keras",
    "numpy",
    "scikit-learn",
    "scipy",
    "statsmodels",
    "prefect",
    "pillow",
)

#: Set in a worker image at build time, where there is no .git to ask.
GIT_COMMIT_ENV = "COMPARE_MODELS_GIT_COMMIT"

#: The DatasetRef fields that say which images a run used (same values: same test images).
DATA_IDENTITY = (
    "name",
    "archive_sha256",
    "split_key",
    "split_indices_sha256",
    "test_indices_sha256",
    "version_id",
    "image_size",
)


def data_identity(dataset: Mapping[str, Any], *extra: str) -> dict[str, Any]:
    """The `DATA_IDENTITY` fields of a dataset reference (as a dict), then any `extra` ones
    (a reference from before image sizes held 32 x 32 images)."""
    return {
        k: dataset.get(k, IMAGE_SIZE if k == "image_size" else None)
        for k in (*DATA_IDENTITY, *extra)
    }


def _version(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit of the project's checkout and whether its tree had uncommitted changes."""
    root = project_root()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        commit = status = None
    if commit is None or commit.returncode != 0:
        return {"commit": os.environ.get(GIT_COMMIT_ENV), "dirty": None, "source": "environment"}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip()), "source": "git"}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo; `platform.processor()` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host() -> dict[str, Any]:
    """This process's code, libraries and machine."""
    return {
        "project_version": _version("compare-models"),
        "git": git_state(),
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def run_fingerprint(
    *,
    orchestrator: dict[str, Any],
    params: dict[str, Any],
    dataset: dict[str, Any],
    trainings: dict[str, dict[str, Any]],
) -> Fingerprint:
    """The manifest's `fingerprint`: the orchestrating host, each training's host and device,
    the data (archive hash, split key, hash of the split indices), every seed and every parameter."""
    return Fingerprint(
        orchestrator=orchestrator,
        trainings=trainings,
        data=data_identity(dataset, "synthetic"),
        seeds={
            "split": params["split"]["seed"],
            "train": params["train"]["seed"],
            "comparison": params.get("comparison", {}).get("seed"),
        },
        params=params,
    )


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys (`train.epochs`)."""
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return flat
    return {path: value}


#: Entries that differ between any two runs by construction, so a diff leaves them out.
VOLATILE = ("params.run_id", "params.replay_of")
#: Entries, under any training, that change how long a computation takes but never what it
#: computes: a program JAX loads from its compilation cache is the one XLA would compile.
VOLATILE_LEAVES = ("xla_cache_mib",)


def differences(original: dict[str, Any], replay: dict[str, Any]) -> list[dict[str, Any]]:
    """Every fingerprint entry that differs, as {"entry", "original", "replay"} (sorted by entry)."""
    a, b = flatten(original), flatten(replay)
    return [
        {"entry": key, "original": a.get(key), "replay": b.get(key)}
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
        and key not in VOLATILE
        and key.rsplit(".", 1)[-1] not in VOLATILE_LEAVES
    ]
