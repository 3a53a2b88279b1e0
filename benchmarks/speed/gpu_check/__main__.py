"""The product's own training on a GPU: the seed protocol, per precision policy, by the real
training code (`compare_models.training.fit.train`: its input pipeline, callbacks, S3
checkpoints, publishing), on whichever Keras backend the machine has (KERAS_BACKEND).

Where a Prefect server can be started (the project installed with its dependencies:
`--mode deployment`, the default when Prefect is importable), `benchmarks/speed/gpu_check.sh` runs
the seed protocol through the deployments instead. Elsewhere (`--mode in-process`: the GPU
machines lent to this project have JAX but no TensorFlow, no Prefect, and reach no package
index), this script trains in processes of its own against a real S3: the endpoint in
AWS_ENDPOINT_URL_S3 with its credentials, else a SeaweedFS it starts (`weed` on PATH, or
under --runtime). It prints, per model and policy: training images/s (epochs after the
first), step time, compile time (the first epoch's extra time), peak GPU memory (the
backend's allocator and nvidia-smi's, sampled every 200 ms), test accuracy, and the achieved
throughput as a share of a bound from the model's FLOPs per image and the GPU's peak.

    python3 -m benchmarks.speed.gpu_check --data cifar10-jpeg.tar.gz            # seed protocol
    python3 -m benchmarks.speed.gpu_check --data ... --drills --sweeps          # + resume/budget, knobs
    python3 -m benchmarks.speed.gpu_check --data ... --allow-cpu --train-images 400 --epochs 2  # here

--drills: a training that fails after epoch 1 and resumes from its S3 checkpoint, and one
stopped by its time budget and continued; --sweeps: ResNet50 (the model whose step is fed
more than it computes) with one knob changed at a time: batch size, XLA off, input threads,
steps per execution. A machine without the product's Python dependencies gets them as
wheels: `--bundle DIR` (here) gathers them with SeaweedFS and the data, `--install DIR`
(there) installs them; see docs/guides/gpu.md. One JSON document at the end (also --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.speed.gpu_check.bundle import bundle, install
from benchmarks.speed.gpu_check.child import child_main
from benchmarks.speed.gpu_check.runs import in_process
from benchmarks.speed.gpu_check.settings import POLICIES, ROOT


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child_main(Path(sys.argv[2]), Path(sys.argv[3]), "--allow-cpu" in sys.argv[4:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.speed.gpu_check", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--data", type=Path, help="a CIFAR-10 archive (../shared/data/cifar10-jpeg.tar.gz)"
    )
    parser.add_argument("--mode", choices=("auto", "in-process", "deployment"), default="auto")
    parser.add_argument("--models", nargs="+", default=["cnn", "resnet50"])
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--epochs", type=int, default=10, help="the seed protocol's 10")
    parser.add_argument(
        "--train-images", type=int, help="a smaller `sizes` split (a CPU smoke run)"
    )
    parser.add_argument("--drills", action="store_true", help="resume after a fault; budget stop")
    parser.add_argument(
        "--sweeps", action="store_true", help="ResNet50 with one knob changed at a time"
    )
    parser.add_argument("--sweep-epochs", type=int, default=2)
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak for the policy's dtype")
    parser.add_argument(
        "--allow-cpu", action="store_true", help="train on the CPU when no GPU is seen"
    )
    parser.add_argument("--runtime", type=Path, help="a folder made by --install (weed, wheels)")
    parser.add_argument("--bundle", type=Path, help="gather wheels, SeaweedFS and --data into DIR")
    parser.add_argument("--install", type=Path, help="install what --bundle gathered, then stop")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json"
    )
    args = parser.parse_args()
    if args.bundle:
        bundle(args.bundle, args.data)
        return 0
    if args.install:
        install(args.install)
        return 0
    if not args.data or not args.data.exists():
        parser.error("--data: a CIFAR-10 archive is needed")
    mode = args.mode
    if mode == "auto":
        import importlib.util

        mode = (
            "deployment"
            if importlib.util.find_spec("prefect") and shutil.which("compare-models")
            else "in-process"
        )
    if mode == "deployment":
        env = {
            **os.environ,
            "DATA": str(args.data),
            "EPOCHS": str(args.epochs),
            "RESNET_WEIGHTS": "none",
        }
        return subprocess.call(
            ["bash", str(ROOT / "benchmarks" / "speed" / "gpu_check.sh")], env=env
        )
    if args.runtime:
        sys.path.insert(0, str(args.runtime / "site"))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(args.runtime / "site"), os.environ.get("PYTHONPATH")) if p
        )
    summary = {
        "benchmark": "gpu_check",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": os.environ.get("COMPARE_MODELS_GIT_COMMIT"),
        **in_process(args),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, separators=(",", ":")))
    failed = summary["drills"] and not all(summary["drills"]["checks"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
