"""Fault benchmark: a real CIFAR-10 run (`compare-models run --preset smoke --models cnn`) on a
local stack of its own while its services fail under it, killed and started again by their pid
files (SeaweedFS, the Prefect server) or by the process tree (the training):

    s3-30, s3-120, s3-600   S3 down for that many seconds, from the CNN's first checkpoint in S3
    s3-manifest             S3 down for 30 s from the report's first file (report + manifest)
    prefect-30, prefect-120 the Prefect server down for that long, from the first checkpoint
    kill-training           the training process killed (SIGKILL) after its second checkpoint

For each fault it prints whether the run completed without a re-run (a failed run is re-run
once with the same run id, which resumes), the epochs recomputed (epoch log lines of every
train-model attempt, read back from Prefect, minus the planned epochs; also a measure of
logs lost), the objects lost or not listed (the S3 listing against the manifest's objects),
the manifests written, and the time added (wall time minus a fault-free run's).

    python -m benchmarks.drills.faults [--faults s3-30,...] [--epochs 5] [--data PATH] [--keep-stack]

The stack lives in .compare-models/faults-bench/ on ports of its own (S3 9433, Prefect 5300),
never the user's (8333/4200) nor the test stack's. Expect 5 to 20 minutes per fault on a
2-core CPU (s3-600 alone waits ten minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks.common import REAL_ARCHIVE, ROOT, emit

HOME = ROOT / ".compare-models" / "faults-bench"
PORTS = {
    "COMPARE_MODELS_S3_PORT": 9433,
    "COMPARE_MODELS_PREFECT_PORT": 5300,
    "COMPARE_MODELS_POSTGRES_PORT": 6533,
}
INHERITED = ("COMPARE_MODELS_", "PREFECT_", "AWS_", "KERAS_")
#: in the order they run: the ten-minute outage last
FAULTS = (
    "s3-30",
    "s3-120",
    "s3-manifest",
    "prefect-30",
    "prefect-120",
    "kill-training",
    "s3-600",
)


def environment() -> dict[str, str]:
    """This benchmark's stack, as tests/support/stack.py makes the test stack's."""
    from compare_models.local.envfile import stack_environment

    env = {k: v for k, v in os.environ.items() if not k.startswith(INHERITED)}
    return {**env, **stack_environment(HOME, PORTS), "TF_CPP_MIN_LOG_LEVEL": "3"}


os.environ.clear()
os.environ.update(environment())  # before Prefect is imported: its settings read it then
(HOME / "prefect-client").mkdir(parents=True, exist_ok=True)

from compare_models.config import Settings
from compare_models.local.services import SERVICES, down
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore

CLI = [sys.executable, "-m", "compare_models.cli.main"]
EPOCH_LINE = re.compile(r"^cnn epoch (\d+)/(\d+)")


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ
    )


def start_services() -> None:
    """`compare-models up` in a process of its own (the services outlive it)."""
    out = cli("up")
    if out.returncode != 0:
        sys.exit(f"the benchmark's stack did not start:\n{out.stdout}{out.stderr}")


def stop_service(name: str) -> float:
    service = next(s for s in SERVICES if s.name == name)
    result = down(only=(service,))
    if result.get(name) != "stopped":
        sys.exit(f"could not stop {name}: {result}")
    return time.monotonic()


def _store() -> ArtifactStore:
    return ArtifactStore.from_settings(Settings())  # no outage window: polls fail fast


def _checkpoint_epoch(store: ArtifactStore, run_id: str) -> int:
    try:
        state = store.get_bytes_if_exists(layout.checkpoint_state_key(run_id, "cnn"))
        return json.loads(state)["epoch"] if state else 0
    except Exception:
        return 0


def _report_started(store: ArtifactStore, run_id: str) -> bool:
    try:
        return any(True for _ in store.list_keys(layout.run_prefix(run_id) + "report/"))
    except Exception:
        return False


def _wait(predicate, process: subprocess.Popen, what: str) -> bool:
    """Polls until `predicate()`; False when the run ended first."""
    while not predicate():
        if process.poll() is not None:
            print(f"  (the run ended before {what})", file=sys.stderr)
            return False
        time.sleep(0.05)
    return True


def _kill_training(process: subprocess.Popen) -> None:
    import psutil

    for child in psutil.Process(process.pid).children(recursive=True):
        if "flows.train_model" in " ".join(child.cmdline()):
            os.killpg(child.pid, signal.SIGKILL)  # its own process group (run_in_own_process)
            return
    print("  (no training process found to kill)", file=sys.stderr)


def inject(fault: str, run_id: str, process: subprocess.Popen) -> dict:
    """Waits for the fault's moment in the run, then injects it; returns what was done."""
    store = _store()
    if fault == "kill-training":
        if _wait(lambda: _checkpoint_epoch(store, run_id) >= 2, process, "checkpoint 2"):
            epoch = _checkpoint_epoch(store, run_id)
            _kill_training(process)
            return {"killed_after_checkpoint": epoch}
        return {}
    service, seconds = (
        ("seaweedfs-s3", 30)
        if fault == "s3-manifest"
        else ({"s3": "seaweedfs-s3", "prefect": "prefect-server"}[fault.split("-")[0]], 0)
    )
    seconds = seconds or int(fault.split("-")[1])
    if fault == "s3-manifest":
        moment = _wait(lambda: _report_started(store, run_id), process, "the report")
    else:
        moment = _wait(lambda: _checkpoint_epoch(store, run_id) >= 1, process, "checkpoint 1")
    if not moment:
        return {}
    epoch = _checkpoint_epoch(store, run_id) if service == "prefect-server" else None
    gone = stop_service(service)
    time.sleep(max(0.0, seconds - (time.monotonic() - gone)))
    start_services()
    return {
        "service": service,
        "down_seconds": round(time.monotonic() - gone, 1),
        **({"checkpoint_at_fault": epoch} if epoch is not None else {}),
    }


