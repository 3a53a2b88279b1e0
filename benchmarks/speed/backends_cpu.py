"""Which Keras backend, and which input pipeline, trains faster on this CPU.

Three sides, each training in a process of its own (the backend is chosen per process), in
an order that rotates from trial to trial so that no side always runs first. Each uses the
product's training set-up: its model builders, optimizer, schedule and device configuration
(`compare_models.training.fit`):

* ``tensorflow-tf.data``: on TensorFlow, fed by the `tf.data` pipeline
  (`compare_models.training.batches.tf_data_input`: shuffle, batch, one random flip map,
  prefetch), the product's input under TensorFlow;
* ``tensorflow-PyDataset``: on TensorFlow, fed by the backend-neutral input
  (`compare_models.training.batches.ShuffledBatches`, a `keras.utils.PyDataset`);
* ``jax``: on Keras' JAX backend, fed by `ShuffledBatches` (the product's input there).

Real CIFAR-10 images (the seed protocol's split, the first --train-images of its training
set), the seed protocol's batch size 128 and flips. Prints, per side and model, training
images/s over the epochs after the first (which compiles), the first epoch's seconds and the
validation accuracy; one JSON document at the end (also benchmarks/results/backends_cpu.json).

    python -m benchmarks.speed.backends_cpu                      # cnn and resnet50, 2 trials
    python -m benchmarks.speed.backends_cpu --models cnn --trials 3 --train-images 4000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REAL_ARCHIVE, child_json, emit

SIDES = ("tensorflow-PyDataset", "tensorflow-tf.data", "jax")


def _prepare(archive: Path, folder: Path, n_train: int) -> dict:
    """Decode the archive once; the seed split's first `n_train` training images and its
    validation images, as .npy files for the children."""
    import numpy as np

    from compare_models.config import SplitSpec
    from compare_models.data.dataset import make_splits, split_indices
    from compare_models.data.decoding import decode_archive

    decoded = decode_archive(archive)
    splits = make_splits(decoded, split_indices(decoded, SplitSpec(protocol="seed")))
    x, y = splits["train"]
    np.save(folder / "x_train.npy", x[:n_train])
    np.save(folder / "y_train.npy", y[:n_train])
    np.save(folder / "x_val.npy", splits["val"][0])
    np.save(folder / "y_val.npy", splits["val"][1])
    return {"train_images": int(min(n_train, len(y))), "val_images": int(len(splits["val"][1]))}


def _child(side: str, model_name: str, folder: Path, epochs: int, batch_size: int = 128) -> None:
    import keras  # noqa: I001 - after the product's backend preparation
    import numpy as np

    from compare_models.models import registry
    from compare_models.config import TrainParams
    from compare_models.data.dataset import normalise
    from compare_models.device import available_cpus
    from compare_models.models.networks import compile_model, learning_rate_schedule
    from compare_models.training.fit import configure_device  # prepares the backend first
    from compare_models.training.batches import ShuffledBatches, tf_data_input

    device = configure_device(available_cpus(), allow_cpu=True)
    params = TrainParams(epochs=epochs, batch_size=batch_size, augment="flip", seed=1)
    keras.utils.set_random_seed(params.seed)
    x, y = normalise(np.load(folder / "x_train.npy")), np.load(folder / "y_train.npy")
    validation = (normalise(np.load(folder / "x_val.npy")), np.load(folder / "y_val.npy"))
    steps = epochs * -(-len(y) // params.batch_size)
    spec = registry.get(model_name)
    model = compile_model(
        spec.build(None),
        params.optimizer,
        learning_rate_schedule(params.learning_rate, params.lr_schedule, steps),
    )
    batches = (
        tf_data_input(x, y, params, seed=params.seed)
        if side.startswith("tensorflow") and side != "tensorflow-PyDataset"
        else ShuffledBatches(
            x, y, batch_size=params.batch_size, seed=params.seed, augment=params.augment
        )
    )
    marks: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: marks.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: marks.append(time.perf_counter()),
    )
    model.fit(batches, epochs=epochs, verbose=0, callbacks=[timer])  # training alone is timed
    _, val_accuracy = model.evaluate(*validation, batch_size=256, verbose=0)
    seconds = [marks[i + 1] - marks[i] for i in range(0, len(marks), 2)]
    steady = seconds[1:] or seconds
    print(
        json.dumps(
            {
                "side": side,
                "model": model_name,
                "backend": device["backend"],
                "onednn": _onednn_on(device["backend"]),
                "batch_size": batch_size,
                "threads": device["threads"],
                "epoch_seconds": [round(s, 2) for s in seconds],
                "images_per_second": round(len(y) * len(steady) / sum(steady), 1),
                "val_accuracy": round(float(val_accuracy), 4),
            }
        ),
        flush=True,
    )


def _onednn_on(backend: str) -> bool | None:
    """Whether TensorFlow computes with oneDNN's kernels in this process (TensorFlow turns them
    on by default only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX, unless
    TF_ENABLE_ONEDNN_OPTS says otherwise); None under JAX."""
    if backend != "tensorflow":
        return None
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def _run(
    side: str,
    model: str,
    folder: Path,
    epochs: int,
    batch_size: int = 128,
    env: dict[str, str] | None = None,
) -> dict:
    return child_json(
        [
            "-m",
            "benchmarks.speed.backends_cpu",
            "--child",
            side,
            model,
            str(folder),
            str(epochs),
            str(batch_size),
        ],
        what=f"{side} {model}",
        env={
            "KERAS_BACKEND": "jax" if side.startswith("jax") else "tensorflow",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        },
        timeout=3 * 3600,
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        side, model, folder, epochs, batch_size = sys.argv[2:7]
        _child(side, model, Path(folder), int(epochs), int(batch_size))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=REAL_ARCHIVE)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet50"])
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per trial; the first compiles")
    parser.add_argument("--train-images", type=int, default=3000)
    args = parser.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"no archive at {args.archive} (see ../shared/data/README.md)")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="backends-cpu-") as tmp:
        folder = Path(tmp)
        data = _prepare(args.archive, folder, args.train_images)
        for trial in range(args.trials):
            for model in args.models:
                order = (
                    args.sides[trial % len(args.sides) :] + args.sides[: trial % len(args.sides)]
                )
                for side in order:
                    run = {"trial": trial + 1, **_run(side, model, folder, args.epochs)}
                    runs.append(run)
                    print(
                        f"trial {run['trial']} {model:9s} {side:19s} {run['images_per_second']:8.1f} "
                        f"images/s, first epoch {run['epoch_seconds'][0]:.1f} s, val accuracy "
                        f"{run['val_accuracy']:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
    summary = {
        model: {
            side: {
                "median_images_per_second": statistics.median(
                    r["images_per_second"]
                    for r in runs
                    if r["model"] == model and r["side"] == side
                ),
                "per_trial": [
                    r["images_per_second"]
                    for r in runs
                    if r["model"] == model and r["side"] == side
                ],
                "median_first_epoch_seconds": statistics.median(
                    r["epoch_seconds"][0] for r in runs if r["model"] == model and r["side"] == side
                ),
            }
            for side in args.sides
        }
        for model in args.models
    }
    emit(
        "backends_cpu",
        {
            "data": {"archive": str(args.archive.name), "split": "seed", **data},
            "settings": {
                "epochs_per_trial": args.epochs,
                "batch_size": 128,
                "augment": "flip",
                "trials": args.trials,
                "order": "rotating per trial",
            },
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
