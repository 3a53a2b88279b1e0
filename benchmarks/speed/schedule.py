"""How two trainings should share a CPU host: at once with an even thread split, at once with
a split by each model's cost, or one after the other with all cores.

For each workload (the `demo` preset, and the `seed` protocol shortened to `--seed-epochs`
epochs), both models are trained once under each schedule through `compare-models run`
(real CIFAR-10, ResNet50 from scratch), the schedules' order rotating between workloads.
Printed per run: the training span (first `fit` start to last `fit` end, from the
manifest), the whole command's wall time, and the test accuracies.

    python -m benchmarks.speed.schedule [--workloads demo,seed] [--seed-epochs 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from benchmarks.common import ROOT, emit, fit_spans, require_archive, scratch_bucket

SCHEDULES = ("parallel", "weighted", "sequential")


def run(workload: str, schedule: str, seed_epochs: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "compare_models.cli.main",
        "run",
        "--preset",
        workload,
        "--data",
        str(require_archive()),
        "--resnet-weights",
        "none",
        "--schedule",
        schedule,
        "--json",
    ]
    if workload == "seed":
        command += ["--epochs", str(seed_epochs)]
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"{workload}/{schedule} failed:\n{out.stderr[-3000:]}")
    from compare_models.config import Settings
    from compare_models.runs.record import RunSummary
    from compare_models.runs.stored import read_record
    from compare_models.storage.store import ArtifactStore

    summary = RunSummary.model_validate_json(out.stdout)
    store = ArtifactStore.from_settings(Settings())
    record = read_record(store, summary.run_id)
    fits = fit_spans(store, record).values()
    begin = min(start for start, _ in fits)
    end = max(stop for _, stop in fits)
    return {
        "workload": workload,
        "schedule": schedule,
        "training_span_s": round(end - begin, 1),
        "command_wall_s": round(wall, 1),
        "threads": {m: t.device.get("threads") for m, t in record.models.items()},
        "images_per_s": {m: round(t.train_images_per_second, 1) for m, t in record.models.items()},
        "accuracy": {m: round(v.accuracy, 4) for m, v in record.metrics.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="demo,seed")
    ap.add_argument("--seed-epochs", type=int, default=1)
    args = ap.parse_args()
    results = []
    with scratch_bucket():
        for i, workload in enumerate(args.workloads.split(",")):
            order = SCHEDULES[i % 3 :] + SCHEDULES[: i % 3]  # rotate which schedule runs first
            for schedule in order:
                results.append(run(workload, schedule, args.seed_epochs))
                print(json.dumps(results[-1]), file=sys.stderr)
    best = {}
    for workload in args.workloads.split(","):
        spans = {r["schedule"]: r["training_span_s"] for r in results if r["workload"] == workload}
        fastest = min(spans, key=spans.get)
        best[workload] = {
            "fastest": fastest,
            "spans_s": spans,
            "relative_to_fastest": {s: round(v / spans[fastest], 3) for s, v in spans.items()},
        }
    emit(
        "schedule",
        {
            "settings": {
                "workloads": args.workloads,
                "seed_epochs": args.seed_epochs,
                "resnet_weights": "none",
                "data": "cifar10-jpeg",
            },
            "runs": results,
            "best": best,
        },
    )


if __name__ == "__main__":
    main()
