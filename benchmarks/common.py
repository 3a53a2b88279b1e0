"""Shared helpers for the benchmarks: machine description, a scratch bucket, JSON output."""

from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from compare_models import device

ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
RESULTS = ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, else what platform reports (the CPU type changes
    from one machine to the next, so every result names it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import numpy as np
    import psutil

    return {
        "cpu": cpu_model(),
        # what the kernels dispatch on; TensorFlow turns oneDNN's on for ONEDNN_DEFAULT_FEATURES
        "cpu_features": sorted(
            device.cpu_features() & {"avx2", "avx512f", *device.ONEDNN_DEFAULT_FEATURES}
        ),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "gpu": "none",
    }


def emit(name: str, result: dict) -> None:
    """Print one JSON document and keep a copy in benchmarks/results/."""
    record = {
        "benchmark": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **result,
    }
    text = json.dumps(record, indent=2)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")


@contextmanager
def scratch_bucket():
    """A fresh bucket on the configured S3 endpoint, removed afterwards (a truly cold cache)."""
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

    settings = Settings()
    bucket = f"cm-bench-{secrets.token_hex(4)}"
    store = ArtifactStore.from_settings(settings.model_copy(update={"bucket": bucket}))
    store.ensure_bucket()
    old = os.environ.get("COMPARE_MODELS_BUCKET")
    os.environ["COMPARE_MODELS_BUCKET"] = bucket
    try:
        yield store
    finally:
        store.delete_bucket()
        if old is None:
            os.environ.pop("COMPARE_MODELS_BUCKET", None)
        else:
            os.environ["COMPARE_MODELS_BUCKET"] = old


def fit_spans(store, record) -> dict[str, tuple[float, float]]:
    """Each model's `fit` in a run (a `RunRecord`) as (start, end), UNIX time, from the
    training result it published (`history.json`)."""
    from compare_models.training.jobs import stored_result

    spans = {}
    for model in record.models:
        result = stored_result(store, record.run_id, model)
        if result is None or result.fit_started_at is None:
            sys.exit(f"run {record.run_id}: {model} published no fit start time (history.json)")
        spans[model] = (result.fit_started_at, result.fit_started_at + result.fit_seconds)
    return spans


def require_archive() -> Path:
    if not REAL_ARCHIVE.exists():
        sys.exit(f"benchmark needs the real CIFAR-10 archive at {REAL_ARCHIVE}")
    return REAL_ARCHIVE


def _in_own_process(
    argv: list[str], *, what: str, env: dict[str, str] | None, timeout: float, root: Path = ROOT
) -> str:
    """`python ARGV` from the project's root (or `root`, another checkout: the code it
    imports), with `env` added to this process's environment: its stdout (a failure stops the
    benchmark, naming `what`, with the child's last words)."""
    out = subprocess.run(
        [sys.executable, *argv],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        raise SystemExit(f"{what} failed:\n{out.stderr[-3000:]}")
    return out.stdout


def child_json(
    argv: list[str],
    *,
    what: str,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
    root: Path = ROOT,
) -> dict:
    """A measurement in a process of its own (`python ARGV`, see `_in_own_process`): the JSON
    document its last line of stdout holds."""
    stdout = _in_own_process(argv, what=what, env=env, timeout=timeout, root=root)
    return json.loads(stdout.strip().splitlines()[-1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 7200
) -> tuple[str, float]:
    """`compare-models <args>` in a process of its own (see `_in_own_process`): its stdout and
    its seconds."""
    started = time.perf_counter()
    stdout = _in_own_process(
        ["-m", "compare_models.cli.main", *args],
        what=f"`compare-models {' '.join(args)}`",
        env=env,
        timeout=timeout,
    )
    return stdout, round(time.perf_counter() - started, 1)
