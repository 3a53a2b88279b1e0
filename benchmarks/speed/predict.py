"""Batch prediction with the champion: images per second and peak memory of `predict` (read,
decode, score with the served ONNX export, write Parquet and CSV), against Keras'
`model.predict` on the same images already in memory, the two alternating.

A CNN (or ResNet50, `--model resnet50`, without pretrained weights) is trained for one epoch on
a small split of the real CIFAR-10 archive and becomes the champion of a scratch track (so it is
exported); the archive's 60,000 JPEG files are unpacked to a local folder (ResNet50 scores the
10,000 test images). Keras' side runs on the backend the model trains with on this machine.
Then, for `--rounds` rounds: `predict` over the whole folder, in a process of its own (its
peak RSS from `getrusage`), and `model.predict` over the same images decoded into memory
beforehand (not timed), in a process of its own; the folder's files are touched before each
`predict`, so that it scores them again instead of reusing its stored result.
`predict` also runs once on the 10,000 test images alone (ResNet50: one class folder, 1,000),
to show whether its memory grows with the number of images.

    python -m benchmarks.speed.predict [--rounds 2] [--model resnet50]

Needs the local stack (`compare-models up`); everything goes to a scratch bucket, removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import child_json, emit, require_archive, run_cli, scratch_bucket
from compare_models.device import training_backend
from compare_models.models.registry import get as model_spec

_PREDICT = """
import json, resource, sys, time
from compare_models.config import Settings
from compare_models.serving.predict import predict
from compare_models.storage.store import ArtifactStore
store = ArtifactStore.from_settings(Settings())
started = time.perf_counter()
summary = predict(store, track=sys.argv[1], model=sys.argv[3], source=sys.argv[2])
seconds = time.perf_counter() - started
print(json.dumps({"images": summary.images, "skipped": summary.skipped, "seconds": seconds,
                  "reused": summary.reused, "accuracy": summary.accuracy,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

_KERAS = """
import json, resource, sys, time
from pathlib import Path
import numpy as np
from compare_models.data.images import to_input
from compare_models.models.networks import load_model
files = sorted(Path(sys.argv[2]).rglob("*.jpg"))
x = np.stack([to_input(f.read_bytes())[0] for f in files]).astype(np.float32) / 255.0
model = load_model(sys.argv[1])
model.predict(x[:256], batch_size=256, verbose=0)  # the first call traces
started = time.perf_counter()
model.predict(x, batch_size=256, verbose=0)
seconds = time.perf_counter() - started
print(json.dumps({"images": len(x), "seconds": seconds,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _in_own_process(script: str, *args: str, backend: str | None = None) -> dict:
    env = {"TF_CPP_MIN_LOG_LEVEL": "3"} | ({"KERAS_BACKEND": backend} if backend else {})
    return child_json(["-c", script, *args], what="a measurement", env=env)


def _touch(folder: Path) -> None:
    now = time.time_ns()
    for path in folder.rglob("*.jpg"):
        os.utime(path, ns=(now, now))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--model",
        choices=("cnn", "resnet50"),
        default="cnn",
        help="the champion's model: the CNN scores all 60,000 images; ResNet50 (no pretrained "
        "weights, as offline) the 10,000 test images, with one class folder for the memory run",
    )
    args = parser.parse_args(argv)
    model = args.model
    # Keras' side runs on the backend the model trains with on this machine
    backend = training_backend(model_spec(model).cpu_backend)
    archive = require_archive()
    with scratch_bucket() as store, tempfile.TemporaryDirectory() as tmp:
        track = f"bench-{secrets.token_hex(3)}"
        stdout, train_seconds = run_cli(
            "run", "--preset", "smoke", "--data", str(archive), "--models", model,
            "--epochs", "1", "--split.train", "2000", "--split.val", "500", "--split.test",
            "500", "--track", track, "--resnet-weights", "none", "--json",
        )  # fmt: skip
        run = json.loads(stdout)
        decision = run["gate"][model]
        if not (decision.get("export") or {}).get("version"):
            raise SystemExit(f"the champion was not exported: {decision.get('export')}")
        from compare_models.storage import layout

        model_path = store.download(
            layout.model_key(run["run_id"], model), Path(tmp) / f"{model}.keras"
        )
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        folder = Path(tmp) / "cifar10"
        if model != "cnn":
            folder = folder / "test"
        rounds = []
        for _ in range(args.rounds):
            _touch(folder)
            scored = _in_own_process(_PREDICT, track, str(folder), model)
            in_memory = _in_own_process(_KERAS, str(model_path), str(folder), backend=backend)
            rounds.append(
                {
                    "predict": scored,
                    "keras_predict_in_memory": in_memory,
                    "predict_images_per_second": round(scored["images"] / scored["seconds"], 1),
                    "keras_images_per_second": round(in_memory["images"] / in_memory["seconds"], 1),
                }
            )
        _touch(folder)
        small_folder = folder / ("test" if model == "cnn" else "airplane")
        small = _in_own_process(_PREDICT, track, str(small_folder), model)
        ratios = [r["predict_images_per_second"] / r["keras_images_per_second"] for r in rounds]
        emit(
            "predict",
            {
                "data": str(archive),
                "model": model,
                "keras_backend": backend,
                "champion_run_id": run["run_id"],
                "export_version": decision["export"]["version"],
                "train_seconds": train_seconds,
                "rounds": rounds,
                "predict_small": small,
                "ratio_predict_over_keras": [round(r, 3) for r in ratios],
                "peak_rss_mib": {
                    str(small["images"]): round(small["peak_rss_mib"], 1),
                    str(rounds[0]["predict"]["images"]): round(
                        max(r["predict"]["peak_rss_mib"] for r in rounds), 1
                    ),
                },
            },
        )


if __name__ == "__main__":
    main()
