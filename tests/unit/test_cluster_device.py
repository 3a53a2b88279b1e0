"""compare_models.device: CPUs from the cgroup quota, the GPU requirement, the CUDA build check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compare_models import device
from compare_models.config import Settings
from compare_models.device import (
    NoGPUError,
    available_cpus,
    cgroup_cpu_limit,
    check_gpu_requirement,
    cuda_build_problems,
)

HOST = min(
    os.cpu_count() or 1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 10**6
)


def _cgroup(
    tmp_path: Path, files: dict[str, str], self_cgroup: str = "0::/\n"
) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(parents=True, exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(self_cgroup)
    return root, proc


# ── CPUs ───────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "cpu_max, expected",
    [
        ("max 100000\n", None),  # no quota
        ("200000 100000\n", 2.0),  # --cpus 2
        ("150000 100000\n", 1.5),  # 1500m
        ("50000 100000\n", 0.5),
        ("100000\n", 1.0),  # period omitted: the default 100000
    ],
)
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, expected) -> None:
    root, proc = _cgroup(tmp_path, {"cpu.max": cpu_max})
    assert cgroup_cpu_limit(root, proc) == expected


def test_cgroup_v1_cfs_quota(tmp_path) -> None:
    root, proc = _cgroup(
        tmp_path,
        {"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"},
        self_cgroup="1:cpu,cpuacct:/\n",
    )
    assert cgroup_cpu_limit(root, proc) == 3.0
    root, proc = _cgroup(
        tmp_path / "unlimited", {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}
    )
    assert cgroup_cpu_limit(root, proc) is None


def test_a_parent_cgroup_quota_applies_to_the_process(tmp_path) -> None:
    """Outside a cgroup namespace the quota sits on the process's cgroup (or a parent), not at the root."""
    root, proc = _cgroup(
        tmp_path,
        {"kubepods/pod1/cpu.max": "400000 100000\n", "kubepods/pod1/ctr/cpu.max": "max 100000\n"},
        self_cgroup="0::/kubepods/pod1/ctr\n",
    )
    assert cgroup_cpu_limit(root, proc) == 4.0


def test_available_cpus_is_the_smallest_of_host_affinity_and_quota(tmp_path) -> None:
    root, proc = _cgroup(tmp_path, {"cpu.max": "150000 100000\n"})
    assert available_cpus(root, proc) == min(HOST, 2)  # ceil(1.5)
    root, proc = _cgroup(tmp_path / "none", {})
    assert available_cpus(root, proc) == HOST  # no cgroup files: the host's cores / affinity
    root, proc = _cgroup(tmp_path / "huge", {"cpu.max": f"{1000 * 100000} 100000\n"})
    assert available_cpus(root, proc) == HOST  # a quota above the cores does not add any


def test_available_cpus_is_at_least_one(tmp_path) -> None:
    root, proc = _cgroup(tmp_path, {"cpu.max": "1000 100000\n"})  # 0.01 CPU
    assert available_cpus(root, proc) == 1


def test_garbage_in_cgroup_files_is_ignored(tmp_path) -> None:
    root, proc = _cgroup(tmp_path, {"cpu.max": "lots 100000\n", "cpu.cfs_quota_us": "x\n"})
    assert cgroup_cpu_limit(root, proc) is None


def test_default_threads_follow_the_quota(tmp_path, monkeypatch) -> None:
    """training.default_threads divides the quota-limited CPUs between the worker's slots."""
    pytest.importorskip("tensorflow")
    from compare_models.training import fit as training

    monkeypatch.setattr(training, "available_cpus", lambda: 4)
    monkeypatch.setenv("COMPARE_MODELS_WORKER_SLOTS", "2")
    assert training.default_threads() == 2
    monkeypatch.setenv("COMPARE_MODELS_WORKER_SLOTS", "8")
    assert training.default_threads() == 1


# ── GPU requirement ────────────────────────────────────────────────────────────


def test_no_gpu_on_the_gpu_pool_fails_with_the_reason() -> None:
    with pytest.raises(
        NoGPUError,
        match="TensorFlow sees no GPU.*given no GPU.*COMPARE_MODELS_ALLOW_CPU_TRAINING=1",
    ):
        check_gpu_requirement([], required=True, allowed_cpu=False)
    with pytest.raises(NoGPUError, match="/dev/nvidia0 but TensorFlow cannot use them"):
        check_gpu_requirement([], required=True, allowed_cpu=False, device_nodes=["/dev/nvidia0"])


