"""What the MLflow sink adds to a run: a smoke run (`compare-models run --preset smoke`, the
CNN on synthetic data, `--epochs` epochs) with MLflow off and on, the two alternating for
`--rounds` rounds, each on a track of its own (so each run is its track's first champion: the
heaviest night, with an export and, with MLflow on, a registered version). It reports, per side:

* `seconds_per_epoch`: the training's fit seconds over its epochs (each epoch logged live when on);
* `after_training_s`: the parent's time from the end of the training to the run's completion
  (evaluation, comparison, gate, export, MLflow's logging and registry when on, report, manifest);
* `run_s`: the whole command's wall time.

    python -m benchmarks.speed.mlflow_sink [--rounds 3] [--epochs 3] [--data synthetic:5000]

Needs the dev stack with MLflow (`compare-models up --mlflow`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from datetime import datetime

from benchmarks.common import ROOT, emit
from compare_models.config import Settings

OFF, ON = "off", "on"


def one_run(side: str, args: argparse.Namespace, mlflow_uri: str) -> dict:
    track = f"bench-mlflow-{side}-{secrets.token_hex(3)}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri if side == ON else ""}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "compare_models.cli.main", "run", "--preset", "smoke",
         "--data", args.data, "--models", "cnn", "--epochs", str(args.epochs),
         "--track", track, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"the {side} run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    from compare_models.runs.stored import read_record
    from compare_models.storage.store import ArtifactStore

    record = read_record(ArtifactStore.from_settings(Settings()), summary["run_id"])
    training = record.models["cnn"]
    trained_until = training.fit_started_at + training.fit_seconds
    completed = record.completed_at.timestamp() if isinstance(record.completed_at, datetime) else 0
    if side == ON and (record.mlflow is None or not record.mlflow.complete):
        raise SystemExit(f"the run with MLflow on did not log everything: {record.mlflow}")
    return {
        "run_id": record.run_id,
        "seconds_per_epoch": training.fit_seconds / training.epochs,
        "after_training_s": completed - trained_until,
        "run_s": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="synthetic:5000")
    args = parser.parse_args()
    uri = Settings().mlflow_tracking_uri or "http://127.0.0.1:5000"
    runs: dict[str, list[dict]] = {OFF: [], ON: []}
    for round_ in range(args.rounds):
        order = (OFF, ON) if round_ % 2 == 0 else (ON, OFF)
        for side in order:
            runs[side].append(one_run(side, args, uri))
            print(side, runs[side][-1], file=sys.stderr)
    medians = {
        side: {
            key: statistics.median(r[key] for r in results)
            for key in ("seconds_per_epoch", "after_training_s", "run_s")
        }
        for side, results in runs.items()
    }
    emit(
        "mlflow_sink",
        {
            "settings": vars(args) | {"model": "cnn", "preset": "smoke"},
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip(),
            "runs": runs,
            "medians": medians,
            "added_by_mlflow": {key: medians[ON][key] - medians[OFF][key] for key in medians[ON]},
        },
    )


if __name__ == "__main__":
    main()
