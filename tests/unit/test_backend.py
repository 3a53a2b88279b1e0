"""The backend choice, the training runtime's settings and the backend-neutral input pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from compare_models import device
from compare_models.config import TrainingRuntime, TrainParams
from compare_models.training import backend


def test_the_backend_comes_from_keras_own_variable() -> None:
    assert device.selected_backend({}) == "tensorflow"
    assert device.selected_backend({"KERAS_BACKEND": " JAX "}) == "jax"
    with pytest.raises(device.BackendError, match="KERAS_BACKEND='torch'.*tensorflow, jax"):
        device.selected_backend({"KERAS_BACKEND": "torch"})


def test_jax_on_a_shared_gpu_grows_its_memory_instead_of_taking_three_quarters() -> None:
    env = {"KERAS_BACKEND": "jax", "COMPARE_MODELS_WORKER_SLOTS": "2"}
    backend.prepare_environment(env)
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    kept = {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    backend.prepare_environment(kept)  # what the user set stays
    assert kept["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    alone = {"KERAS_BACKEND": "jax"}
    backend.prepare_environment(alone)  # one training per GPU: JAX's own preallocation
    assert "XLA_PYTHON_CLIENT_PREALLOCATE" not in alone
    tensorflow = {"COMPARE_MODELS_WORKER_SLOTS": "2"}
    backend.prepare_environment(tensorflow)
    assert tensorflow == {"COMPARE_MODELS_WORKER_SLOTS": "2"}


def test_training_runtime_is_typed(monkeypatch) -> None:
    runtime = TrainingRuntime()
    assert (runtime.precision, runtime.jit, runtime.steps_per_execution) == (None, "auto", 1)
    monkeypatch.setenv("COMPARE_MODELS_JIT_COMPILE", "false")
    monkeypatch.setenv("COMPARE_MODELS_STEPS_PER_EXECUTION", "8")
    monkeypatch.setenv("COMPARE_MODELS_PRECISION", "mixed_bfloat16")
    runtime = TrainingRuntime()
    assert (runtime.precision, runtime.jit, runtime.steps_per_execution) == (
        "mixed_bfloat16",
        False,
        8,
    )
    assert backend.precision_policy(True, runtime) == "mixed_bfloat16"
    assert backend.precision_policy(False, TrainingRuntime(COMPARE_MODELS_PRECISION=None)) == (
        "float32"
    )
    monkeypatch.setenv("COMPARE_MODELS_STEPS_PER_EXECUTION", "0")
    with pytest.raises(ValidationError, match="COMPARE_MODELS_STEPS_PER_EXECUTION"):
        TrainingRuntime()
    monkeypatch.setenv("COMPARE_MODELS_STEPS_PER_EXECUTION", "1")
    monkeypatch.setenv("COMPARE_MODELS_PRECISION", "float8")
    with pytest.raises(ValidationError, match="COMPARE_MODELS_PRECISION"):
        TrainingRuntime()


# ── the input pipeline ─────────────────────────────────────────────────────────


def _data(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 4, 4, 3), dtype=np.float32), np.arange(n) % 5


def _batches(x, y, params: TrainParams, first_epoch: int = 0):
    from compare_models.training.batches import ShuffledBatches

    return ShuffledBatches(
        x,
        y,
        batch_size=params.batch_size,
        seed=params.seed,
        augment=params.augment,
        first_epoch=first_epoch,
    )


def _epochs(batches, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    seen = []
    for _ in range(count):
        seen.append([batches[i] for i in range(len(batches))])
        batches.on_epoch_end()
    return seen


def test_batches_cover_every_image_once_an_epoch_in_a_new_order() -> None:
    x, y = _data()
    params = TrainParams(batch_size=16, seed=3, augment="none")
    first, second = _epochs(_batches(x, y, params), 2)
    assert [len(b[1]) for b in first] == [16, 16, 16, 2]
    for epoch in (first, second):
        images = np.concatenate([b[0] for b in epoch])
        labels = np.concatenate([b[1] for b in epoch])
        order = [int(np.flatnonzero((x == image).all(axis=(1, 2, 3)))[0]) for image in images]
        assert sorted(order) == list(range(50)) and (labels == y[order]).all()
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(first, second, strict=True))


def test_a_resumed_training_sees_the_batches_the_uninterrupted_one_saw() -> None:
    """Each batch is a function of (seed, epoch, index): resuming after epoch 2 gives epoch 3's
    batches, flips included; a thread pool preparing them changes nothing."""
    from compare_models.training.batches import ShuffledBatches

    x, y = _data()
    params = TrainParams(batch_size=16, seed=3, augment="flip")
    straight = _epochs(_batches(x, y, params), 4)
    resumed = _epochs(_batches(x, y, params, first_epoch=2), 2)
    for a, b in zip(straight[2:], resumed, strict=True):
        for (xa, ya), (xb, yb) in zip(a, b, strict=True):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    threaded = ShuffledBatches(x, y, batch_size=16, seed=3, augment="flip", workers=4)
    assert all(np.array_equal(threaded[i][0], straight[0][i][0]) for i in range(len(threaded)))
    # Flips happen, only left-right, and a different seed flips differently.
    shown = np.concatenate([b[0] for b in straight[0]])
    as_is = [(x == image).all(axis=(1, 2, 3)).any() for image in shown]
    mirrored = [(x[:, :, ::-1] == image).all(axis=(1, 2, 3)).any() for image in shown]
    assert all(a or m for a, m in zip(as_is, mirrored, strict=True))
    assert 10 < sum(m and not a for a, m in zip(as_is, mirrored, strict=True)) < 40
    other = _epochs(_batches(x, y, TrainParams(batch_size=16, seed=4, augment="flip")), 1)
    assert not np.array_equal(other[0][0][0], straight[0][0][0])


def test_batches_refuse_mismatched_or_empty_arrays() -> None:
    from compare_models.training.batches import ShuffledBatches

    x, y = _data()
    with pytest.raises(ValueError, match="50 images and 49 labels"):
        ShuffledBatches(x, y[:-1], batch_size=8, seed=0)
    batches = ShuffledBatches(x, y, batch_size=8, seed=0)
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_a_replay_on_another_backend_names_the_change() -> None:
    from compare_models.runs.fingerprint import differences

    original = {"trainings": {"cnn": {"backend": "tensorflow", "precision": "float32"}}}
    replay = {
        "trainings": {"cnn": {"backend": "jax", "precision": "float32", "xla_cache_mib": 1024}}
    }  # the compilation cache changes how long, not what: no difference
    assert differences(original, replay) == [
        {"entry": "trainings.cnn.backend", "original": "tensorflow", "replay": "jax"}
    ]


def test_a_training_process_refuses_an_unknown_backend_before_keras_loads() -> None:
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import compare_models.training.fit"],
        env={**os.environ, "KERAS_BACKEND": "torch"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "BackendError: KERAS_BACKEND='torch' is not a backend compare-models trains with" in (
        out.stderr
    )
    assert "import keras" not in out.stderr  # refused before Keras was imported


def test_each_model_trains_on_its_faster_cpu_backend_unless_told(monkeypatch) -> None:
    from compare_models.models import registry

    monkeypatch.setattr(device, "gpu_device_nodes", lambda: [])
    assert registry.get("resnet50").cpu_backend == "jax"
    assert registry.get("cnn").cpu_backend == "tensorflow"
    # a CPU whose TensorFlow runs without oneDNN's kernels: each model's own CPU backend
    no_onednn = {"TF_ENABLE_ONEDNN_OPTS": "0"}
    assert device.training_backend("jax", no_onednn) == "jax"
    assert device.training_backend("tensorflow", no_onednn) == "tensorflow"
    # with them, TensorFlow for every model
    assert device.training_backend("jax", {"TF_ENABLE_ONEDNN_OPTS": "1"}) == "tensorflow"
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"avx2", "fma"}))
    assert device.training_backend("jax", {}) == "jax"
    monkeypatch.setattr(device, "cpu_features", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert device.training_backend("jax", {}) == "tensorflow"
    assert device.training_backend("jax", {"KERAS_BACKEND": "tensorflow"}) == "tensorflow"
    assert device.training_backend("tensorflow", {"KERAS_BACKEND": "jax"}) == "jax"
    with pytest.raises(device.BackendError):
        device.training_backend("jax", {"KERAS_BACKEND": "torch"})
    # A machine with a GPU keeps the default (the GPU stack a worker was built with).
    monkeypatch.setattr(device, "gpu_device_nodes", lambda: ["/dev/nvidia0"])
    assert device.training_backend("jax", {}) == "tensorflow"
    with pytest.raises(ValueError, match="cpu_backend 'torch'"):
        registry.ModelSpec("m", "a:b", cpu_backend="torch")


def test_tensorflow_uses_onednn_as_tensorflow_decides(tmp_path) -> None:
    """TF_ENABLE_ONEDNN_OPTS when it is a boolean TensorFlow reads; otherwise the CPU features
    TensorFlow turns oneDNN on for (DefaultOneDnnPolicy), read from /proc/cpuinfo's flags."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx avx2 fma\n\n"
        "processor\t: 1\nflags\t\t: fpu\n"
    )
    amd = device.cpu_features(cpuinfo)
    assert {"avx2", "fma"} <= amd and "fpu" in amd
    assert device.cpu_features(tmp_path / "absent") == frozenset()
    sapphire = frozenset({"avx512f", "avx512_vnni", "amx_tile"})
    assert not device.tensorflow_uses_onednn({}, amd)
    assert device.tensorflow_uses_onednn({}, sapphire)
    for value, expected in (("1", True), ("TRUE", True), ("0", False), ("false", False)):
        assert device.tensorflow_uses_onednn({"TF_ENABLE_ONEDNN_OPTS": value}, amd) is expected
        assert device.tensorflow_uses_onednn({"TF_ENABLE_ONEDNN_OPTS": value}, sapphire) is (
            expected
        )
    # a value TensorFlow does not read as a boolean leaves its default (it warns)
    assert device.tensorflow_uses_onednn({"TF_ENABLE_ONEDNN_OPTS": "yes"}, sapphire)
    assert not device.tensorflow_uses_onednn({"TF_ENABLE_ONEDNN_OPTS": "yes"}, amd)


