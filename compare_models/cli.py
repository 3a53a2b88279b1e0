"""The `compare-models` command: local services, runs, and the list of stored runs.

compare-models up [--workers] [--database sqlite|postgres] | down | status
                                         local SeaweedFS S3 + Prefect server (+ workers), on
                                         SQLite or a local PostgreSQL (remembered)
compare-models deploy                    work pools + the deployments in prefect.yaml
compare-models run [--preset smoke] ...  run the compare-models flow from this process
compare-models params [--preset ...] ... the same parameters as JSON, for
                                         `prefect deployment run 'compare-models/nightly' --params`
compare-models runs                      runs stored in S3 (complete or not)
compare-models champion [MODEL]          the models in use per track, with their history
compare-models promote RUN_ID --model M --reason TEXT   a person's promotion, recorded
compare-models history [--model M] [--last N]           completed runs, metrics, gate decisions
compare-models show [RUN_ID]             one run's report, metrics, verdicts, fingerprint (default: latest)
compare-models replay RUN_ID             the same run again (same data by hash, split, seeds), and
                                         how far it landed from the original
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
        for name, state in up(workers=args.workers, database=args.database).items():
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
    from compare_models.local_stack import active_services, database_summary, status

    rows = status()
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    if not args.json:
        print(f"Prefect database: {database_summary()}")
    required = {s.name for s in active_services()}  # workers are optional
    return 0 if all(r["healthy"] == "yes" for r in rows if r["service"] in required) else 3


def cmd_deploy(args: argparse.Namespace) -> int:
    _export_settings(Settings())
    from deployments.deploy import deploy

    return deploy()


# ── runs ───────────────────────────────────────────────────────────────────


def _params_from_args(args: argparse.Namespace):
    overrides: dict[str, Any] = {}
    for flag, key in (
        ("data", "data"),
        ("data_sha256", "data_sha256"),
        ("models", "models"),
        ("resnet_weights", "resnet_weights"),
        ("run_id", "run_id"),
    ):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    execution = {
        k: getattr(args, k)
        for k in ("trainer", "schedule", "retries", "retry_delay_seconds", "time_budget_minutes")
        if getattr(args, k) is not None
    }
    if execution:
        overrides["execution"] = execution
    if args.data and Path(args.data).expanduser().exists():  # workers may run elsewhere in the tree
        overrides["data"] = str(Path(args.data).expanduser().resolve())
    train = {
        k: getattr(args, k)
        for k in ("epochs", "batch_size", "optimizer", "learning_rate", "threads", "seed")
        if getattr(args, k) is not None
    }
    if train:
        overrides["train"] = train
    split = {
        k: getattr(args, k)
        for k in ("train_size", "val_size", "test_size")
        if getattr(args, k) is not None
    }
    if args.split or split:
        overrides["split"] = {
            "protocol": args.split or "sizes",
            **{k.removesuffix("_size"): v for k, v in split.items()},
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    if args.track:
        overrides["gate"] = {"track": args.track}
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
    return _run_flow(params, as_json=args.json)


def _run_flow(params, *, as_json: bool) -> int:
    """Runs the compare-models flow in this process and prints its summary."""
    settings = Settings()
    _export_settings(settings)

    import httpx
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if api:
        try:
            httpx.get(api.rstrip("/") + "/health", timeout=5).raise_for_status()
        except httpx.HTTPError:
            return _fail(
                f"the Prefect server at {api} is not reachable: start it with `compare-models up`"
            )

    from flows.compare_models import compare_models

    state = compare_models(params=params, return_state=True)
    flow_run_id = state.state_details.flow_run_id
    ui = settings.ui_url
    url = f"{ui}/runs/flow-run/{flow_run_id}" if ui else None
    if not state.is_completed():
        message = state.message or state.name
        if as_json:
            print(
                json.dumps(
                    {
                        "status": state.name,
                        "flow_run_id": str(flow_run_id),
                        "ui_url": url,
                        "error": message,
                    }
                )
            )
        return _fail(
            f"run failed ({state.name}): {message}" + (f"\n  flow run: {url}" if url else "")
        )
    summary = state.result()
    if as_json:
        print(
            json.dumps(
                {"status": "completed", "flow_run_id": str(flow_run_id), "ui_url": url, **summary},
                indent=2,
            )
        )
        return 0
    print(f"run id:     {summary['run_id']}")
    print(f"flow run:   {url or flow_run_id}")
    print(f"report:     {summary['report']}")
    print(f"run prefix: {summary['prefix']}")
    if summary["synthetic_data"]:
        print("data:       SYNTHETIC (not CIFAR-10)")
    if summary.get("scale"):
        print(f"note:       {summary['scale']}")
    _print_metrics(summary)
    if summary.get("replay"):
        _print_replay(summary["replay"])
    return 0


def _print_metrics(summary: dict[str, Any]) -> None:
    """Each model's accuracy with its interval, then the verdict of every pair."""
    intervals = (summary.get("comparison") or {}).get("models", {})
    for model, m in summary["metrics"].items():
        ci = intervals.get(model, {}).get("accuracy")
        shown = f" (95% CI {ci['ci_low']:.4f} to {ci['ci_high']:.4f})" if ci else ""
        print(f"  {model:9s} accuracy {m['accuracy']:.4f}{shown}  F1 (macro) {m['f1_macro']:.4f}")
    for verdict in (summary.get("comparison") or {}).get("verdicts", []):
        print(f"  verdict: {verdict}")
    for model, decision in (summary.get("gate") or {}).items():
        print(
            f"  {model} vs champion (track {decision['track']}): {decision['decision']}: {decision['reason']}"
        )