@pytest.mark.parametrize(
    "gpus, required, allowed_cpu",
    [
        (["/physical_device:GPU:0"], True, False),  # a GPU: fine
        ([], True, True),  # no GPU, CPU allowed (local workers)
        ([], False, False),  # not on the GPU pool (local trainer, cpu pool)
    ],
)
def test_gpu_requirement_passes(gpus, required, allowed_cpu) -> None:
    check_gpu_requirement(gpus, required=required, allowed_cpu=allowed_cpu)


def test_env_flag() -> None:
    assert device.env_flag("X", {"X": "1"}) and device.env_flag("X", {"X": "True"})
    assert not device.env_flag("X", {"X": "0"}) and not device.env_flag("X", {})


def test_configure_device_refuses_cpu_on_the_gpu_pool_and_records_the_device(monkeypatch) -> None:
    """On this GPU-less machine: COMPARE_MODELS_REQUIRE_GPU=1 fails, the allowance lets it train
    on the CPU, and the returned device dict (stored in results and manifests) says "cpu"."""
    tf = pytest.importorskip("tensorflow")
    from compare_models.training import fit as training

    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    # Thread pools can be set once per process, and other tests may have started TensorFlow already.
    monkeypatch.setattr(tf.config.threading, "set_intra_op_parallelism_threads", lambda n: None)
    monkeypatch.setattr(tf.config.threading, "set_inter_op_parallelism_threads", lambda n: None)
    monkeypatch.setenv("COMPARE_MODELS_REQUIRE_GPU", "1")
    monkeypatch.setenv("COMPARE_MODELS_ALLOW_CPU_TRAINING", "0")
    with pytest.raises(NoGPUError):
        training.configure_device(1, allow_cpu=Settings().allow_gpu_less_training)
    monkeypatch.setenv("COMPARE_MODELS_ALLOW_CPU_TRAINING", "1")
    info = training.configure_device(1, allow_cpu=Settings().allow_gpu_less_training)
    assert (
        info["backend"] == "tensorflow"
        and info["device"] == "cpu"
        and info["gpus"] == []
        and info["gpu_names"] == []
        and info["precision"] == "float32"
    )
    monkeypatch.delenv("COMPARE_MODELS_REQUIRE_GPU")
    monkeypatch.setenv("COMPARE_MODELS_ALLOW_CPU_TRAINING", "0")
    assert training.configure_device(1)["device"] == "cpu"  # not on the GPU pool: CPU is fine


def test_gpu_names_come_from_tensorflow_device_details() -> None:
    class Details:
        @staticmethod
        def get_device_details(gpu):
            if gpu.name.endswith("1"):
                raise RuntimeError("no details")
            return {"device_name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)}

    class TF:
        class config:
            experimental = Details

    class Gpu:
        def __init__(self, name):
            self.name = name

    gpus = [Gpu("/physical_device:GPU:0"), Gpu("/physical_device:GPU:1")]
    assert device.describe_gpus(TF, gpus) == ["NVIDIA H100 80GB HBM3", "/physical_device:GPU:1"]


# ── the image's CUDA build check ───────────────────────────────────────────────


def test_cuda_build_problems() -> None:
    build = {"cuda_version": "12.5.1", "cudnn_version": "9"}
    assert cuda_build_problems(build, True, {"cudnn": "9", "cuda": "12"}) == []
    assert "without CUDA" in cuda_build_problems(build, False, {"cudnn": "9", "cuda": "12"})[0]
    [mismatch] = cuda_build_problems(build, True, {"cudnn": "8", "cuda": "12"})
    assert "built for cuDNN 9 but cuDNN 8 is installed" in mismatch
    [missing] = cuda_build_problems(build, True, {"cudnn": "9", "cuda": None})
    assert "no CUDA wheel" in missing


def test_smoke_check_fails_without_a_gpu(capsys) -> None:
    """`python -m compare_models.device --require-gpu` (the documented `docker run --gpus` smoke
    test) exits 1 on a machine without a GPU, and 0 without the flag."""
    pytest.importorskip("tensorflow")
    if device.gpu_device_nodes():
        pytest.skip("this machine has a GPU")
    assert device.main(["--require-gpu"]) == 1
    assert "TensorFlow sees no GPU" in capsys.readouterr().err
    assert device.main([]) == 0
