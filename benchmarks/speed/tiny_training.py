"""What one tiny training costs, phase by phase, in a fresh process: the floor under every
training the test suite runs (its trainings see 60-200 images for 1-2 epochs, so their cost is
almost all fixed work that does not shrink with the data).

    python -m benchmarks.speed.tiny_training [--models cnn,resnet50] [--images 60] [--batch 16]
        [--xla-cache]

Per model, in a process of its own on the backend a training gets here (or KERAS_BACKEND), it
prints the CPU-seconds (the process's own, `time.process_time`) and wall seconds of: the imports
a training process makes; building the model; compiling it (with the optimizer's state, as
`compile_model` does); the first epoch (tracing the training step, then its steps); a second
epoch (the steps alone); evaluating, saving as `.keras`, loading it back, and predicting. The
difference between the first and the second epoch is the training step's tracing and
compilation. Run it alone on the machine.

`--xla-cache` (with KERAS_BACKEND=jax): each model trains twice, in two processes, with JAX's
compilation cache (`configure_device`'s, in a temporary folder the models share): the first
fills it, the second loads from it, as a later training on the same worker does. Without it,
no cache. Under TensorFlow the option changes nothing (`xla_cache_mib` is 0 in each row).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import child_json, emit


def child(model_name: str, images: int, batch: int, cache_dir: str = "") -> dict:
    """The phases, timed in this (fresh) process."""
    phases: dict[str, dict[str, float]] = {}
    cpu, wall = time.process_time(), time.perf_counter()

    def lap(name: str) -> None:
        nonlocal cpu, wall
        now_cpu, now_wall = time.process_time(), time.perf_counter()
        phases[name] = {"cpu": round(now_cpu - cpu, 2), "wall": round(now_wall - wall, 2)}
        cpu, wall = now_cpu, now_wall

    import importlib

    from tasks.training import TRAINING_PRELOAD

    for name in TRAINING_PRELOAD:
        importlib.import_module(name)
    import keras
    import numpy as np

    from compare_models.models import registry
    from compare_models.models.networks import compile_model, load_model
    from compare_models.training.backend import configure_device

    device = configure_device(1, cache_dir=Path(cache_dir) if cache_dir else None)
    lap("imports")
    model = registry.get(model_name).build()
    lap("build")
    compile_model(model, "adam", 1e-3)
    lap("compile")
    rng = np.random.default_rng(0)
    x = rng.random((images, 32, 32, 3), dtype=np.float32) * 255
    y = np.arange(images) % 10
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    lap("first epoch")
    model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    lap("second epoch")
    model.evaluate(x, y, batch_size=batch, verbose=0)
    lap("evaluate")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        size_mb = os.path.getsize(path) / 1e6
        lap("save")
        loaded = load_model(path)
        lap("load")
    loaded.predict(x, batch_size=batch, verbose=0)
    lap("predict")
    return {
        "model": model_name,
        "backend": keras.backend.backend(),
        "xla_cache_mib": device["xla_cache_mib"],
        "saved_mb": round(size_mb, 1),
        "phases": phases,
        "cpu_seconds": round(sum(p["cpu"] for p in phases.values()), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="cnn,resnet50")
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--xla-cache",
        action="store_true",
        help="train each model twice with JAX's compilation cache: filled, then used",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiny-training-cache-") as cache:
        for model_name in args.models.split(","):
            for cache_state in ("empty", "filled") if args.xla_cache else ("none",):
                result = child_json(
                    [
                        "-m",
                        "benchmarks.speed.tiny_training",
                        "--child",
                        model_name,
                        str(args.images),
                        str(args.batch),
                        cache if args.xla_cache else "",
                    ],
                    what=f"the tiny training of {model_name}",
                )
                emit(
                    "tiny_training",
                    {
                        **result,
                        "images": args.images,
                        "batch": args.batch,
                        "xla_cache": cache_state,
                    },
                )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])))
    else:
        main()
