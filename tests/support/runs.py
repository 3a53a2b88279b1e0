"""What the tests build runs with: the project root, the real-data archive, `compare-models`
run as a user would (a subprocess from the project root), the smoke run's arguments, and
placeholder records (a training result, a dataset reference) for tests that need one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REAL_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


#: The gate's export of each new champion, off, for the runs of tests that are not about serving:
#: an export is a TensorFlow process of its own per champion (tests/integration/test_serving.py,
#: test_flow.py and test_realdata.py keep it on). As run parameters, and as a flag.
NO_EXPORT = {"export": {"enabled": False}}
NO_EXPORT_FLAG = "--no-gate.export.enabled"


# ── the command line, run as a user would ────────────────────────────────────


def cli_command(*args: str) -> list[str]:
    """The argv of `compare-models ARGS` with this interpreter (`python -m compare_models.cli.main`)."""
    return [sys.executable, "-m", "compare_models.cli.main", *args]


def cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `compare-models ARGS` from the project root, output captured as text; `env` replaces
    the whole environment (default: this process's, as it is now)."""
    return subprocess.run(
        cli_command(*args), cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


def python_json(
    script: str, *, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 300
):
    """`python -c SCRIPT` in a fresh interpreter from `cwd` (`env` replaces the whole
    environment; default: this process's): the JSON its last line of stdout holds. A script that
    fails fails the test with its last words."""
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def smoke_run_args(
    data: str, models: str, sizes: tuple[int, int, int], epochs: int, *extra: str
) -> list[str]:
    """The arguments of `compare-models run --preset smoke` on a `sizes` split of (train, val,
    test) images, then `extra`, then `--json`."""
    train, val, test = sizes
    return [
        "run",
        "--preset",
        "smoke",
        "--data",
        data,
        "--models",
        models,
        "--split",
        "sizes",
        "--train-size",
        str(train),
        "--val-size",
        str(val),
        "--test-size",
        str(test),
        "--epochs",
        str(epochs),
        *extra,
        "--json",
    ]


def training_result(run_id: str, model: str, replica: int = 0, **changes):
    """A `TrainingResult` made by hand, with this run's keys for the replica's name."""
    from compare_models.storage import layout
    from compare_models.training.jobs import TrainingResult

    name = layout.training_name(model, replica)
    return TrainingResult(
        **{
            "model": model,
            "replica": replica,
            "model_key": layout.model_key(run_id, name),
            "history_key": layout.history_key(run_id, name),
            "predictions_key": layout.predictions_key(run_id, name),
            "epochs": 1,
            "resumed_from_epoch": 0,
            "fit_seconds": 1.0,
            "fit_started_at": 0.0,
            "train_images_per_second": 1.0,
            "parameters": 1,
            "peak_rss_mb": 1.0,
            "device": {},
            **changes,
        }
    )


def placeholder_dataset(source: str = "synthetic:1"):
    """A DatasetRef naming no real data (synthetic, no files): for a training job that must be
    refused or never start, or one that is only planned."""
    from compare_models.data.dataset import DatasetRef

    return DatasetRef(
        name="x",
        synthetic=True,
        source=source,
        archive_sha256=None,
        prefix="datasets/x/",
        class_names=[str(i) for i in range(10)],
        sizes={},
        files={},
        normalisation={},
    )
