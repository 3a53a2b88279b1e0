#!/usr/bin/env bash
# GPU check, on a machine with an NVIDIA GPU (never in CI: it refuses, exit 2, without one).
#
# The deployment path of benchmarks/speed/gpu_check/ (which runs it where Prefect is installed).
# Installs the project with the CUDA wheels (.[gpu,test], or .[gpu-jax,test] with
# BACKEND=jax: Keras' JAX backend, deployed with COMPARE_MODELS_TRAINING_BACKEND=jax) into a
# virtual environment, starts
# the local stack with its workers, deploys prefect.yaml and runs the seed protocol through
# the deployments (compare-models/nightly -> train-model/gpu on the gpu pool) twice on equal
# work: once with the default precision policy (mixed_float16 on a GPU), once with the gpu
# worker restarted under COMPARE_MODELS_PRECISION=float32. Prints, per model, training
# images/s, the precision policy and device each pass recorded, the mixed-precision speed-up
# against float32, and the peak GPU memory (nvidia-smi, sampled every second) of each pass;
# the summary is one JSON line, also written to benchmarks/results/gpu_check.json.
#
#   bash benchmarks/speed/gpu_check.sh
#   DATA=../shared/data/cifar10-jpeg.tar.gz RESNET_WEIGHTS=none EPOCHS=2 bash benchmarks/speed/gpu_check.sh
#
# DATA (default cifar10, the official download), RESNET_WEIGHTS (default imagenet) and
# EPOCHS (default 2, both passes; 10 is the full seed protocol) go to `compare-models params`.
# BACKEND (tensorflow or jax, default tensorflow) the trainings' Keras backend.
# VENV (default .venv) and PYTHON (default python3) choose the environment. The local
# services stay up afterwards (`compare-models down` stops them); the gpu worker is put back
# on the default precision policy.
set -euo pipefail

refuse() {
    echo "gpu_check: $*" >&2
    echo "gpu_check: this check needs an NVIDIA GPU; nothing was run (exit 2)." >&2
    exit 2
}

command -v nvidia-smi >/dev/null 2>&1 || refuse "nvidia-smi is not installed (no NVIDIA driver on this machine)"
gpu_list=$(nvidia-smi -L 2>/dev/null) || refuse "nvidia-smi found no usable GPU (driver not loaded, or no device)"
grep -q '^GPU [0-9]' <<<"$gpu_list" || refuse "nvidia-smi lists no GPU"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
DATA=${DATA:-cifar10}
RESNET_WEIGHTS=${RESNET_WEIGHTS:-imagenet}
EPOCHS=${EPOCHS:-2}
BACKEND=${BACKEND:-tensorflow}
case "$BACKEND" in
    tensorflow) EXTRA=gpu ;;
    jax) EXTRA=gpu-jax ;;
    *) echo "gpu_check: BACKEND=$BACKEND: use tensorflow or jax" >&2; exit 2 ;;
esac
export COMPARE_MODELS_TRAINING_BACKEND=$BACKEND
RESULTS=benchmarks/results
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
WORK=$(mktemp -d)
export PREFECT_SERVER_ANALYTICS_ENABLED=false TF_CPP_MIN_LOG_LEVEL=2

echo "gpu_check: GPUs:"
while IFS= read -r line; do echo "  $line"; done <<<"$gpu_list"

# ── install ─────────────────────────────────────────────────────────────────
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet -e ".[$EXTRA,test]"
BIN="$VENV/bin"
# The backend must compute on the GPU (exit 1 with the reason otherwise).
KERAS_BACKEND=$BACKEND "$BIN/python" -m compare_models.device --require-gpu --expect-cuda

# ── services, deployments ───────────────────────────────────────────────────
"$BIN/compare-models" up --workers
"$BIN/compare-models" deploy
PREFECT_API_URL=${PREFECT_API_URL:-$("$BIN/python" -c 'from compare_models.config import Settings; print(Settings().prefect_api_url or "")')}
[[ -n "$PREFECT_API_URL" ]] || { echo "gpu_check: no PREFECT_API_URL (environment or .env)" >&2; exit 1; }
export PREFECT_API_URL

# restart_gpu_worker ENV-ARGS...: restart the gpu pool worker (its flow runs inherit its environment)
# with `env ENV-ARGS...`, e.g. COMPARE_MODELS_PRECISION=float32, or -u COMPARE_MODELS_PRECISION
restart_gpu_worker() {
    "$BIN/python" -c 'from compare_models.local.services import WORKERS, down
down(only=tuple(w for w in WORKERS if w.name == "worker-gpu"))' >/dev/null
    env "$@" "$BIN/compare-models" up --workers >/dev/null
}

