"""The `compare-models` command: local services, runs, and the list of stored runs.

    compare-models up [--workers] | down | status   local SeaweedFS S3 + Prefect server (+ workers)
    compare-models deploy                    work pools + the deployments in prefect.yaml
    compare-models run [--preset smoke] ...  run the compare-models flow from this process
    compare-models params [--preset ...] ... the same parameters as JSON, for
                                             `prefect deployment run 'compare-models/nightly' --params`
    compare-models runs                      runs stored in S3 (complete or not)
    compare-models show [RUN_ID]             one run's report and metrics (default: latest)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compare_models import registry
from compare_models.config import PRESETS, Settings, preset_params


def _export_settings(settings: Settings) -> None:
    """Prefect reads PREFECT_API_URL from the environment; .env may hold it for the local stack."""
    if settings.prefect_api_url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def _fail(message: str, code: int = 1) -> int:
    print(f"compare-models: error: {message}", file=sys.stderr)
    return code


# ── services ───────────────────────────────────────────────────────────────


def cmd_up(args: argparse.Namespace) -> int:
    from compare_models.local_stack import ServiceError, status, up

    try:
        for name, state in up(workers=args.workers).items():
            print(f"{name}: {state}")
    except ServiceError as exc:
        return _fail(str(exc))
    print(_table(status()))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from compare_models.local_stack import down

    for name, state in down().items():
        print(f"{name}: {state}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from compare_models.local_stack import status

    from compare_models.local_stack import SERVICES

    rows = status()
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    required = {s.name for s in SERVICES}  # workers are optional
    return 0 if all(r["healthy"] == "yes" for r in rows if r["service"] in required) else 3


def cmd_deploy(args: argparse.Namespace) -> int:
    _export_settings(Settings())
    from deployments.deploy import deploy

    return deploy()


# ── runs ───────────────────────────────────────────────────────────────────


def _params_from_args(args: argparse.Namespace):
    overrides: dict[str, Any] = {}
    for flag, key in (("data", "data"), ("data_sha256", "data_sha256"), ("models", "models"),
                      ("resnet_weights", "resnet_weights"), ("run_id", "run_id")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    execution = {k: getattr(args, k) for k in ("trainer", "retries", "retry_delay_seconds") if getattr(args, k) is not None}
    if execution:
        overrides["execution"] = execution
    if args.data and Path(args.data).expanduser().exists():  # workers may run elsewhere in the tree
        overrides["data"] = str(Path(args.data).expanduser().resolve())
    train = {k: getattr(args, k) for k in ("epochs", "batch_size", "optimizer", "learning_rate", "threads", "seed")
             if getattr(args, k) is not None}
    if train:
        overrides["train"] = train
    split = {k: getattr(args, k) for k in ("train_size", "val_size", "test_size") if getattr(args, k) is not None}
    if args.split or split:
        overrides["split"] = {"protocol": args.split or "sizes",
                              **{k.removesuffix("_size"): v for k, v in split.items()},
                              **({"seed": args.seed} if args.seed is not None else {})}
    return preset_params(args.preset, **overrides)


def cmd_params(args: argparse.Namespace) -> int:
    try:
        params = _params_from_args(args)
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid parameters:\n{exc}", 2)
    print(json.dumps({"params": params.model_dump(mode="json", exclude_none=True)}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        params = _params_from_args(args)
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid parameters:\n{exc}", 2)
    settings = Settings()
    _export_settings(settings)

    import httpx
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if api:
        try:
            httpx.get(api.rstrip("/") + "/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            return _fail(f"the Prefect server at {api} is not reachable: start it with `compare-models up`")

    from flows.compare_models import compare_models

    state = compare_models(params=params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    ui = settings.ui_url
    url = f"{ui}/runs/flow-run/{flow_run_id}" if ui else None
    if not state.is_completed():
        message = state.message or state.name
        if args.json:
            print(json.dumps({"status": state.name, "flow_run_id": str(flow_run_id), "ui_url": url, "error": message}))
        return _fail(f"run failed ({state.name}): {message}" + (f"\n  flow run: {url}" if url else ""))
    summary = state.result()
    if args.json:
        print(json.dumps({"status": "completed", "flow_run_id": str(flow_run_id), "ui_url": url, **summary}, indent=2))
        return 0
    print(f"run id:     {summary['run_id']}")
    print(f"flow run:   {url or flow_run_id}")
    print(f"report:     {summary['report']}")
    print(f"run prefix: {summary['prefix']}")
    if summary["synthetic_data"]:
        print("data:       SYNTHETIC (not CIFAR-10)")
    for model, m in summary["metrics"].items():
        print(f"  {model:9s} accuracy {m['accuracy']:.4f}  F1 (macro) {m['f1_macro']:.4f}  ROC AUC (macro) {m['roc_auc_macro']}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from compare_models import layout
    from compare_models.store import ArtifactStore, StoreError

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    try:
        store.check()
        run_id = args.run_id or store.get_json(layout.LATEST)["run_id"]
        manifest = store.get_json(layout.manifest_key(run_id))
    except StoreError as exc:
        return _fail(str(exc))
    except Exception:
        return _fail(f"no completed run {args.run_id or '(latest)'} in {store.uri('runs/')}")
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    flow_run_id = manifest.get("flow_run_id")
    print(f"run id:     {run_id}" + ("   [SYNTHETIC DATA]" if manifest.get("synthetic_data") else ""))
    print(f"completed:  {manifest['completed_at']}")
    if settings.ui_url and flow_run_id:
        print(f"flow run:   {settings.ui_url}/runs/flow-run/{flow_run_id}")
    print(f"report:     {manifest['report']['index']}")
    print(f"  link:     {store.presign(manifest['report']['files']['index.html'], 3600)}  (expires in 1 h)")
    for model, m in manifest["metrics"].items():
        print(f"  {model:9s} accuracy {m['accuracy']:.4f}  F1 (macro) {m['f1_macro']:.4f}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from compare_models.publish import list_runs
    from compare_models.store import ArtifactStore, StoreError

    store = ArtifactStore.from_settings(Settings())
    try:
        store.check()
    except StoreError as exc:
        return _fail(str(exc))
    runs = list_runs(store)
    print(json.dumps(runs, indent=2) if args.json else _table(runs))
    return 0


# ── argument parsing ───────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare-models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    upp = sub.add_parser("up", help="start the local S3 (SeaweedFS) and Prefect server")
    upp.add_argument("--workers", action="store_true", help="also start the local cpu and gpu pool workers")
    upp.set_defaults(func=cmd_up)
    sub.add_parser("deploy", help="create the work pools and apply prefect.yaml").set_defaults(func=cmd_deploy)
    sh = sub.add_parser("show", help="show a completed run (default: the latest)")
    sh.add_argument("run_id", nargs="?")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)
    sub.add_parser("down", help="stop the local services").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show the local services")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    rs = sub.add_parser("runs", help="list the runs stored in S3")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)

    run = argparse.ArgumentParser(add_help=False)
    run.add_argument("--preset", choices=sorted(PRESETS), default="seed", help="parameter set (default: seed, the report's protocol)")
    run.add_argument("--data", help="'cifar10' (default, official download), URL, path or s3:// URI, or 'synthetic[:N]'")
    run.add_argument("--data-sha256", help="expected SHA-256 of the archive")
    run.add_argument("--models", help=f"comma-separated registered models (default {','.join(registry.DEFAULT_MODELS)})")
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--optimizer")
    run.add_argument("--learning-rate", type=float)
    run.add_argument("--threads", type=int, help="TensorFlow threads per training process (0: share of cores)")
    run.add_argument("--seed", type=int)
    run.add_argument("--split", choices=["seed", "full", "sizes"])
    run.add_argument("--train-size", type=int)
    run.add_argument("--val-size", type=int)
    run.add_argument("--test-size", type=int)
    run.add_argument("--resnet-weights", help="'imagenet' (default), 'none', or a path / s3:// URI of a *_notop.h5 file")
    run.add_argument("--run-id")
    run.add_argument("--trainer", choices=["local", "deployment"],
                     help="local: subprocesses of this run (default); deployment: train-model/gpu on the gpu pool, one flow run per model")
    run.add_argument("--retries", type=int, help="retries of a failed training (each resumes from its checkpoint)")
    run.add_argument("--retry-delay-seconds", type=float)
    sub.add_parser("params", parents=[run], help="print run parameters as JSON for `prefect deployment run --params`") \
        .set_defaults(func=cmd_params)
    runp = sub.add_parser("run", parents=[run], help="run the compare-models flow")
    runp.add_argument("--json", action="store_true", help="print a machine-readable summary")
    runp.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
