"""The project's models on a GPU, where the product's own stack cannot be installed.

`benchmarks/gpu_check.sh` is the full check (TensorFlow with CUDA, the local Prefect and S3
stack, the seed protocol through the deployments). Some GPU machines cannot install it: the
ones lent to this project reach no package index, and TensorFlow's CUDA wheels are far larger
than what can be carried to them. This script checks what can be checked there with Keras 3 on
another backend (JAX or PyTorch, whichever the machine has): the project's own model builders
(`compare_models.registry`), optimizer and learning-rate schedule (`compare_models.models`),
the bounded archive decoder and the seed split (`compare_models.data.decoding`, `compare_models.data`),
trained on the GPU under each precision policy. It prints, per model and policy, training
images/s (epochs after the first, which compiles), test accuracy, and the peak GPU memory (the
backend's allocator peak and nvidia-smi's, sampled every 200 ms); and the mixed-precision
speed-up against float32. No augmentation and no checkpoints: numbers for the GPU path of the
models, not for the product's TensorFlow training loop.

    KERAS_BACKEND=jax python benchmarks/gpu_models.py --data ../shared/data/cifar10-jpeg.tar.gz

Each (model, policy) trains in its own process so that peaks do not mix. One JSON line on
stdout at the end (also --out).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _prepare(archive: Path, spec, folder: Path) -> dict:
    """Decode the archive once and store the split as .npy files for the children."""
    import numpy as np

    from compare_models.data.dataset import make_splits, split_indices
    from compare_models.data.decoding import decode_archive

    started = time.perf_counter()
    decoded = decode_archive(archive)
    splits = make_splits(decoded, split_indices(decoded, spec))
    for split in ("train", "test"):
        x, y = splits[split]
        np.save(folder / f"x_{split}.npy", x)
        np.save(folder / f"y_{split}.npy", y)
    return {
        "decode_and_split_seconds": round(time.perf_counter() - started, 1),
        "train_images": int(len(splits["train"][1])),
        "test_images": int(len(splits["test"][1])),
    }


def _peak_device_bytes(backend: str) -> int | None:
    if backend == "jax":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use")
    if backend == "torch":
        import torch

        return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return None


def _device_names(backend: str) -> list[str]:
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [
                f"cuda:{torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
            ]
        return ["cpu"]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices()]


def _child(args: argparse.Namespace) -> None:
    """Train one model under one policy; print one JSON line."""
    import keras
    import numpy as np

    from compare_models import registry
    from compare_models.config import TrainParams
    from compare_models.data.dataset import normalise
    from compare_models.models import compile_model, learning_rate_schedule

    backend = keras.backend.backend()
    keras.utils.set_random_seed(args.seed)
    keras.mixed_precision.set_global_policy(args.policy)
    folder = Path(args.arrays)
    x_train = normalise(np.load(folder / "x_train.npy"))
    y_train = np.load(folder / "y_train.npy")
    x_test = normalise(np.load(folder / "x_test.npy"))
    y_test = np.load(folder / "y_test.npy")
    defaults = TrainParams()
    steps = args.epochs * -(-len(y_train) // args.batch_size)
    model = compile_model(
        registry.get(args.model).build(None),
        defaults.optimizer,
        learning_rate_schedule(defaults.learning_rate, defaults.lr_schedule, steps),
    )
    marks: list[float] = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: marks.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: marks.append(time.perf_counter()),
    )
    history = model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    epoch_seconds = [marks[i + 1] - marks[i] for i in range(0, len(marks), 2)]
    steady = epoch_seconds[1:] or epoch_seconds
    started = time.perf_counter()
    _, accuracy = model.evaluate(x_test, y_test, batch_size=512, verbose=0)
    peak = _peak_device_bytes(backend)
    print(
        json.dumps(
            {
                "model": args.model,
                "policy": args.policy,
                "backend": backend,
                "devices": _device_names(backend),
                "parameters": int(model.count_params()),
                "epoch_seconds": [round(s, 2) for s in epoch_seconds],
                "first_epoch_seconds_incl_compile": round(epoch_seconds[0], 2),
                "train_images_per_second": round(len(y_train) * len(steady) / sum(steady), 1),
                "final_train_loss": round(float(history.history["loss"][-1]), 4),
                "test_accuracy": round(float(accuracy), 4),
                "test_seconds": round(time.perf_counter() - started, 2),
                "peak_allocator_mib": None if peak is None else round(peak / 2**20),
            }
        ),
        flush=True,
    )


def _nvidia_smi(*query: str) -> list[str]:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def _run_one(args: argparse.Namespace, model: str, policy: str, arrays: Path) -> dict:
    sampler = None
    samples = arrays / f"memory-{model}-{policy}.txt"
    if _nvidia_smi("memory.used"):
        with samples.open("w") as sink:
            sampler = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=sink,
                stderr=subprocess.DEVNULL,
            )
    command = [
        sys.executable,
        __file__,
        "--child",
        "--arrays",
        str(arrays),
        "--model",
        model,
        "--policy",
        policy,
        "--epochs",
        str(args.epochs),
        "--batch-size",
        str(args.batch_size),
        "--seed",
        str(args.seed),
    ]
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "policy": policy, "error": f"timed out after {args.timeout} s"}
    finally:
        if sampler is not None:
            sampler.terminate()
            sampler.wait()
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout)[-1500:]
        return {"model": model, "policy": policy, "error": f"exit {done.returncode}: {tail}"}
    result = json.loads(lines[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    if sampler is not None:
        values = [int(v) for v in samples.read_text().split() if v.strip().isdigit()]
        result["peak_nvidia_smi_mib"] = max(values) if values else None
    return result


def _split(args: argparse.Namespace):
    from compare_models.config import SplitSpec

    if not args.sizes:
        return SplitSpec(protocol=args.protocol, seed=args.seed)
    train, test = (int(v) for v in args.sizes.split(","))
    return SplitSpec(protocol="sizes", train=train, val=10, test=test, seed=args.seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/cifar10-jpeg.tar.gz"
    )
    parser.add_argument("--protocol", default="seed", choices=["seed", "full"])
    parser.add_argument("--sizes", help="TRAIN,TEST instead of the protocol (a quick try on a CPU)")
    parser.add_argument("--models", default="cnn,resnet50")
    parser.add_argument("--policies", default="mixed_float16,float32")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per (model, policy)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--arrays", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--policy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        arrays = Path(tmp)
        data = _prepare(args.data, _split(args), arrays)
        print(f"gpu_models: data {data}", file=sys.stderr, flush=True)
        runs = []
        for model in args.models.split(","):
            for policy in args.policies.split(","):
                result = _run_one(args, model, policy, arrays)
                print(f"gpu_models: {json.dumps(result)}", file=sys.stderr, flush=True)
                runs.append(result)
    rate = {(r["model"], r["policy"]): r.get("train_images_per_second") for r in runs}
    speedup = {
        f"{model} {policy}": round(rate[(model, policy)] / rate[(model, "float32")], 2)
        for model in args.models.split(",")
        for policy in args.policies.split(",")
        if policy != "float32" and rate.get((model, policy)) and rate.get((model, "float32"))
    }
    summary = {
        "benchmark": "gpu_models",
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "gpus": _nvidia_smi("name", "memory.total", "driver_version"),
        "data": str(args.data),
        "protocol": f"sizes {args.sizes}" if args.sizes else args.protocol,
        **data,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "augmentation": "none",
        "resnet_weights": "none (random init)",
        "speedup_over_float32": speedup,
        "runs": runs,
    }
    line = json.dumps(summary, separators=(",", ":"))
    if args.out:
        args.out.write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
