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
import lzma
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

#: The product's Python dependencies a training needs that a JAX-only GPU machine lacks
#: (compare_models.training.fit's imports, less what that machine has; KINDS.md in the device
#: tool's library lists it). Versions: those installed here, so that they are the ones tested.
CARRIED = (
    "keras",
    "namex",
    "optree",  # compiled (C++): a manylinux wheel for the machine's Python
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "pydantic",
    "pydantic-core",  # compiled (Rust)
    "pydantic-settings",
    "typing-inspection",
    "annotated-types",
    "python-dotenv",
    "tenacity",
)
COMPILED = {"optree", "pydantic-core"}
#: What one call to a device machine may carry (its working tree included).
CARRY_LIMIT_MIB = 64
#: Dense tensor-core peaks (TFLOP/s, without sparsity) of the GPUs we know, per compute dtype:
#: NVIDIA's data sheets. float32 counts as TF32, which XLA uses for float32 matrix products and
#: convolutions on these GPUs by default.
PEAK_TFLOPS = {
    "H200": {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7},
    "H100": {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0},
}
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")
SWEEPS = (
    ("batch 128 (the protocol)", {}),
    ("batch 256", {"batch_size": 256}),
    ("batch 512", {"batch_size": 512}),
    ("batch 1024", {"batch_size": 1024}),
    ("XLA off", {"env": {"COMPARE_MODELS_JIT_COMPILE": "false"}}),
    ("4 input threads", {"env": {"COMPARE_MODELS_INPUT_WORKERS": "4"}}),
    ("steps_per_execution 8", {"env": {"COMPARE_MODELS_STEPS_PER_EXECUTION": "8"}}),
    ("steps_per_execution 32", {"env": {"COMPARE_MODELS_STEPS_PER_EXECUTION": "32"}}),
)


# ── the child: one training by the product's code ─────────────────────────────


def _flops_per_image(model) -> float | None:
    """Forward FLOPs per image from XLA's cost analysis of the compiled forward pass (JAX)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax
    import numpy as np

    batch = 32
    x = np.zeros((batch, *model.input_shape[1:]), dtype="float32")
    forward = jax.jit(
        lambda trainable, frozen, images: model.stateless_call(
            trainable, frozen, images, training=False
        )[0]
    )
    compiled = forward.lower(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        x,
    ).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = (cost or {}).get("flops")
    return float(flops) / batch if flops else None


def _peak_allocator_bytes() -> int | None:
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use")
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except Exception:  # noqa: BLE001 - a number to report, not worth failing the check
        return None
    return None


def _child(job_path: Path, out_path: Path, allow_cpu: bool) -> int:
    import logging

    import keras  # noqa: I001 - after the product's backend preparation
    import numpy as np

    from compare_models.config import Settings
    from compare_models.data.dataset import load_split
    from compare_models.models.networks import load_model
    from compare_models.storage import layout
    from compare_models.storage.store import ArtifactStore
    from compare_models.training.drills import InjectedFault
    from compare_models.training.fit import train  # prepares the backend first
    from compare_models.training.jobs import TrainingJob

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logger = logging.getLogger("gpu-check")
    job = TrainingJob.model_validate_json(job_path.read_text())
    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    marks = [time.perf_counter()]
    outcome: dict = {"name": job.name, "run_id": job.run_id}
    try:
        result = train(
            job,
            store,
            settings.cache_dir,
            logger,
            allow_cpu=allow_cpu,
            on_epoch=lambda done, total, logs: marks.append(time.perf_counter()),
        )
    except InjectedFault as exc:
        outcome["fault"] = str(exc)
        out_path.write_text(json.dumps(outcome))
        return 3
    epoch_seconds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    steady = epoch_seconds[1:] or epoch_seconds
    steps = -(-job.dataset.sizes["train"] // job.train.batch_size)
    x_test, y_test = load_split(job.dataset, "test", store, settings.cache_dir)
    probabilities = np.load(
        store.download(
            layout.predictions_key(job.run_id, job.name), Path(tempfile.mkdtemp()) / "p.npz"
        )
    )["y_prob"]
    model = load_model(
        store.download(layout.model_key(job.run_id, job.name), Path(tempfile.mkdtemp()) / "m.keras")
    )
    outcome.update(
        {
            "model": job.model,
            "backend": keras.backend.backend(),
            "device": {k: v for k, v in result.device.items() if k != "host"},
            "epochs": result.epochs,
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_by_budget": result.stopped_by_budget,
            "batch_size": job.train.batch_size,
            "epoch_seconds": [round(s, 3) for s in epoch_seconds],
            "images_per_second": round(job.dataset.sizes["train"] * len(steady) / sum(steady), 1)
            if steady
            else None,
            "step_ms": round(1000 * statistics.mean(steady) / steps, 3) if steady else None,
            "compile_seconds": round(epoch_seconds[0] - statistics.mean(steady), 2)
            if len(epoch_seconds) > 1
            else None,
            "fit_seconds": round(result.fit_seconds, 2),
            "test_accuracy": round(float((probabilities.argmax(axis=1) == y_test).mean()), 4),
            "peak_allocator_mib": (lambda b: None if b is None else round(b / 2**20))(
                _peak_allocator_bytes()
            ),
            "forward_flops_per_image": _flops_per_image(model),
            "checkpoint_files": sorted(
                k.rsplit("/", 1)[-1]
                for k in store.list_keys(layout.checkpoint_prefix(job.run_id, job.name))
            ),
        }
    )
    out_path.write_text(json.dumps(outcome))
    return 0


# ── S3 for the trainings ───────────────────────────────────────────────────────


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed(runtime: Path | None) -> str | None:
    """The local stack's `weed` (`local.services.weed_binary`), or the one --install unpacked."""
    from compare_models.local.processes import ServiceError
    from compare_models.local.services import weed_binary

    if runtime is not None:
        os.environ["PATH"] = os.pathsep.join((str(runtime / "bin"), os.environ.get("PATH", "")))
    try:
        return weed_binary()
    except ServiceError:
        return None


