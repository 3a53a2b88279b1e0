"""The parent's trainings: the seed protocol per model and policy, the drills (a fault and
resume, a budget stop and continue) and the sweeps (one knob at a time), each in a child."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.speed.gpu_check.memory import MemorySampler
from benchmarks.speed.gpu_check.s3 import start_s3
from benchmarks.speed.gpu_check.settings import PEAK_TFLOPS, ROOT, SWEEPS


def _train(work: Path, job, env: dict[str, str], allow_cpu: bool, label: str) -> dict:
    """One training in a process of its own; its outcome (exit 3: an injected fault)."""
    job_path, out_path = work / f"{label}.job.json", work / f"{label}.out.json"
    job_path.write_text(job.model_dump_json())
    command = [
        sys.executable,
        "-m",
        "benchmarks.speed.gpu_check",
        "--child",
        str(job_path),
        str(out_path),
    ]
    if allow_cpu:
        command.append("--allow-cpu")
    sampler = MemorySampler(work / f"{label}.memory")
    started = time.perf_counter()
    with sampler:
        code = subprocess.call(command, cwd=ROOT, env={**os.environ, **env}, timeout=3 * 3600)
    if code not in (0, 3) or not out_path.exists():
        raise SystemExit(
            f"gpu_check: {label}: the training failed (exit {code}); see the log above"
        )
    outcome = json.loads(out_path.read_text())
    outcome.update(
        {
            "label": label,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "peak_nvidia_smi_mib": sampler.peak_mib(),
        }
    )
    return outcome


def _bound(outcome: dict, gpu_name: str | None, peak_override: float | None) -> dict:
    """Achieved training throughput against FLOPs per image and the GPU's peak: a training step
    costs about three forward passes (the backward pass about two)."""
    flops = outcome.get("forward_flops_per_image")
    policy = outcome["device"]["precision"]
    dtype = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}[policy]
    peak = peak_override
    if peak is None and gpu_name:
        peak = next((p[dtype] for kind, p in PEAK_TFLOPS.items() if kind in gpu_name), None)
    if not flops or not peak or not outcome.get("images_per_second"):
        return {"peak_tflops": peak, "bound_images_per_second": None, "share_of_bound": None}
    bound = peak * 1e12 / (3 * flops)
    return {
        "peak_tflops": peak,
        "train_flops_per_image": round(3 * flops),
        "bound_images_per_second": round(bound),
        "achieved_tflops": round(outcome["images_per_second"] * 3 * flops / 1e12, 2),
        "share_of_bound": round(outcome["images_per_second"] / bound, 4),
    }


def in_process(args: argparse.Namespace) -> dict:
    from compare_models.config import Settings, SplitSpec, TrainParams
    from compare_models.data.dataset import prepare_dataset
    from compare_models.device import selected_backend
    from compare_models.storage.store import ArtifactStore
    from compare_models.training.jobs import TrainingJob

    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    seaweed = start_s3(work, args.runtime)
    try:
        settings = Settings()
        store = ArtifactStore.from_settings(settings)
        store.ensure_bucket()
        spec = (
            SplitSpec(protocol="sizes", train=args.train_images, val=200, test=500)
            if args.train_images
            else SplitSpec(protocol="seed")
        )
        ref = prepare_dataset(str(args.data), spec, store, settings.cache_dir)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())

        def job(name: str, model: str, **train) -> TrainingJob:
            return TrainingJob(
                run_id=f"gpu-check-{stamp}-{name}",
                model=model,
                dataset=ref,
                train=TrainParams(**{"epochs": args.epochs, **train}),
            )

        passes = []
        for policy in args.policies:
            for model in args.models:
                label = f"{model}-{policy}"
                outcome = _train(
                    work,
                    job(label, model),
                    {"COMPARE_MODELS_PRECISION": policy},
                    args.allow_cpu,
                    label,
                )
                passes.append(outcome)
                _print_pass(outcome)
        gpu_name = next(
            (p["device"]["gpu_names"][0] for p in passes if p["device"]["gpu_names"]), None
        )
        for outcome in passes:
            outcome["bound"] = _bound(outcome, gpu_name, args.peak_tflops)
        drills = _drills(work, job, args) if args.drills else None
        sweeps = _sweeps(work, job, args, gpu_name) if args.sweeps else None
    finally:
        if seaweed is not None:
            seaweed.terminate()
            seaweed.wait(timeout=30)
    return {
        "mode": "in-process",
        "backend": selected_backend(),
        "gpu": gpu_name,
        "data": {"source": Path(args.data).name, "split": spec.protocol, "sizes": ref.sizes},
        "epochs": args.epochs,
        "passes": passes,
        "drills": drills,
        "sweeps": sweeps,
    }


def _print_pass(o: dict) -> None:
    print(
        f"gpu_check: {o['label']:24s} {o['device']['device']} {o['backend']:10s} "
        f"{o['images_per_second'] or 0:>9.1f} images/s, step {o['step_ms'] or 0:.2f} ms, compile "
        f"{o['compile_seconds'] or 0:.1f} s, peak {o['peak_allocator_mib']} MiB (allocator) / "
        f"{o['peak_nvidia_smi_mib']} MiB (nvidia-smi), test accuracy {o['test_accuracy']:.4f}",
        flush=True,
    )


def _drills(work: Path, job, args: argparse.Namespace) -> dict:
    """Resume after a fault, and a time-budget stop continued, on the CNN: 3 epochs each."""
    from compare_models.training.drills import Drills

    epochs = {"epochs": 3}
    fault = Drills(fail_after_epoch=1).environment()  # the first attempt fails after epoch 1
    faulted = _train(
        work,
        job("drill-fault", "cnn", **epochs),
        fault,
        args.allow_cpu,
        "drill-fault-1",
    )
    retried = _train(
        work,
        job("drill-fault", "cnn", **epochs).model_copy(update={"attempt": 2}),
        fault,
        args.allow_cpu,
        "drill-fault-2",
    )
    stopped = _train(
        work,
        job("drill-budget", "cnn", **epochs).model_copy(update={"deadline": time.time()}),
        {},
        args.allow_cpu,
        "drill-budget-1",
    )
    continued = _train(
        work, job("drill-budget", "cnn", **epochs), {}, args.allow_cpu, "drill-budget-2"
    )
    checks = {
        "fault after epoch 1 raised": "fault" in faulted,
        "retry resumed from epoch 1": retried.get("resumed_from_epoch") == 1
        and retried.get("epochs") == 3,
        "budget stopped after epoch 1": stopped.get("stopped_by_budget") is True
        and stopped.get("epochs") == 1,
        "budget checkpoint kept": stopped.get("checkpoint_files")
        == ["epoch-0001.keras", "state.json"],
        "re-run continued from epoch 1": continued.get("resumed_from_epoch") == 1
        and continued.get("epochs") == 3,
        "checkpoints pruned once finished": continued.get("checkpoint_files") == [],
    }
    for name, ok in checks.items():
        print(f"gpu_check: drill {'ok  ' if ok else 'FAIL'} {name}", flush=True)
    return {"checks": checks, "runs": [faulted, retried, stopped, continued]}


def _sweeps(work: Path, job, args: argparse.Namespace, gpu_name: str | None) -> list[dict]:
    policy = args.policies[-1]
    rows = []
    for name, change in SWEEPS:
        label = "sweep-" + "".join(c if c.isalnum() else "-" for c in name)
        train = {
            "epochs": args.sweep_epochs,
            **({"batch_size": change["batch_size"]} if "batch_size" in change else {}),
        }
        outcome = _train(
            work,
            job(label, "resnet50", **train),
            {"COMPARE_MODELS_PRECISION": policy, **change.get("env", {})},
            args.allow_cpu,
            label,
        )
        outcome["bound"] = _bound(outcome, gpu_name, args.peak_tflops)
        outcome["variant"] = name
        rows.append(outcome)
        print(
            f"gpu_check: sweep {name:24s} {outcome['images_per_second'] or 0:>9.1f} images/s, step "
            f"{outcome['step_ms'] or 0:.2f} ms, share of bound {outcome['bound']['share_of_bound']}",
            flush=True,
        )
    return rows
