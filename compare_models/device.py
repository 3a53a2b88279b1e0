"""Which device a training may use, and how many CPUs it really has. No TensorFlow or JAX import here.

* `available_cpus()`: the CPUs this process may use: the smallest of the host's cores, the
  process's CPU affinity and the cgroup CPU quota (a container's `--cpus` / a Kubernetes CPU
  limit). TensorFlow sizes its thread pools from the host's core count, so a pod limited to
  4 CPUs on a 128-core node would otherwise start 128 threads and be throttled.
* `check_gpu_requirement()`: a training on the GPU pool (COMPARE_MODELS_REQUIRE_GPU=1, set by
  the `train-model/gpu` deployment in prefect.yaml) that sees no GPU fails with the reason,
  instead of training for hours on the CPU; COMPARE_MODELS_ALLOW_CPU_TRAINING=1 allows it
  (the local `compare-models up --workers` GPU worker on a laptop).
* ``python -m compare_models.device``: the GPU image's build check and the users' smoke test
  (see infra/docker/README.md); it reports TensorFlow's and JAX's devices (each where
  installed) and checks the backend trainings use (KERAS_BACKEND):

      python -m compare_models.device --expect-cuda     # build: the backend has CUDA (TF built with
                                                        #   CUDA and the wheels match, or JAX's CUDA
                                                        #   plugin); a GPU present must be usable
      python -m compare_models.device --require-gpu     # smoke: exit 1 unless it computes on a GPU
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

#: Set (to 1) in the GPU pool's deployment: a training there must find a GPU.
REQUIRE_GPU_ENV = "COMPARE_MODELS_REQUIRE_GPU"
#: Settings.allow_gpu_less_training's variable: lets a GPU-pool training use the CPU.
ALLOW_CPU_ENV = "COMPARE_MODELS_ALLOW_CPU_TRAINING"
CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")
_TRUE = {"1", "true", "yes", "on"}


#: The Keras backends a training process may compute with (chosen by KERAS_BACKEND).
Backend = Literal["tensorflow", "jax"]
BACKEND_ENV = "KERAS_BACKEND"  # Keras' own variable
SUPPORTED_BACKENDS: tuple[Backend, ...] = ("tensorflow", "jax")
DEFAULT_BACKEND: Backend = "tensorflow"


class BackendError(ValueError):
    """The process was asked for a backend it cannot use."""


def selected_backend(environ: dict[str, str] | None = None) -> Backend:
    """The backend named by KERAS_BACKEND (default tensorflow); anything else is refused."""
    value = (environ if environ is not None else os.environ).get(BACKEND_ENV, "").strip().lower()
    if not value:
        return DEFAULT_BACKEND
    if value not in SUPPORTED_BACKENDS:
        raise BackendError(
            f"{BACKEND_ENV}={value!r} is not a backend compare-models trains with: set it to one "
            f"of {', '.join(SUPPORTED_BACKENDS)} (or unset it for {DEFAULT_BACKEND}) in the worker's environment "
            "(the train-model deployment's job variables `env`)"
        )
    return value  # type: ignore[return-value]


#: TensorFlow's own switch for oneDNN's CPU kernels, read once when TensorFlow starts.
ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
#: The CPU features (as /proc/cpuinfo names them) for which TensorFlow turns oneDNN's kernels on
#: by default on Linux (`DefaultOneDnnPolicy` in tensorflow/core/util/util.cc). Without them
#: TensorFlow computes a convolution with Eigen's kernels, several times slower.
ONEDNN_DEFAULT_FEATURES = frozenset(
    {"avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}
)
CPUINFO = Path("/proc/cpuinfo")


def cpu_features(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (the first `flags` line of /proc/cpuinfo; empty elsewhere)."""
    for line in (_read(cpuinfo) or "").splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def tensorflow_uses_onednn(
    environ: dict[str, str] | None = None, features: frozenset[str] | None = None
) -> bool:
    """Whether TensorFlow would compute with oneDNN's kernels in a process started with this
    environment on this CPU, decided as TensorFlow decides it: TF_ENABLE_ONEDNN_OPTS when it is
    0/1/true/false, else whether the CPU has one of `ONEDNN_DEFAULT_FEATURES`."""
    value = (environ if environ is not None else os.environ).get(ONEDNN_ENV, "").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    return bool((features if features is not None else cpu_features()) & ONEDNN_DEFAULT_FEATURES)