sampler=""
float32_worker=""
cleanup() {
    if [[ -n "$sampler" ]]; then kill "$sampler" 2>/dev/null || true; fi
    if [[ -n "$float32_worker" ]]; then restart_gpu_worker -u COMPARE_MODELS_PRECISION || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
# pass 1 runs on the default policy, whatever the worker was started with before
restart_gpu_worker -u COMPARE_MODELS_PRECISION

# one_pass NAME: a deployment run of the seed protocol; peak GPU memory sampled meanwhile
one_pass() {
    local name=$1 run_id="gpu-check-$STAMP-$1" params
    params=$("$BIN/compare-models" params --preset seed --data "$DATA" --resnet-weights "$RESNET_WEIGHTS" \
        --trainer deployment --epochs "$EPOCHS" --run-id "$run_id")
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -l 1 >"$WORK/$name.memory" 2>/dev/null &
    sampler=$!
    local start=$SECONDS
    "$BIN/prefect" deployment run 'compare-models/nightly' --params "$params" --watch --watch-timeout 14400
    echo "$((SECONDS - start))" >"$WORK/$name.seconds"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    sampler=""
    "$BIN/compare-models" show "$run_id" --json >"$WORK/$name.json"
}

echo "gpu_check: pass 1/2, default precision policy ($EPOCHS epochs)"
one_pass mixed
echo "gpu_check: pass 2/2, float32 (gpu worker restarted with COMPARE_MODELS_PRECISION=float32)"
float32_worker=1
restart_gpu_worker COMPARE_MODELS_PRECISION=float32
one_pass float32

# ── summary ─────────────────────────────────────────────────────────────────
mkdir -p "$RESULTS"
"$BIN/python" - "$WORK" "$RESULTS/gpu_check.json" "$EPOCHS" "$DATA" "$RESNET_WEIGHTS" "$gpu_list" <<'EOF'
import json
import sys
from pathlib import Path

work, out, epochs, data, weights, gpu_list = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]


def peak(name):
    values = [int(v) for v in (work / f"{name}.memory").read_text().split() if v.strip().isdigit()]
    return max(values) if values else None


passes, problems = {}, []
for name in ("mixed", "float32"):
    manifest = json.loads((work / f"{name}.json").read_text())
    models = {}
    for model, info in manifest["models"].items():
        device = info.get("device") or {}
        models[model] = {"train_images_per_second": round(info["train_images_per_second"], 1),
                         "fit_seconds": round(info["fit_seconds"], 1), "precision": device.get("precision"),
                         "device": device.get("device"), "gpu_names": device.get("gpu_names")}
        if device.get("device") != "gpu":
            problems.append(f"{name} pass: {model} trained on {device.get('device')!r}, not on the GPU")
    passes[name] = {"run_id": manifest["run_id"], "wall_seconds": int((work / f"{name}.seconds").read_text()),
                    "peak_gpu_memory_mib": peak(name), "models": models}

mixed, fp32 = passes["mixed"]["models"], passes["float32"]["models"]
speedup = {m: round(mixed[m]["train_images_per_second"] / fp32[m]["train_images_per_second"], 3)
           for m in mixed if m in fp32 and fp32[m]["train_images_per_second"]}
summary = {
    "benchmark": "gpu_check", "gpus": gpu_list.splitlines(), "data": data, "resnet_weights": weights,
    "epochs_per_pass": epochs, "trainer": "deployment (train-model/gpu, 2 slots on the gpu pool)",
    "precision_policy": {m: v["precision"] for m, v in mixed.items()},
    "images_per_second": {m: v["train_images_per_second"] for m, v in mixed.items()},
    "images_per_second_float32": {m: v["train_images_per_second"] for m, v in fp32.items()},
    "mixed_precision_speedup": speedup,
    "peak_gpu_memory_mib": {name: p["peak_gpu_memory_mib"] for name, p in passes.items()},
    "passes": passes, "problems": problems,
}
for model in mixed:
    print(f"gpu_check: {model:9s} {mixed[model]['train_images_per_second']:>9.1f} images/s ({mixed[model]['precision']}), "
          f"float32 {fp32.get(model, {}).get('train_images_per_second', float('nan')):>9.1f} images/s, "
          f"speed-up {speedup.get(model, float('nan')):.2f}x")
print(f"gpu_check: peak GPU memory {summary['peak_gpu_memory_mib']} MiB")
line = json.dumps(summary, separators=(",", ":"))
out.write_text(line + "\n")
print(line)
sys.exit(1 if problems else 0)
EOF