def run_once(run_id: str, epochs: int, data: str) -> tuple[subprocess.Popen, float]:
    args = ["run", "--preset", "smoke", "--models", "cnn", "--epochs", str(epochs)]
    args += ["--data", data, "--resnet-weights", "none", "--run-id", run_id, "--json"]
    process = subprocess.Popen(
        [*CLI, *args],
        cwd=ROOT,
        env=os.environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, time.monotonic()


def epoch_lines(run_id: str) -> tuple[int, int]:
    """(epoch log lines of every train-model attempt of the run, attempts) from Prefect."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"{run_id}-cnn"]))
        )
        if not runs:
            return 0, 0
        logs = client.read_logs(
            LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs])), limit=200
        )
    return sum(1 for log in logs if EPOCH_LINE.match(log.message)), len(runs)


def objects_check(run_id: str) -> dict:
    """The S3 listing of the run against its manifest."""
    store = _store()
    prefix = layout.run_prefix(run_id)
    listed = dict(store.list_objects(prefix))
    manifest = store.get_bytes_if_exists(layout.manifest_key(run_id))
    if manifest is None:
        return {"manifest": False}
    recorded = {o["key"]: o["bytes"] for o in json.loads(manifest)["objects"]}
    checkpoints = layout.checkpoints_prefix(run_id)
    return {
        "manifest": True,
        "manifests_written": 1 + sum(1 for k in listed if "/previous/" in k),
        "objects_in_manifest": len(recorded),
        "lost": sorted(k for k, size in recorded.items() if listed.get(k) != size),
        "not_in_manifest": sorted(
            k
            for k in listed
            if k not in recorded
            and k != layout.manifest_key(run_id)
            and "/previous/" not in k
            and not k.startswith(checkpoints)
        ),
        "checkpoints_left": sum(1 for k in listed if k.startswith(checkpoints)),
    }


def measure(fault: str, epochs: int, data: str, baseline: float | None) -> dict:
    run_id = f"faults-{fault}-{int(time.time())}"
    process, started = run_once(run_id, epochs, data)
    injected: dict = {}
    if fault != "none":
        thread = threading.Thread(target=lambda: injected.update(inject(fault, run_id, process)))
        thread.start()
    out, err = process.communicate()
    if fault != "none":
        thread.join()
    seconds = time.monotonic() - started
    completed = process.returncode == 0
    rerun_seconds = None
    if not completed:
        print(
            f"  {fault}: failed ({err.strip()[-400:] or out[-400:]}); re-running", file=sys.stderr
        )
        again, again_started = run_once(run_id, epochs, data)
        again.communicate()
        rerun_seconds = time.monotonic() - again_started
    lines, attempts = epoch_lines(run_id)
    history = _store().get_bytes_if_exists(layout.history_key(run_id, "cnn"))
    resumed = json.loads(history)["result"]["resumed_from_epoch"] if history else None
    total = seconds + (rerun_seconds or 0)
    return {
        "fault": fault,
        "run_id": run_id,
        **injected,
        "completed_without_rerun": completed,
        "completed_after_rerun": None if completed else rerun_seconds is not None and bool(history),
        "error": None if completed else (err.strip()[-600:] or out[-600:]),
        "training_attempts": attempts,
        "resumed_from_epoch": resumed,
        "epoch_log_lines": lines,
        "epochs_recomputed": max(0, lines - epochs) if lines else None,
        **objects_check(run_id),
        "seconds": round(total, 1),
        "seconds_added": round(total - baseline, 1) if baseline is not None else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--data", default=str(REAL_ARCHIVE))
    parser.add_argument("--keep-stack", action="store_true", help="leave the services running")
    args = parser.parse_args()
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        sys.exit(f"unknown faults {sorted(unknown)}; choose from {', '.join(FAULTS)}")
    if not Path(args.data).exists():
        sys.exit(f"no data at {args.data}")
    start_services()
    results = []
    try:
        warm = measure("none", 1, args.data, None)  # prepares the data once: later runs reuse it
        print(f"warm-up (data prepared): {warm['seconds']} s", file=sys.stderr)
        base = measure("none", args.epochs, args.data, None)
        results.append(base)
        print(f"fault-free run: {base['seconds']} s", file=sys.stderr)
        for fault in faults:
            results.append(measure(fault, args.epochs, args.data, base["seconds"]))
            print(json.dumps(results[-1]), file=sys.stderr)
            emit("faults", {"epochs": args.epochs, "data": args.data, "results": results})
    finally:
        if not args.keep_stack:
            cli("down")
    emit("faults", {"epochs": args.epochs, "data": args.data, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
