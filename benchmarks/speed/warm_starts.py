"""Cold and warm process starts (`compare_models.training.zygote`), alternating: a process that
imports what a training process imports (the train-model flow's module and
`compare_models.training.fit`), builds and compiles a model and fits one epoch of random images,
started by `run_in_own_process` as a fresh interpreter (cold) or as a fork of a zygote that has
imported them (warm, as the local trainer starts its trainings).

    python -m benchmarks.speed.warm_starts [--rounds 5] [--models cnn] [--images 256]

Prints, per model and way, the wall seconds from the request to the process's exit and the
CPU-seconds the whole machine spent meanwhile (`/proc/stat`: run it alone). The warm side's first
start also starts its zygote, and is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from benchmarks.common import ROOT, emit

THREADS, BATCH_SIZE = 1, 32


def child(model_name: str, images: int) -> dict:
    """One training-like process: the imports, then a model built, compiled and fitted."""
    import importlib

    from tasks.training import TRAINING_PRELOAD

    for name in TRAINING_PRELOAD:
        importlib.import_module(name)
    import keras
    import numpy as np

    from compare_models.models import registry
    from compare_models.models.networks import compile_model
    from compare_models.training.backend import configure_device

    configure_device(THREADS)
    x = np.random.default_rng(0).random((images, 32, 32, 3), dtype=np.float32)
    y = np.arange(images) % 10
    model = compile_model(registry.get(model_name).build(), "adam", 1e-3)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)
    return {"backend": keras.backend.backend(), "parent": os.getppid()}


def _machine_cpu_seconds() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def _start(model_name: str, images: int, warm) -> dict:
    from compare_models.training.process import run_in_own_process

    cpu, wall = _machine_cpu_seconds(), time.perf_counter()
    outcome = run_in_own_process(
        [sys.executable, "-m", "benchmarks.speed.warm_starts", "--child", model_name, str(images)],
        timeout=900,
        cwd=ROOT,
        warm=warm,
    )
    if outcome.returncode != 0:
        raise SystemExit(f"the {model_name} process failed: {outcome.errors[-2000:]}")
    done = json.loads(outcome.output.strip().splitlines()[-1])
    if (done.pop("parent") == os.getpid()) == (warm is not None):  # a cold one is our child
        raise SystemExit(f"the {'warm' if warm else 'cold'} start of {model_name} was not one")
    return {
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "machine_cpu_seconds": round(_machine_cpu_seconds() - cpu, 2),
        **done,
    }


def main() -> None:
    from compare_models.device import training_backend
    from compare_models.models import registry
    from compare_models.training.zygote import WarmStart
    from tasks.training import TRAINING_PRELOAD

    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="cnn")
    ap.add_argument("--images", type=int, default=256)
    args = ap.parse_args()
    results: dict = {}
    for model_name in args.models.split(","):
        backend = training_backend(registry.get(model_name).cpu_backend)
        warm = WarmStart(backend=backend, preload=TRAINING_PRELOAD)
        first_warm = _start(model_name, args.images, warm)  # starts the zygote
        runs: dict[str, list[dict]] = {"cold": [], "warm": []}
        for round_ in range(args.rounds):
            for way in ("cold", "warm") if round_ % 2 == 0 else ("warm", "cold"):
                runs[way].append(_start(model_name, args.images, warm if way == "warm" else None))
        results[model_name] = {
            "backend": backend,
            "first_warm_start_with_its_zygote": first_warm,
            **{
                way: {
                    "wall_seconds": [r["wall_seconds"] for r in rs],
                    "machine_cpu_seconds": [r["machine_cpu_seconds"] for r in rs],
                    "median_wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
                    "median_machine_cpu_seconds": statistics.median(
                        r["machine_cpu_seconds"] for r in rs
                    ),
                }
                for way, rs in runs.items()
            },
        }
    emit(
        "warm_starts",
        {
            "settings": {
                "images": args.images,
                "batch_size": BATCH_SIZE,
                "threads": THREADS,
                "rounds": args.rounds,
                "data": "random 32x32x3 images, one epoch",
            },
            "models": results,
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