def start_s3(work: Path, runtime: Path | None) -> subprocess.Popen | None:
    """The endpoint in AWS_ENDPOINT_URL_S3 (with its credentials), else a SeaweedFS started
    here, for this check's bucket alone. Sets the variables the product's `Settings` read."""
    os.environ.setdefault("COMPARE_MODELS_BUCKET", f"cm-gpu-check-{secrets.token_hex(4)}")
    os.environ["COMPARE_MODELS_HOME"] = str(work / "home")
    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        return None
    from compare_models.local.ports import SEAWEED_S3_ONLY

    weed = _weed(runtime)
    if weed is None:
        raise SystemExit(
            "gpu_check: no S3 endpoint: set AWS_ENDPOINT_URL_S3 (and AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY), or bring SeaweedFS's `weed` (on PATH, or --runtime DIR "
            "from `--install`)"
        )
    port, master, volume, filer = (_free_port() for _ in range(4))
    key, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
        }
    )
    (work / "weed").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            weed,
            "mini",
            f"-dir={work / 'weed'}",
            *SEAWEED_S3_ONLY,
            f"-s3.port={port}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-admin.port={_free_port()}",
        ],
        env={**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret},
        stdout=(work / "weed.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

    store = ArtifactStore.from_settings(Settings())
    deadline = time.monotonic() + 120
    while True:
        try:
            store.ensure_bucket()
            return process
        except Exception as exc:  # noqa: BLE001 - not up yet
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"gpu_check: SeaweedFS did not start ({exc}); see {work}/weed.log"
                ) from None
            time.sleep(1)


# ── the parent ─────────────────────────────────────────────────────────────────


class MemorySampler:
    """nvidia-smi's memory.used every 200 ms while a training runs (none without nvidia-smi)."""

    def __init__(self, path: Path):
        self.path, self.process = path, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=self.path.open("w"),
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def peak_mib(self) -> int | None:
        if not self.path.exists():
            return None
        values = [int(v) for v in self.path.read_text().split() if v.strip().isdigit()]
        return max(values) if values else None


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


# ── bringing the dependencies to a machine without a package index ────────────


def bundle(folder: Path, data: Path | None) -> dict:
    """Downloads the CARRIED wheels (this environment's versions) for the device machine
    (Python 3.12, x86-64 manylinux), SeaweedFS's binary (xz-compressed), and copies the data.
    Two parts, each within one call's carry limit: part 1 the runtime, part 2 botocore and data."""
    part1, part2 = folder / "part1", folder / "part2"
    for part in (part1, part2):
        part.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_27_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "-d",
            str(part1),
            *pins,
        ],
        check=True,
    )
    for wheel in part1.glob("botocore-*.whl"):
        wheel.rename(part2 / wheel.name)
    weed = _weed(None)
    if weed:
        with open(weed, "rb") as source, lzma.open(part1 / "weed.xz", "wb", preset=6) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    if data:
        shutil.copy2(data, part2 / data.name)
    sizes = {
        part.name: {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(part.iterdir())}
        for part in (part1, part2)
    }
    wheels = {n: s for part in sizes.values() for n, s in part.items() if n.endswith(".whl")}
    report = {
        "wheels": pins,
        "compiled": sorted(COMPILED),
        "pure_python_wheels_mib": round(
            sum(
                s
                for n, s in wheels.items()
                if not any(n.startswith(c.replace("-", "_")) for c in COMPILED)
            ),
            2,
        ),
        "all_wheels_mib": round(sum(wheels.values()), 2),
        "parts_mib": {name: round(sum(files.values()), 2) for name, files in sizes.items()},
        "files": sizes,
        "limit_mib": CARRY_LIMIT_MIB,
    }
    print(json.dumps(report, indent=2))
    return report


def install(folder: Path) -> Path:
    """On the device machine: the carried wheels into FOLDER/site, `weed` into FOLDER/bin."""
    site, bin_dir = folder / "site", folder / "bin"
    wheels = sorted(folder.glob("part*/*.whl"))
    if wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--upgrade",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            check=True,
        )
    for packed in folder.glob("part*/weed.xz"):
        bin_dir.mkdir(parents=True, exist_ok=True)
        with lzma.open(packed) as source, open(bin_dir / "weed", "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        (bin_dir / "weed").chmod(0o755)
    print(f"gpu_check: installed into {folder}: PYTHONPATH={site}, weed in {bin_dir}")
    return site


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return _child(Path(sys.argv[2]), Path(sys.argv[3]), "--allow-cpu" in sys.argv[4:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
