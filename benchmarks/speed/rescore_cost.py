"""What re-scoring a champion on today's test images costs: the gate's own path, a process of its
own (`python -m compare_models.gate.rescoring`) that loads the stored model and predicts the
10,000 real CIFAR-10 test images, for the CNN and for ResNet50 (untrained weights: the cost does
not depend on them). Prints, per model and trial, the wall time of the process (interpreter,
TensorFlow import, model download and load, prediction, upload) and the time `rescore` reports.

    python -m benchmarks.speed.rescore_cost [--trials 2]

Needs the local stack (`compare-models up`); everything goes to a scratch bucket.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, require_archive, scratch_bucket


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()

    from compare_models.config import SplitSpec
    from compare_models.data.dataset import prepare_dataset
    from compare_models.gate.rescoring import request_for
    from compare_models.models import registry
    from compare_models.storage import layout

    results = []
    with scratch_bucket() as store, tempfile.TemporaryDirectory() as tmp:
        dataset = prepare_dataset(
            str(require_archive()),
            SplitSpec(protocol="sizes", train=100, val=100, test=10_000),
            store,
            Path(tmp) / "cache",
        )
        keys = {}
        for model in ("cnn", "resnet50"):  # built in this process, saved as a run's model
            import keras

            path = Path(tmp) / f"{model}.keras"
            registry.get(model).build(None).save(path)
            keys[model] = layout.model_key("bench-champion", model)
            store.upload(path, keys[model], overwrite=True)
            keras.backend.clear_session()
        for trial in range(args.trials):
            for model in ("cnn", "resnet50"):  # alternating
                request = request_for(
                    f"bench-{trial}", "bench-champion", model, keys[model], dataset, os.cpu_count()
                )
                started = time.perf_counter()
                out = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "compare_models.gate.rescoring",
                        request.model_dump_json(),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=3600,
                )
                if out.returncode != 0:
                    raise SystemExit(out.stderr[-3000:])
                done = json.loads(out.stdout)
                results.append(
                    {
                        "model": model,
                        "trial": trial,
                        "images": done["images"],
                        "process_seconds": round(time.perf_counter() - started, 2),
                        "rescore_seconds": round(done["seconds"], 2),
                    }
                )
                print(json.dumps(results[-1]), file=sys.stderr)
    emit("rescore_cost", {"data": "cifar10-jpeg.tar.gz test images", "trials": results})


if __name__ == "__main__":
    main()
