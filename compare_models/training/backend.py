"""Which Keras backend a training process computes with, and setting it up for this process.

Keras 3 runs the same models on TensorFlow or JAX; the backend is chosen per process by
Keras' own variable, ``KERAS_BACKEND`` (the worker's environment: the train-model
deployments' job variables, `infra/`), before Keras is imported; unset, a training gets
`device.training_backend`'s choice (TensorFlow on a machine with a GPU, else the model's
faster CPU backend). JAX suits GPU workers whose CUDA stack should come with JAX's own wheels
(the `gpu-jax` extra) instead of TensorFlow's.

Whatever the backend, a training writes the same files: `.keras` models and checkpoints,
`predictions.npz`, `history.json`. A model trained under JAX loads under TensorFlow for the
evaluation and the gate's re-scoring.

* `prepare_environment()`: what must be set before the backend starts: the CPUs XLA may use
  and JAX's GPU memory policy.
* `configure_device(...)`: after Keras is imported and before it computes: GPUs, threads,
  memory, precision, JAX's compilation cache; returns what is used (the training's `device`
  record).

Nothing here imports Keras, TensorFlow or JAX at the top: `prepare_environment` runs before
Keras is imported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from compare_models.config import TrainingRuntime
from compare_models.device import (
    REQUIRE_GPU_ENV,
    SUPPORTED_BACKENDS,
    BackendError,
    available_cpus,
    check_gpu_requirement,
    describe_gpus,
    env_flag,
    gpu_device_nodes,
    jax_gpus,
    selected_backend,
)

#: JAX's own switch for grabbing 75% of the GPU's memory when it starts.
JAX_PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"
WORKER_SLOTS_ENV = "COMPARE_MODELS_WORKER_SLOTS"


def precision_policy(gpu: bool, runtime: TrainingRuntime) -> str:
    """The runtime's precision, else mixed_float16 on a GPU and float32 on the CPU (neither
    bfloat16 nor XLA trained faster on the CPU, docs/benchmarks.md)."""
    return runtime.precision or ("mixed_float16" if gpu else "float32")


def prepare_environment(environ: dict[str, str] | None = None) -> None:
    """Settings the backend reads once, when it starts: call before its first computation.

    JAX: its GPU client takes 75% of the GPU's memory at start; a worker that runs several
    trainings on one GPU (COMPARE_MODELS_WORKER_SLOTS > 1) lets each grow as it needs
    instead, as TensorFlow's memory growth does (a value the user set is kept). XLA's CPU
    client sizes its thread pool from the CPUs the process may run on, not from a container's
    CPU quota (jax-ml/jax#27028) and has no option for it, so a quota smaller than the
    affinity mask narrows the mask (`available_cpus`)."""
    env = environ if environ is not None else os.environ
    if selected_backend(env) != "jax":
        return
    slots = max(1, int(env.get(WORKER_SLOTS_ENV, "1") or 1))
    if slots > 1:
        env.setdefault(JAX_PREALLOCATE_ENV, "false")
    if environ is None and hasattr(os, "sched_getaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        quota = available_cpus()
        if quota < len(allowed):
            os.sched_setaffinity(0, allowed[:quota])


#: JAX's bounded cache keeps each compiled program in `<key>-cache` and its last use in
#: `<key>-atime` (jax/_src/lru_cache.py), and guards both with this lock file.
_ENTRY, _USED, _LOCK = "-cache", "-atime", ".lockfile"


def use_compilation_cache(folder: Path, max_mib: int) -> bool:
    """JAX's persistent compilation cache in `folder`, bounded to `max_mib` MiB (least recently
    used entries dropped; `filelock` guards it against the other trainings on the worker).
    Every compiled program is kept, even the quick ones: a tiny model's many small programs
    (its initialisers, its metrics) add up to seconds. JAX reads the folder and the size at the
    process's first compilation after they are set, so this runs before the model is built.

    What is in the folder is code this process will run, so only a folder of this user's that
    nobody else may write is used. A training killed between JAX's two writes leaves an entry
    without its last use, which would make every later eviction fail: such halves are removed
    first. JAX compiles again where an entry does not read back whole. False, and a warning,
    where the folder cannot be made or is not safe to use: the training then compiles as it
    would without the cache."""
    import filelock
    import jax

    log = logging.getLogger(__name__)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        status = folder.stat()
        if status.st_uid != os.getuid() or status.st_mode & 0o022:
            raise PermissionError(
                f"{folder} belongs to another user or others may write to it "
                "(chmod 700 it, or remove it)"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(f"{folder} is not writable")
        with filelock.FileLock(folder / _LOCK, timeout=30):
            entries = {p.name for p in folder.iterdir()}
            for name in entries:
                for suffix, other in ((_ENTRY, _USED), (_USED, _ENTRY)):
                    if name.endswith(suffix) and name.removesuffix(suffix) + other not in entries:
                        (folder / name).unlink(missing_ok=True)
    except (OSError, filelock.Timeout) as exc:
        log.warning(
            "XLA's compilation cache is off: %s (set COMPARE_MODELS_XLA_CACHE_MIB=0 to silence)",
            exc,
        )
        return False
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_compilation_cache_max_size", max_mib << 20)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return True


def configure_device(
    threads: int,
    *,
    require_gpu: bool | None = None,
    allow_cpu: bool = False,
    runtime: TrainingRuntime | None = None,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Thread pools, GPU memory and the precision policy for this process's backend.

    TensorFlow sizes its pools from the host, not from a container's CPU quota, and two
    trainings side by side would each take every core: so its pools get `threads`, and its
    GPUs memory growth. JAX has no thread-count option (see `prepare_environment`); its GPU
    memory follows XLA_PYTHON_CLIENT_PREALLOCATE. Must run after Keras is imported and before
    it computes.

    A training on the GPU pool (`require_gpu`, default: COMPARE_MODELS_REQUIRE_GPU, set by the
    train-model/gpu deployment) that sees no GPU raises `device.NoGPUError` unless CPU training
    is allowed (`allow_cpu`: the caller's `Settings.allow_gpu_less_training`). `runtime`
    (default: read from the environment) gives the precision policy and the size of JAX's
    compilation cache, kept in `cache_dir`/xla (`use_compilation_cache`; none without a
    `cache_dir`). Returns what is used: {"backend", "device": "gpu" | "cpu", "gpus": device
    names, "gpu_names": e.g. ["NVIDIA H100 80GB HBM3"], "threads", "precision",
    "xla_cache_mib": 0 where no cache is used}, stored in the training's result and the run's
    manifest (its fingerprint).
    """
    import keras

    runtime = runtime if runtime is not None else TrainingRuntime()

    backend = keras.backend.backend()
    if backend not in SUPPORTED_BACKENDS:
        raise BackendError(
            f"Keras runs on {backend!r}; compare-models trains with {SUPPORTED_BACKENDS}"
        )
    if require_gpu is None:
        require_gpu = env_flag(REQUIRE_GPU_ENV)
    xla_cache_mib = 0
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        check_gpu_requirement(
            gpus, required=require_gpu, allowed_cpu=allow_cpu, device_nodes=gpu_device_nodes()
        )
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        for gpu in gpus:
            tf.config.experimental.set_memory_growth(gpu, True)
        names, gpu_names = [g.name for g in gpus], describe_gpus(tf, gpus)
    else:
        gpus = jax_gpus()
        check_gpu_requirement(
            gpus,
            required=require_gpu,
            allowed_cpu=allow_cpu,
            device_nodes=gpu_device_nodes(),
            backend="JAX",
        )
        names = [f"{d.platform}:{d.id}" for d in gpus]
        gpu_names = [str(getattr(d, "device_kind", d)) for d in gpus]
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else threads
        if cache_dir is not None and runtime.xla_cache_mib:
            if use_compilation_cache(cache_dir / "xla", runtime.xla_cache_mib):
                xla_cache_mib = runtime.xla_cache_mib
    policy = precision_policy(bool(gpus), runtime)
    keras.mixed_precision.set_global_policy(policy)
    return {
        "backend": backend,
        "device": "gpu" if gpus else "cpu",
        "gpus": names,
        "gpu_names": gpu_names,
        "threads": threads,
        "precision": policy,
        "xla_cache_mib": xla_cache_mib,
    }