_CACHE_SCRIPT = """
import json, sys
from pathlib import Path
import jax, jax.numpy as jnp
from jax import monitoring
from compare_models.config import TrainingRuntime
from compare_models.training.backend import configure_device

events = []
monitoring.register_event_listener(lambda event, **_: events.append(event))
folder, first = Path(sys.argv[1]), sys.argv[2] == "first"
mib = []
if first:  # off; a folder that cannot be made; one others may write: none turns it on
    off = TrainingRuntime(COMPARE_MODELS_XLA_CACHE_MIB=0)
    mib.append(configure_device(1, cache_dir=folder, runtime=off)["xla_cache_mib"])
    (folder / "a-file").write_text("")
    mib.append(configure_device(1, cache_dir=folder / "a-file")["xla_cache_mib"])
    (folder / "open" / "xla").mkdir(parents=True, mode=0o777)
    (folder / "open" / "xla").chmod(0o777)
    mib.append(configure_device(1, cache_dir=folder / "open")["xla_cache_mib"])
    mib.append(jax.config.jax_compilation_cache_dir)
    # halves of entries a killed training left behind
    (folder / "xla").mkdir(mode=0o700)
    (folder / "xla" / "killed-cache").write_bytes(b"part")
    (folder / "xla" / "lost-atime").write_bytes(b"0")
mib.append(configure_device(1, cache_dir=folder)["xla_cache_mib"])
jax.jit(lambda x: jnp.tanh(x) * 3)(jnp.ones(7)).block_until_ready()
print(json.dumps({"mib": mib, "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "files": sorted(p.name for p in (folder / "xla").iterdir())}))
"""


