"""The first training step of each model, with the optimizer's variables created when the model
is compiled (`compile_model`, the pipeline's way) against Keras' default of creating them while
the first step is traced. Each measurement runs in a fresh process (nothing traced or cached),
the two ways alternating, so both see the same machine.

    python -m benchmarks.speed.first_step [--pairs 3] [--models cnn,resnet50] [--images 512]

Prints, per model and way, the first step's seconds (trace and run of one batch of 128),
the rest of one epoch of `--images` random images, and whether the trained weights of the two
ways agree (one thread, the same seed: they must be equal).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from benchmarks.common import ROOT, emit

BATCH_SIZE, THREADS = 128, 1


def child(model_name: str, way: str, images: int) -> dict:
    """One measurement, in this (fresh) process."""
    import numpy as np

    from compare_models.training.fit import configure_device

    configure_device(THREADS)
    import keras

    from compare_models.models import registry
    from compare_models.models.networks import compile_model

    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((images, 32, 32, 3), dtype=np.float32)
    y = np.arange(images) % 10
    built = time.perf_counter()
    model = compile_model(
        registry.get(model_name).build(), "adam", 1e-3, optimizer_state_now=way == "at-compile"
    )
    built = time.perf_counter() - built
    marks: list[float] = []

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            marks.append(time.perf_counter())

    started = time.perf_counter()
    model.fit(
        x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0, callbacks=[FirstStep()]
    )
    ended = time.perf_counter()
    return {
        "build_and_compile_seconds": built,
        "first_step_seconds": marks[0] - started,
        "rest_of_epoch_seconds": ended - marks[0],
        "weights_checksum": float(sum(float(np.abs(w).sum()) for w in model.get_weights())),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--models", default="cnn,resnet50")
    ap.add_argument("--images", type=int, default=512)
    args = ap.parse_args()
    ways = ("at-compile", "in-first-trace")
    results: dict = {}
    for model_name in args.models.split(","):
        runs: dict[str, list[dict]] = {way: [] for way in ways}
        for pair in range(args.pairs):
            for way in ways if pair % 2 == 0 else ways[::-1]:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.speed.first_step",
                        "--child",
                        model_name,
                        way,
                        str(args.images),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
        results[model_name] = {
            way: {
                "first_step_seconds": [round(r["first_step_seconds"], 2) for r in rs],
                "median_first_step_seconds": round(
                    statistics.median(r["first_step_seconds"] for r in rs), 2
                ),
                "rest_of_epoch_seconds": [round(r["rest_of_epoch_seconds"], 2) for r in rs],
                "build_and_compile_seconds": [round(r["build_and_compile_seconds"], 2) for r in rs],
            }
            for way, rs in runs.items()
        }
        checks = {r["weights_checksum"] for rs in runs.values() for r in rs}
        results[model_name]["same_weights_both_ways"] = max(checks) - min(checks) < 1e-3 * max(
            1.0, abs(max(checks))
        )
    emit(
        "first_step",
        {
            "settings": {
                "images": args.images,
                "batch_size": BATCH_SIZE,
                "threads": THREADS,
                "pairs": args.pairs,
                "data": "random 32x32x3 images",
            },
            "models": results,
        },
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        name, way, images = sys.argv[2:5]
        print(json.dumps(child(name, way, int(images))))
    else:
        main()
