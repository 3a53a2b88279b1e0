"""Orchestration benchmarks for the deployment path (workers as shipped by
`compare-models up --workers`: process workers polling every 1 s, 2 slots per pool).

1. overhead: wall time of a `compare-models/nightly` deployment run on the smoke preset
   minus the time during which at least one `fit` was running (target <= 15 s);
2. overlap: the fraction of the shorter training's wall time (its train-model flow run)
   during which both trainings ran (target >= 0.9 with two GPU-pool slots);
3. resume cost: a training (local trainer) is killed (SIGKILL, process group) at a random
   epoch and re-run with the same run id; epochs recomputed = epochs the killed attempt
   had completed that the re-run did not resume past, plus the interrupted partial epoch
   (target <= 1).

    python -m benchmarks.speed.orchestration [--data PATH] [--runs 3] [--skip-resume] [--database postgres]

Each deployment run also reports where its non-fit time went (data preparation, parent
start to the first fit, last fit to the parent's end), and the same split into phases: the
parent's own start (preflight, data) until the first training's child flow run is created;
Prefect's part (that child scheduled until its process runs the flow: worker poll, process
start, pull step, flow load; and the last child's final state until the parent's task sees
it); the training process's own work (TensorFlow, data and model before `fit`; predicting
the test set, saving and uploading the model after it); the parent's work after the
trainings (evaluation, statistics, gate, report, manifest). The first run on a fresh store
prepares the data (its `prepare_data` seconds show it); later ones reuse it, as nightly
runs do. Fit times are the training processes' clocks, flow-run times the server's: one
host (as here) or synchronised clocks are assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time

from benchmarks.common import REAL_ARCHIVE, ROOT, emit, fit_spans
from compare_models.config import Settings
from compare_models.runs.stored import latest_run_id, read_record
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.training.jobs import stored_result

CLI = [sys.executable, "-m", "compare_models.cli.main"]


def _read_runs(parent_id):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read():
        async with get_client() as client:
            parent = await client.read_flow_run(parent_id)
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
                )
            )
            tasks = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id={"any_": [parent_id]})
            )
            return parent, children, tasks

    return asyncio.run(read())


def deployment_run(params: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "prefect",
            "deployment",
            "run",
            "compare-models/nightly",
            "--params",
            params,
            "--watch",
            "--watch-timeout",
            "3600",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(out.stdout[-3000:] + out.stderr[-3000:])
    store = ArtifactStore.from_settings(Settings())
    run_id = latest_run_id(store)
    if run_id is None:
        sys.exit(f"no completed run in {store.uri(layout.LATEST)}")
    record = read_record(store, run_id)
    if record.flow_run_id is None:
        sys.exit(f"run {record.run_id}: its manifest names no flow run")
    parent, children, tasks = _read_runs(record.flow_run_id)
    wall = (parent.end_time - parent.start_time).total_seconds()
    prep = next(t for t in tasks if t.name.startswith("prepare-data"))
    # each model's fit as (start, end), UNIX time
    fit_of = fit_spans(store, record)
    fits = sorted(fit_of.values())
    union = 0.0
    cur_start, cur_end = fits[0]
    for start, end in fits[1:]:
        if start > cur_end:
            union += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    union += cur_end - cur_start
    # the attempts that produced the published models (a failed earlier attempt has the same name)
    trainings = [
        c
        for c in children
        if c.name.endswith(("-cnn", "-resnet50")) and c.state and c.state.is_completed()
    ]
    spans = [(c.start_time.timestamp(), c.end_time.timestamp()) for c in trainings]
    both = max(0.0, min(e for _, e in spans) - max(s for s, _ in spans))
    shorter = min(e - s for s, e in spans)
    fit_both = max(0.0, min(e for _, e in fits) - max(s for s, _ in fits))
    first_fit, last_fit_end = fits[0][0], max(end for _, end in fits)
    # the first training to start its fit and the last to end it, as flow runs and parent tasks
    first_model = min(fit_of, key=lambda m: fit_of[m][0])
    last_model = max(fit_of, key=lambda m: fit_of[m][1])
    first, last = (
        next(c for c in trainings if c.name.endswith(f"-{m}")) for m in (first_model, last_model)
    )
    last_task_end = next(t for t in tasks if t.name == f"train-{last_model}").end_time.timestamp()
    return {
        "run_id": record.run_id,
        "parent_wall_seconds": round(wall, 1),
        "fit_union_seconds": round(union, 1),
        "overhead_seconds": round(wall - union, 1),
        "breakdown_seconds": {
            "prepare_data": round((prep.end_time - prep.start_time).total_seconds(), 1),
            "parent_start_to_first_fit": round(first_fit - parent.start_time.timestamp(), 1),
            "last_fit_end_to_parent_end": round(parent.end_time.timestamp() - last_fit_end, 1),
        },
        # the same two spans, split: where Prefect moves the run (a child scheduled until its
        # process runs the flow; a child's end until the parent's task sees it) and where the
        # run's own processes work (see the module docstring)
        "phases_seconds": {
            "parent_until_first_child_scheduled": round(
                first.created.timestamp() - parent.start_time.timestamp(), 1
            ),
            "prefect_child_scheduled_to_running": round(
                first.start_time.timestamp() - first.created.timestamp(), 1
            ),
            "training_start_to_fit": round(first_fit - first.start_time.timestamp(), 1),
            "training_fit_end_to_completed": round(last.end_time.timestamp() - last_fit_end, 1),
            "prefect_child_completed_to_parent_task_end": round(
                last_task_end - last.end_time.timestamp(), 1
            ),
            "parent_after_trainings": round(parent.end_time.timestamp() - last_task_end, 1),
        },
        "training_flow_runs": {
            c.name: round((c.end_time - c.start_time).total_seconds(), 1) for c in trainings
        },
        "overlap_fraction_of_shorter_training": round(both / shorter, 3),
        "overlap_fraction_of_shorter_fit": round(fit_both / min(e - s for s, e in fits), 3),
        "targets": {"overhead_seconds": 15, "overlap_fraction": 0.9},
    }


def resume_cost(epochs: int = 8) -> dict:
    store = ArtifactStore.from_settings(Settings())
    run_id = f"bench-resume-{os.getpid()}"
    kill_after = random.randint(1, epochs - 2)  # the epoch whose checkpoint we wait for
    args = [
        *CLI,
        "run",
        "--preset",
        "smoke",
        "--data",
        "synthetic:2000",
        "--models",
        "cnn",
        "--split",
        "sizes",
        "--train-size",
        "1500",
        "--val-size",
        "200",
        "--test-size",
        "200",
        "--epochs",
        str(epochs),
        "--run-id",
        run_id,
        "--json",
    ]
    first = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    key = layout.checkpoint_state_key(run_id, "cnn")
    while first.poll() is None:
        if store.exists(key) and store.get_json(key)["epoch"] >= kill_after:
            break
        time.sleep(0.1)
    # kill somewhere inside the next epoch
    time.sleep(random.uniform(0.1, 1.0))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    completed_before_kill = store.get_json(key)["epoch"]
    second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if second.returncode != 0:
        sys.exit(second.stderr[-3000:])
    result = stored_result(store, run_id, "cnn")
    if result is None:
        sys.exit(f"run {run_id}: the re-run published no cnn training result")
    resumed = result.resumed_from_epoch
    return {
        "epochs": epochs,
        "killed_during_epoch": completed_before_kill + 1,
        "resumed_from_epoch": resumed,
        "epochs_recomputed": (completed_before_kill - resumed)
        + 1,  # lost checkpointed epochs + the partial one
        "history_length": len(result.history["loss"]),
        "target_epochs_recomputed": 1,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REAL_ARCHIVE))
    ap.add_argument("--resnet-weights", default="none")
    ap.add_argument(
        "--runs",
        type=int,
        default=3,
        help="deployment runs in a row (the first may prepare the data)",
    )
    ap.add_argument("--skip-resume", action="store_true")
    ap.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="the local Prefect server's database (the stack is switched to it, and deployed again)",
    )
    args = ap.parse_args()
    subprocess.run(
        [*CLI, "up", "--workers", "--database", args.database],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    subprocess.run([*CLI, "deploy"], cwd=ROOT, check=True, capture_output=True)
    params = subprocess.run(
        [
            *CLI,
            "params",
            "--preset",
            "smoke",
            "--data",
            args.data,
            "--resnet-weights",
            args.resnet_weights,
            "--trainer",
            "deployment",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    runs = [deployment_run(params) for _ in range(args.runs)]
    result = {
        "data": args.data,
        "preset": "smoke",
        "worker": {"type": "process", "query_seconds": 1, "limit": 2},
        "database": args.database,
        "deployment_runs": runs,
        "median_overhead_seconds": statistics.median(r["overhead_seconds"] for r in runs),
        "median_phases_seconds": {
            phase: statistics.median(r["phases_seconds"][phase] for r in runs)
            for phase in runs[0]["phases_seconds"]
        },
        "median_overlap_fraction": statistics.median(
            r["overlap_fraction_of_shorter_training"] for r in runs
        ),
    }
    if not args.skip_resume:
        result["resume"] = resume_cost()
    emit("orchestration", result)


if __name__ == "__main__":
    main()