def _print_replay(replay: dict[str, Any]) -> None:
    print(f"replay of {replay['original_run_id']}: {replay['summary']}")
    for model, r in replay["models"].items():
        diff = r["pair"]["difference"]["accuracy"]
        print(
            f"  {model:9s} same class on {r['identical_predictions']} images; accuracy replay − original "
            f"{100 * diff['estimate']:+.2f} points (95% CI {100 * diff['ci_low']:+.2f} to {100 * diff['ci_high']:+.2f}; "
            f"McNemar p = {r['pair']['mcnemar']['pvalue']:.3g}); largest probability change "
            f"{r['max_abs_probability_difference']:.3g}"
        )
    for change in replay["fingerprint_changes"]:
        print(f"  changed: {change['entry']}: {change['original']!r} -> {change['replay']!r}")
    if not replay["fingerprint_changes"]:
        print("  fingerprint: nothing changed (code, libraries, machine, data, seeds, parameters)")


def _open_store():
    from compare_models.store import ArtifactStore

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    return settings, store


def cmd_replay(args: argparse.Namespace) -> int:
    from compare_models.run_comparison import RunNotFound, completed_manifest, replay_params
    from compare_models.store import StoreError

    try:
        _, store = _open_store()
        manifest = completed_manifest(store, args.run_id)
        overrides = (
            {"execution": {**manifest["params"]["execution"], "trainer": args.trainer}}
            if args.trainer
            else {}
        )
        params = replay_params(store, manifest, run_id=args.new_run_id, **overrides)
    except (RunNotFound, StoreError) as exc:
        return _fail(str(exc))
    except (ValidationError, ValueError) as exc:
        return _fail(f"run {args.run_id}'s stored parameters cannot be replayed:\n{exc}", 2)
    return _run_flow(params, as_json=args.json)


def _print_fingerprint(manifest: dict[str, Any]) -> None:
    fp = manifest.get("fingerprint")
    if not fp:
        print("fingerprint: none recorded (a run from before fingerprints)")
        return
    host, data = fp["orchestrator"], fp["data"]
    git = host["git"]
    print("fingerprint:")
    print(
        f"  code:       compare-models {host['project_version']}, commit {git['commit'] or 'unknown'}"
        + (" (uncommitted changes)" if git["dirty"] else "")
    )
    print(
        f"  python:     {host['python']} on {host['platform']}, CPU {host['cpu']} ({host['cpu_count']} cores)"
    )
    print("  libraries:  " + ", ".join(f"{k} {v}" for k, v in host["libraries"].items() if v))
    for model, device in fp["trainings"].items():
        where = device.get("host", {})
        gpus = ", ".join(device.get("gpus") or []) or "no GPU"
        print(
            f"  {model:9s}   {gpus}, precision {device.get('precision')}, {device.get('threads')} thread(s), "
            f"CPU {where.get('cpu', '?')}, tensorflow {where.get('libraries', {}).get('tensorflow')}"
        )
    print(
        f"  data:       {data['name']}, archive SHA-256 {data['archive_sha256']}, split key {data['split_key']}, "
        f"split indices SHA-256 {data['split_indices_sha256']}"
    )
    print("  seeds:      " + ", ".join(f"{k} {v}" for k, v in fp["seeds"].items()))
    print(f"  parameters: {json.dumps(fp['params'], sort_keys=True)}")


