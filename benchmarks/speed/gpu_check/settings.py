"""What the GPU check knows before it runs: the repository, the wheels a JAX-only machine lacks, the
GPUs' peaks, the precision policies and the sweeps."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

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