def test_jax_keeps_its_compiled_programs_in_the_cache_folder_and_reuses_them(tmp_path) -> None:
    """Under JAX a training's process keeps what XLA compiles in `<cache_dir>/xla`, and the next
    process loads it instead of compiling; off with COMPARE_MODELS_XLA_CACHE_MIB=0, and off
    (the training goes on) where the folder cannot be made."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "KERAS_BACKEND": "jax"}
    env.pop("COMPARE_MODELS_XLA_CACHE_MIB", None)

    def run(which: str) -> tuple[dict, str]:
        out = subprocess.run(
            [sys.executable, "-c", _CACHE_SCRIPT, str(tmp_path), which],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr

    first, warnings = run("first")
    assert first["mib"] == [0, 0, 0, None, 1024], first
    assert "XLA's compilation cache is off" in warnings and "a-file" in warnings
    assert "others may write to it" in warnings
    assert first["hits"] == 0 and any(name.endswith("-cache") for name in first["files"]), first
    assert not {"killed-cache", "lost-atime"} & set(first["files"]), first
    second, warnings = run("second")
    if "doesn't match the machine type for execution" in warnings:
        pytest.skip(
            "XLA:CPU refuses, on this CPU, the programs it cached on it (jax-ml/jax#38445): "
            "the cache is written but never read here"
        )
    assert second["mib"] == [1024] and second["hits"] >= 1, second