def cmd_show(args: argparse.Namespace) -> int:
    from compare_models import layout
    from compare_models.run_comparison import completed_manifest
    from compare_models.store import StoreError

    try:
        settings, store = _open_store()
        if not args.run_id and not store.exists(layout.LATEST):
            return _fail(f"no completed run yet in {store.uri(layout.RUNS)}")
        run_id = args.run_id or store.get_json(layout.LATEST)["run_id"]
        manifest = completed_manifest(store, run_id)
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    flow_run_id = manifest.get("flow_run_id")
    print(
        f"run id:     {run_id}" + ("   [SYNTHETIC DATA]" if manifest.get("synthetic_data") else "")
    )
    print(f"completed:  {manifest['completed_at']}")
    if settings.ui_url and flow_run_id:
        print(f"flow run:   {settings.ui_url}/runs/flow-run/{flow_run_id}")
    print(f"report:     {manifest['report']['index']}")
    print(
        f"  link:     {store.presign(manifest['report']['files']['index.html'], 3600)}  (expires in 1 h)"
    )
    _print_metrics(manifest)
    if manifest.get("replay"):
        _print_replay(manifest["replay"])
    _print_fingerprint(manifest)
    return 0


def cmd_champion(args: argparse.Namespace) -> int:
    from compare_models import champions
    from compare_models.store import StoreError

    try:
        _, store = _open_store()
        records = [
            r
            for r in champions.champions(store, args.track)
            if not args.model or r["model"] == args.model
        ]
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    if not records:
        print(
            "no champion yet"
            + (f" for {args.model}" if args.model else "")
            + (f" on track {args.track}" if args.track else "")
        )
        return 0
    for record in records:
        current = record["current"]
        print(
            f"{record['model']} (track {record['track']}): run {current['run_id']}, accuracy "
            f"{current['metrics']['accuracy']:.4f}, promoted {current['promoted_at']} by {current['by']}: {current['reason']}"
        )
        for old in record["history"][: args.last]:
            print(
                f"    before: run {old['run_id']} ({old['metrics']['accuracy']:.4f}), promoted {old['promoted_at']}, "
                f"replaced {old['replaced_at']} by {old['replaced_by']}: {old['reason']}"
            )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from compare_models import champions
    from compare_models.run_comparison import RunNotFound, completed_manifest
    from compare_models.store import StoreError

    try:
        _, store = _open_store()
        manifest = completed_manifest(store, args.run_id)
        track = args.track or (manifest["params"].get("gate") or {}).get("track") or "main"
        record = champions.promote_by_hand(
            store,
            track=track,
            run_id=args.run_id,
            model=args.model,
            manifest=manifest,
            reason=args.reason,
        )
    except (RunNotFound, StoreError) as exc:
        return _fail(str(exc))
    replaced = record["history"][0]["run_id"] if record["history"] else "no earlier champion"
    print(
        f"{args.model} champion of track {track}: run {args.run_id} (replaces {replaced}); reason recorded: {args.reason}"
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from compare_models import history
    from compare_models.store import StoreError

    try:
        _, store = _open_store()
        rows = history.rows(
            history.completed_manifests(store), model=args.model, track=args.track, last=args.last
        )
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    shown = [
        {
            "run": r["run_id"],
            "completed": (r["completed_at"] or "")[:19],
            "track": r["track"] or "-",
            "model": r["model"],
            "accuracy": f"{r['accuracy']:.4f}",
            "95% CI": f"{r['ci_low']:.4f}-{r['ci_high']:.4f}" if r["ci_low"] is not None else "-",
            "decision": r["decision"] or "-",
            "vs": r["champion_run_id"] or "-",
        }
        for r in rows
    ]
    print(_table(shown))
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
    parser = argparse.ArgumentParser(
        prog="compare-models",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    upp = sub.add_parser("up", help="start the local S3 (SeaweedFS) and Prefect server")
    upp.add_argument(
        "--workers", action="store_true", help="also start the local cpu and gpu pool workers"
    )
    upp.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        help="the Prefect server's database: SQLite, or a local PostgreSQL as in production "
        "(default: COMPARE_MODELS_DATABASE, else the last choice, else sqlite); remembered for later `up`s",
    )
    upp.set_defaults(func=cmd_up)
    sub.add_parser("deploy", help="create the work pools and apply prefect.yaml").set_defaults(
        func=cmd_deploy
    )
    sh = sub.add_parser("show", help="show a completed run (default: the latest)")
    sh.add_argument("run_id", nargs="?")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)
    sub.add_parser("down", help="stop the local services").set_defaults(func=cmd_down)
    st = sub.add_parser("status", help="show the local services")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    rp = sub.add_parser(
        "replay",
        help="run a completed run again with its stored parameters, data and seeds, "
        "and say how far the replay landed from it",
    )
    rp.add_argument("run_id", help="the completed run to replay")
    rp.add_argument(
        "--run-id", dest="new_run_id", help="id of the replay run (default: a fresh id)"
    )
    rp.add_argument(
        "--trainer",
        choices=["local", "deployment"],
        help="where the trainings run (default: as stored)",
    )
    rp.add_argument("--json", action="store_true", help="print a machine-readable summary")
    rp.set_defaults(func=cmd_replay)
    ch = sub.add_parser(
        "champion", help="the current champions (the models in use) and their history"
    )
    ch.add_argument("model", nargs="?")
    ch.add_argument("--track", help="only this track (default: all)")
    ch.add_argument(
        "--last", type=int, default=5, help="earlier champions shown per model (default 5)"
    )
    ch.add_argument("--json", action="store_true")
    ch.set_defaults(func=cmd_champion)
    pr = sub.add_parser(
        "promote",
        help="make a completed run's model the champion by hand (recorded with the reason)",
    )
    pr.add_argument("run_id")
    pr.add_argument("--model", required=True)
    pr.add_argument("--reason", required=True, help="why: kept in the champion's history")
    pr.add_argument("--track", help="default: the run's own track")
    pr.set_defaults(func=cmd_promote)
    hi = sub.add_parser(
        "history", help="completed runs with their metrics and gate decisions, newest first"
    )
    hi.add_argument("--model")
    hi.add_argument("--track")
    hi.add_argument("--last", type=int, help="at most this many rows")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_history)
    rs = sub.add_parser("runs", help="list the runs stored in S3")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)

    run = argparse.ArgumentParser(add_help=False)
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="seed",
        help="parameter set (default: seed, the report's protocol)",
    )
    run.add_argument(
        "--data",
        help="'cifar10' (default, official download), URL, path or s3:// URI, or 'synthetic[:N]'",
    )
    run.add_argument("--data-sha256", help="expected SHA-256 of the archive")
    run.add_argument(
        "--models",
        help=f"comma-separated registered models (default {','.join(registry.DEFAULT_MODELS)})",
    )
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--optimizer")
    run.add_argument("--learning-rate", type=float)
    run.add_argument(
        "--threads", type=int, help="TensorFlow threads per training process (0: share of cores)"
    )
    run.add_argument("--seed", type=int)
    run.add_argument("--split", choices=["seed", "full", "sizes"])
    run.add_argument("--train-size", type=int)
    run.add_argument("--val-size", type=int)
    run.add_argument("--test-size", type=int)
    run.add_argument(
        "--resnet-weights",
        help="'imagenet' (default), 'none', or a path / s3:// URI of a *_notop.h5 file",
    )
    run.add_argument("--run-id")
    run.add_argument(
        "--trainer",
        choices=["local", "deployment"],
        help="local: subprocesses of this run (default); deployment: train-model/gpu on the gpu pool, one flow run per model",
    )
    run.add_argument(
        "--track",
        help="which champions the gate judges against (default: the preset's name, or main)",
    )
    run.add_argument(
        "--schedule",
        choices=["auto", "parallel", "weighted", "sequential"],
        help="how local trainings share the cores (default auto: the measured best)",
    )
    run.add_argument(
        "--time-budget-minutes",
        type=float,
        help="stop training at the end of the epoch in which this budget (from the run's start) runs out",
    )
    run.add_argument(
        "--retries",
        type=int,
        help="retries of a failed training (each resumes from its checkpoint)",
    )
    run.add_argument("--retry-delay-seconds", type=float)
    sub.add_parser(
        "params",
        parents=[run],
        help="print run parameters as JSON for `prefect deployment run --params`",
    ).set_defaults(func=cmd_params)
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