def training_backend(cpu_backend: str, environ: dict[str, str] | None = None) -> Backend:
    """The backend a training process gets: KERAS_BACKEND when set; otherwise, on a machine
    with a GPU device (/dev/nvidiaN), the default (TensorFlow); on one without, TensorFlow where
    it computes with oneDNN's kernels (`tensorflow_uses_onednn`: it trained both models fastest
    there), else the model's `cpu_backend` (the one that trained it faster on such a CPU), if
    it is installed."""
    env = environ if environ is not None else os.environ
    if env.get(BACKEND_ENV, "").strip():
        return selected_backend(env)
    if gpu_device_nodes() or cpu_backend == DEFAULT_BACKEND or tensorflow_uses_onednn(env):
        return DEFAULT_BACKEND
    import importlib.util

    if importlib.util.find_spec(cpu_backend) is None:
        return DEFAULT_BACKEND
    return selected_backend({BACKEND_ENV: cpu_backend})


class NoGPUError(RuntimeError):
    """A training that must run on a GPU sees none."""


# ── CPUs ───────────────────────────────────────────────────────────────────────


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_cgroup_dirs(cgroup_root: Path, self_cgroup: Path, controller: str | None) -> list[Path]:
    """The process's own cgroup folder and its ancestors under `cgroup_root` (a quota set on
    a parent applies to its children). `controller` None means the cgroup v2 line `0::/...`."""
    text = _read(self_cgroup) or ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if (controller is None and hierarchy == "0" and controllers == "") or (
            controller is not None and controller in controllers.split(",")
        ):
            parts = [p for p in path.split("/") if p]
            return [cgroup_root.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return []


def _v2_limit(folder: Path) -> float | None:
    text = _read(folder / "cpu.max")  # "max 100000" or "<quota> <period>" (microseconds)
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max":
        return None
    try:
        q, p = int(quota), int(period or 100000)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _v1_limit(folder: Path) -> float | None:
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        q, p = int(quota or -1), int(period or 0)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None  # -1: no quota


def cgroup_cpu_limit(
    cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP
) -> float | None:
    """The CPU quota in CPUs (e.g. 1.5) from cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us` /
    `cpu.cfs_period_us`; None without one. Looks at `cgroup_root` itself (a container's
    namespaced view), at the v1 `cpu` / `cpu,cpuacct` hierarchies below it, and at the
    process's own cgroup (from /proc/self/cgroup) and its ancestors; the smallest wins."""
    limits: list[float] = []
    v2_dirs = [cgroup_root, *_own_cgroup_dirs(cgroup_root, self_cgroup, None)]
    limits += [v for d in v2_dirs if (v := _v2_limit(d)) is not None]
    v1_dirs = [cgroup_root]
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        hierarchy = cgroup_root / name
        v1_dirs += [hierarchy, *_own_cgroup_dirs(hierarchy, self_cgroup, "cpu")]
    limits += [v for d in v1_dirs if (v := _v1_limit(d)) is not None]
    return min(limits) if limits else None


def available_cpus(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> int:
    """min(host cores, CPUs in this process's affinity mask, ceil(cgroup CPU quota)), at least 1."""
    counts = [os.cpu_count() or 1]
    if hasattr(os, "sched_getaffinity"):
        counts.append(len(os.sched_getaffinity(0)))
    if (limit := cgroup_cpu_limit(cgroup_root, self_cgroup)) is not None:
        counts.append(math.ceil(limit))
    return max(1, min(counts))


# ── GPUs ───────────────────────────────────────────────────────────────────────


def env_flag(name: str, environ: dict[str, str] | None = None) -> bool:
    return (environ if environ is not None else os.environ).get(name, "").strip().lower() in _TRUE


def gpu_device_nodes() -> list[str]:
    """The NVIDIA GPU device files this container was given (`--gpus`, the device plugin)."""
    return sorted(glob.glob("/dev/nvidia[0-9]*"))


def jax_gpus(devices: Sequence[Any] | None = None) -> list[Any]:
    """The GPUs among JAX's devices (default: `jax.devices()`; none where JAX has no GPU plugin)."""
    if devices is None:
        import jax

        try:
            devices = jax.devices()
        except RuntimeError:  # no GPU plugin / no device: the CPU backend only
            return []
    return [d for d in devices if d.platform in ("gpu", "cuda", "rocm")]


def check_gpu_requirement(
    gpus: Sequence[Any],
    *,
    required: bool,
    allowed_cpu: bool,
    device_nodes: Sequence[str] = (),
    backend: str = "TensorFlow",
) -> None:
    """Raise NoGPUError when a training that must use a GPU sees none and CPU training is
    not allowed. `gpus` are the GPUs the `backend` (TensorFlow or JAX) lists; `device_nodes`
    (optional) the /dev/nvidiaN files present, which tells "no GPU given" from "GPU given,
    the backend cannot use it"."""
    if gpus or not required or allowed_cpu:
        return
    if device_nodes:
        libraries = (
            "its CUDA plugin (the `gpu-jax` extra: jax[cuda12]) did not load"
            if backend == "JAX"
            else "its CUDA/cuDNN libraries did not load"
        )
        why = (
            f"the container has GPU device(s) {', '.join(device_nodes)} but {backend} cannot use "
            f"them: {libraries} (see the {backend} messages above; check the image with "
            "`python -m compare_models.device --require-gpu`, infra/docker/README.md)"
        )
    else:
        why = (
            "the container was given no GPU: run it with `--gpus` / a Compose device reservation, or on "
            "Kubernetes request `nvidia.com/gpu` (the gpu work pool's `gpu_count`) on a node with the NVIDIA "
            "device plugin"
        )
    raise NoGPUError(
        f"this training runs on the GPU pool ({REQUIRE_GPU_ENV}=1) but {backend} sees no GPU: {why}. "
        f"Not training on the CPU instead; set {ALLOW_CPU_ENV}=1 on the worker to allow that."
    )


def describe_gpus(tf: Any, gpus: Sequence[Any]) -> list[str]:
    """Human-readable GPU names (e.g. 'NVIDIA H100 80GB HBM3'), from TensorFlow's device details."""
    names = []
    for gpu in gpus:
        try:
            details = tf.config.experimental.get_device_details(gpu) or {}
        except Exception:  # noqa: BLE001 - a name is nice to have, never worth failing a training
            details = {}
        names.append(str(details.get("device_name") or getattr(gpu, "name", gpu)))
    return names


# ── image check / smoke test ───────────────────────────────────────────────────


def _wheel_major(*distributions: str) -> str | None:
    from importlib import metadata

    for dist in distributions:
        try:
            return metadata.version(dist).split(".")[0]
        except metadata.PackageNotFoundError:
            continue
    return None


def cuda_build_problems(
    build_info: dict[str, Any], built_with_cuda: bool, wheel_majors: dict[str, str | None]
) -> list[str]:
    """Why this TensorFlow cannot use a GPU whatever the host has (empty: none found).

    `build_info` is tf.sysconfig.get_build_info(); `wheel_majors` the major versions of the
    installed NVIDIA wheels ({"cudnn": "9", "cuda": "12"}), None where not installed."""
    if not built_with_cuda:
        return [
            "this TensorFlow was built without CUDA (install the project's `gpu` extra: tensorflow[and-cuda])"
        ]
    problems = []
    for key, label in (("cudnn", "cuDNN"), ("cuda", "CUDA")):
        wanted = str(build_info.get(f"{key}_version") or "").split(".")[0]
        have = wheel_majors.get(key)
        if wanted and have is None:
            problems.append(
                f"TensorFlow was built for {label} {wanted} but no {label} wheel is installed"
            )
        elif wanted and have != wanted:
            problems.append(
                f"TensorFlow was built for {label} {wanted} but {label} {have} is installed"
            )
    return problems


def _tensorflow_report(expect_cuda: bool) -> tuple[dict[str, Any], list[str], bool]:
    """TensorFlow's build, its GPUs and a convolution on the first; (report, problems, GPU used)."""
    import tensorflow as tf

    build = dict(tf.sysconfig.get_build_info())
    gpus = tf.config.list_physical_devices("GPU")
    report: dict[str, Any] = {
        "version": tf.__version__,
        "built_with_cuda": tf.test.is_built_with_cuda(),
        "cuda_version": build.get("cuda_version"),
        "cudnn_version": build.get("cudnn_version"),
        "gpus": describe_gpus(tf, gpus),
    }
    problems: list[str] = []
    if expect_cuda:
        majors = {
            "cudnn": _wheel_major("nvidia-cudnn-cu12", "nvidia-cudnn-cu13"),
            "cuda": _wheel_major(
                "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime"
            ),
        }
        report["wheels"] = majors
        problems += cuda_build_problems(build, report["built_with_cuda"], majors)
    if gpus:
        # A convolution (cuDNN) and a matrix product (cuBLAS) on the first GPU.
        with tf.device("/GPU:0"):
            x = tf.random.normal((8, 32, 32, 3))
            y = tf.nn.conv2d(x, tf.random.normal((3, 3, 3, 16)), strides=1, padding="SAME")
            z = tf.linalg.matmul(tf.reshape(y, (8, -1)), tf.random.normal((32 * 32 * 16, 10)))
        report["gpu_compute"] = f"ok ({z.device})"
    return report, problems, bool(gpus)


def _jax_report(expect_cuda: bool) -> tuple[dict[str, Any], list[str], bool]:
    """JAX's version, its devices and a convolution on the first GPU; (report, problems, GPU used)."""
    import jax
    import jax.numpy as jnp

    devices = jax.devices()
    gpus = jax_gpus(devices)
    report: dict[str, Any] = {
        "version": jax.__version__,
        "default_backend": jax.default_backend(),
        "devices": [
            f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in devices
        ],
        "gpus": [str(getattr(d, "device_kind", d)) for d in gpus],
        "cuda_plugin": _wheel_major("jax-cuda12-plugin", "jax-cuda13-plugin"),
    }
    problems: list[str] = []
    if expect_cuda and report["cuda_plugin"] is None:
        problems.append(
            "JAX has no CUDA plugin installed (install the project's `gpu-jax` extra: jax[cuda12])"
        )
    if gpus:
        x = jax.device_put(jnp.ones((8, 32, 32, 3)), gpus[0])
        kernel = jax.device_put(jnp.ones((3, 3, 3, 16)), gpus[0])
        y = jax.lax.conv_general_dilated(
            x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        z = (y.reshape(8, -1) @ jnp.ones((32 * 32 * 16, 10))).block_until_ready()
        report["gpu_compute"] = f"ok ({next(iter(z.devices()))})"
    return report, problems, bool(gpus)


FRAMEWORKS = {"tensorflow": _tensorflow_report, "jax": _jax_report}


def run_check(require_gpu: bool, expect_cuda: bool) -> dict[str, Any]:
    """Reports what TensorFlow and JAX (each where installed) can use; the GPU requirements
    (`require_gpu`, `expect_cuda`) are checked for the backend trainings use here
    (KERAS_BACKEND). Problems are listed in the report's "problems"."""
    import importlib.util

    backend = selected_backend()
    nodes = gpu_device_nodes()
    report: dict[str, Any] = {
        "backend": backend,
        "gpu_device_nodes": nodes,
        "cpus": available_cpus(),
    }
    problems: list[str] = []
    for name, check in FRAMEWORKS.items():
        if importlib.util.find_spec(name) is None:
            report[name] = None
            if name == backend:
                problems.append(
                    f"KERAS_BACKEND is {backend} but {name} is not installed (the `gpu` extra "
                    "brings TensorFlow with CUDA, `gpu-jax` JAX with CUDA)"
                )
            continue
        found, found_problems, used_gpu = check(expect_cuda and name == backend)
        report[name] = found
        if name != backend:
            continue
        problems += found_problems
        label = "TensorFlow" if name == "tensorflow" else "JAX"
        if used_gpu:
            report["gpu_compute"] = found["gpu_compute"]
        elif nodes and (expect_cuda or require_gpu):
            problems.append(
                f"GPU device(s) {', '.join(nodes)} are present but {label} lists no GPU: "
                "its CUDA libraries did not load (see the messages above)"
            )
        elif require_gpu:
            problems.append(
                f"{label} sees no GPU and the container has no /dev/nvidiaN device: run it with "
                "`--gpus all` (NVIDIA Container Toolkit) or request nvidia.com/gpu on Kubernetes"
            )
    report["problems"] = problems
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m compare_models.device", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--require-gpu",
        action="store_true",
        help="fail unless the training backend (KERAS_BACKEND: TensorFlow or JAX) computes on a GPU",
    )
    parser.add_argument(
        "--expect-cuda",
        action="store_true",
        help="fail unless the training backend has CUDA: TensorFlow built with CUDA and matching "
        "NVIDIA wheels, or JAX with its CUDA plugin",
    )
    args = parser.parse_args(argv)
    report = run_check(require_gpu=args.require_gpu, expect_cuda=args.expect_cuda)
    print(json.dumps(report, indent=2, default=str))
    for problem in report["problems"]:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if report["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
