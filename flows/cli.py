"""The `compare-models` command: local services, runs, and the list of stored runs.

    compare-models up | down | status        local SeaweedFS S3 + Prefect server
    compare-models run [--preset smoke] ...  run the compare-models flow
    compare-models runs                      runs stored in S3 (complete or not)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from pydantic import ValidationError

from tasks.config import MODEL_NAMES, PRESETS, Settings, preset_params


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
    from infra.local.services import ServiceError, status, up

    try:
        for name, state in up().items():
            print(f"{name}: {state}")
    except ServiceError as exc:
        return _fail(str(exc))
    print(_table(status()))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from infra.local.services import down

    for name, state in down().items():
        print(f"{name}: {state}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from infra.local.services import status

    rows = status()
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return 0 if all(r["healthy"] == "yes" for r in rows) else 3


# ── runs ───────────────────────────────────────────────────────────────────


def _params_from_args(args: argparse.Namespace):
    overrides: dict[str, Any] = {}
    for flag, key in (("data", "data"), ("data_sha256", "data_sha256"), ("models", "models"),
                      ("resnet_weights", "resnet_weights"), ("run_id", "run_id")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
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


def cmd_runs(args: argparse.Namespace) -> int:
    from tasks.publish import list_runs
    from tasks.store import ArtifactStore, StoreError

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
    sub.add_parser("up", help="start the local S3 (SeaweedFS) and Prefect server").set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the local services").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show the local services")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    rs = sub.add_parser("runs", help="list the runs stored in S3")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)

    run = sub.add_parser("run", help="run the compare-models flow")
    run.add_argument("--preset", choices=sorted(PRESETS), default="seed", help="parameter set (default: seed, the report's protocol)")
    run.add_argument("--data", help="'cifar10' (default, official download), URL, path or s3:// URI, or 'synthetic[:N]'")
    run.add_argument("--data-sha256", help="expected SHA-256 of the archive")
    run.add_argument("--models", help=f"comma-separated subset of {','.join(MODEL_NAMES)}")
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
    run.add_argument("--json", action="store_true", help="print a machine-readable summary")
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
