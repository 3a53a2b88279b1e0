"""Training on the CPU against the CPU's bound: images/s per model, backend and batch size, and
the share of the float32 matrix-multiply rate they reach.

Three measurements, all in this run:

* **The bound**: the CPU's float32 matrix-multiply rate, `--matmul-size`² by `--matmul-size`²
  products (best of `--matmul-repeats`) in NumPy (its BLAS), in TensorFlow and in JAX, each in a
  process of its own with the threads a training gets. The bound is the best of the three. A
  memory bandwidth (a large array copied) is measured beside it, for the roofline.
* **The work per image**: XLA's cost analysis (`jax.jit(...).lower(...).compile()
  .cost_analysis()`) of the model's forward pass and of its training step (the forward pass,
  the loss and the gradients; the optimizer's update, per step not per image, left out), at
  the model's input size, divided by the batch. It gives the FLOPs and the bytes the compiled
  program accesses, so the arithmetic intensity (FLOPs per byte) too.
* **The trainings**: the product's training set-up (`backends_cpu._child`: its model builders,
  optimizer, schedule, device configuration and inputs) on real CIFAR-10 images (the seed
  split's first `--train-images`), one process per training, the sides in an order that
  rotates each trial, images/s over the epochs after the first (which compiles).

Sides (`SIDES`): JAX as the product runs it (today's CPU default for ResNet50), JAX with
XLA:CPU's oneDNN custom calls (`--xla_cpu_experimental_onednn_custom_call=true`), and TensorFlow
with `tf.data` with oneDNN's kernels forced on and forced off (`TF_ENABLE_ONEDNN_OPTS`). Each
training records whether oneDNN was on in its process (TensorFlow turns it on by default only on
CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX).

    python -m benchmarks.speed.cpu_bound                       # both models, batch 128 and 32
    python -m benchmarks.speed.cpu_bound --models resnet50 --batch-sizes 32 --trials 2
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
from benchmarks.speed.backends_cpu import _prepare, _run

#: side → (the training's backend and input, the environment it adds).
SIDES: dict[str, tuple[str, dict[str, str]]] = {
    "jax": ("jax", {}),
    "jax-xla-onednn": ("jax", {"XLA_FLAGS": "--xla_cpu_experimental_onednn_custom_call=true"}),
    "tensorflow-onednn-on": ("tensorflow-tf.data", {"TF_ENABLE_ONEDNN_OPTS": "1"}),
    "tensorflow-onednn-off": ("tensorflow-tf.data", {"TF_ENABLE_ONEDNN_OPTS": "0"}),
}


# ── the bound ──────────────────────────────────────────────────────────────────────────────


def _matmul_child(library: str, size: int, repeats: int) -> dict:
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    if library == "numpy":

        def product():
            return a @ b

    elif library == "tensorflow":
        import tensorflow as tf

        from compare_models.device import available_cpus

        tf.config.threading.set_intra_op_parallelism_threads(available_cpus())
        ta, tb = tf.constant(a), tf.constant(b)

        def product():
            return tf.linalg.matmul(ta, tb).numpy()

    else:
        import jax
        import jax.numpy as jnp

        ja, jb = jnp.asarray(a), jnp.asarray(b)
        matmul = jax.jit(jnp.matmul)

        def product():
            return matmul(ja, jb).block_until_ready()

    product()
    best = min(_timed(product) for _ in range(repeats))
    result = {"library": library, "gflops": round(2 * size**3 / best / 1e9, 1)}
    if library == "numpy":
        big = np.ones(256 * 2**20 // 4, dtype=np.float32)  # 256 MiB, far beyond the caches
        out = np.empty_like(big)
        seconds = min(_timed(lambda: np.copyto(out, big)) for _ in range(repeats))
        result["copy_gb_per_s"] = round(2 * big.nbytes / seconds / 1e9, 1)  # read + write
    return result


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


# ── the work per image ──────────────────────────────────────────────────────────────────────


def _cost_child(model_name: str, batch: int) -> dict:
    import jax
    import keras
    import numpy as np

    from compare_models.models import registry

    model = registry.get(model_name).build(None)
    shape = tuple(model.input_shape[1:])
    x = np.zeros((batch, *shape), dtype="float32")
    y = np.zeros((batch,), dtype="int32")
    trainable = [v.value for v in model.trainable_variables]
    frozen = [v.value for v in model.non_trainable_variables]

    def forward(tv, ntv, x):
        return model.stateless_call(tv, ntv, x, training=False)[0]

    def loss(tv, ntv, x, y):
        probabilities, ntv = model.stateless_call(tv, ntv, x, training=True)
        return keras.ops.mean(keras.losses.sparse_categorical_crossentropy(y, probabilities)), ntv

    step = jax.value_and_grad(loss, has_aux=True)

    def analysed(function, *args) -> dict:
        cost = jax.jit(function).lower(*args).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost
        return {"flops": float(cost["flops"]), "bytes": float(cost["bytes accessed"])}

    fwd, train = analysed(forward, trainable, frozen, x), analysed(step, trainable, frozen, x, y)
    return {
        "model": model_name,
        "input_shape": list(shape),
        "parameters": int(model.count_params()),
        "batch": batch,
        "forward_mflops_per_image": round(fwd["flops"] / batch / 1e6, 1),
        "training_mflops_per_image": round(train["flops"] / batch / 1e6, 1),
        "training_mbytes_per_image": round(train["bytes"] / batch / 1e6, 1),
        "training_flops_per_byte": round(train["flops"] / train["bytes"], 2),
    }


# ── the parent ──────────────────────────────────────────────────────────────────────────────


def _child_json(*args: str, env: dict[str, str] | None = None) -> dict:
    return child_json(
        ["-m", "benchmarks.speed.cpu_bound", *args],
        what=" ".join(args),
        env={"TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--matmul-child":
        print(json.dumps(_matmul_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--cost-child":
        print(json.dumps(_cost_child(sys.argv[2], int(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=REAL_ARCHIVE)
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet50"])
    parser.add_argument("--sides", nargs="+", default=list(SIDES), choices=list(SIDES))
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 32])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="per training; the first compiles")
    parser.add_argument("--train-images", type=int, default=1024)
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--matmul-repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.archive.exists():
        raise SystemExit(f"no archive at {args.archive} (see ../shared/data/README.md)")

    bound = {}
    for library in ("numpy", "tensorflow", "jax"):
        env = {"KERAS_BACKEND": "jax"} if library == "jax" else {}
        bound[library] = _child_json(
            "--matmul-child", library, str(args.matmul_size), str(args.matmul_repeats), env=env
        )
        _say(f"matmul {library:10s} {bound[library]['gflops']:8.1f} GFLOP/s")
    peak = max(b["gflops"] for b in bound.values())
    copy_gb = bound["numpy"]["copy_gb_per_s"]
    _say(f"bound {peak:.1f} GFLOP/s; copy {copy_gb:.1f} GB/s")

    costs = {
        model: _child_json("--cost-child", model, "32", env={"KERAS_BACKEND": "jax"})
        for model in args.models
    }
    for cost in costs.values():
        _say(
            f"{cost['model']:9s} {cost['parameters']:,} parameters, forward "
            f"{cost['forward_mflops_per_image']} MFLOP/image, training step "
            f"{cost['training_mflops_per_image']} MFLOP and {cost['training_mbytes_per_image']} "
            f"MB/image ({cost['training_flops_per_byte']} FLOP/byte)"
        )

    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cpu-bound-") as tmp:
        folder = Path(tmp)
        data = _prepare(args.archive, folder, args.train_images)
        for trial in range(args.trials):
            shift = trial % len(args.sides)
            order = args.sides[shift:] + args.sides[:shift]
            for model in args.models:
                for batch in args.batch_sizes:
                    for side in order:
                        kind, env = SIDES[side]
                        run = _run(kind, model, folder, args.epochs, batch, env=env)
                        mflops = costs[model]["training_mflops_per_image"]
                        run.update(
                            trial=trial + 1,
                            side=side,
                            achieved_gflops=round(run["images_per_second"] * mflops / 1e3, 1),
                        )
                        run["share_of_bound"] = round(run["achieved_gflops"] / peak, 3)
                        runs.append(run)
                        _say(
                            f"trial {trial + 1} {model:9s} batch {batch:3d} {side:22s} "
                            f"{run['images_per_second']:7.1f} images/s = "
                            f"{run['achieved_gflops']:6.1f} GFLOP/s ({100 * run['share_of_bound']:.1f}%"
                            f" of the bound), oneDNN {run['onednn']}, first epoch "
                            f"{run['epoch_seconds'][0]:.1f} s, val accuracy {run['val_accuracy']:.3f}"
                        )

    def of(model, batch, side):
        return [
            r
            for r in runs
            if r["model"] == model and r["batch_size"] == batch and r["side"] == side
        ]

    summary = {
        model: {
            str(batch): {
                side: {
                    "median_images_per_second": statistics.median(
                        r["images_per_second"] for r in of(model, batch, side)
                    ),
                    "median_share_of_bound": statistics.median(
                        r["share_of_bound"] for r in of(model, batch, side)
                    ),
                    "per_trial": [r["images_per_second"] for r in of(model, batch, side)],
                    "onednn": of(model, batch, side)[0]["onednn"],
                }
                for side in args.sides
            }
            for batch in args.batch_sizes
        }
        for model in args.models
    }
    emit(
        "cpu_bound",
        {
            "data": {"archive": str(args.archive.name), "split": "seed", **data},
            "settings": {
                "epochs_per_training": args.epochs,
                "batch_sizes": args.batch_sizes,
                "augment": "flip",
                "trials": args.trials,
                "order": "sides rotating per trial",
                "matmul": f"{args.matmul_size}x{args.matmul_size} float32, best of "
                f"{args.matmul_repeats}",
            },
            "bound": {"gflops": peak, "copy_gb_per_s": copy_gb, "per_library": bound},
            "cost": costs,
            "summary": summary,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
