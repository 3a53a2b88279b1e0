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

People get tables (compare_models.cli.console); `--json` gives scripts the same data as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from compare_models.cli import datasets as cli_datasets
from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store as _open_store
from compare_models.cli.console import console, print_fields, print_line, print_table
from compare_models.config import PRESETS, Settings, preset_params
from compare_models.models import registry

if TYPE_CHECKING:
    from compare_models.gate.champion_record import ChampionEntry, ChampionRecord
    from compare_models.runs.record import Interval, Replay, RunRecord, RunSummary


def _export_settings(settings: Settings) -> None:
    """Prefect reads PREFECT_API_URL from the environment; .env may hold it for the local stack."""
    if settings.prefect_api_url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    if settings.prefect_api_auth_string and not os.environ.get("PREFECT_API_AUTH_STRING"):
        os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect_api_auth_string.get_secret_value()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


#: The command's exit codes (`compare-models --help` and the CLI reference list them).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an error: a service or the bucket cannot be reached, a run failed, a run or champion "
    "does not exist or cannot be promoted",
    2: "invalid parameters or arguments (nothing was started)",
    3: "`status`: a required local service is not healthy",
}


# ── services ───────────────────────────────────────────────────────────────


def cmd_up(args: argparse.Namespace) -> int:
    from compare_models.local.processes import ServiceError
    from compare_models.local.services import status, up

    try:
        for name, state in up(workers=args.workers, database=args.database, auth=args.auth).items():
            print_line(f"{name}: {state}")
    except ServiceError as exc:
        return _fail(str(exc))
    print_table(status(), title="Services")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from compare_models.local.services import down

    for name, state in down().items():
        print_line(f"{name}: {state}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from compare_models.local.postgres import database_summary
    from compare_models.local.services import active_services, status

    rows = status()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_table(rows, title="Services")
        print_line(f"Prefect database: {database_summary()}")
    required = {s.name for s in active_services()}  # workers are optional
    return 0 if all(r["healthy"] == "yes" for r in rows if r["service"] in required) else 3


def cmd_deploy(args: argparse.Namespace) -> int:
    _export_settings(Settings())
    from deployments.deploy import deploy

    return deploy()


# ── runs ───────────────────────────────────────────────────────────────────


def _params_from_args(args: argparse.Namespace):
    from compare_models.data.folders import is_folder_source

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
        for k in (
            "trainer",
            "schedule",
            "retries",
            "retry_delay_seconds",
            "time_budget_minutes",
            "store_outage_minutes",
        )
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
    if (
        args.data
        and not (args.split or split)
        and is_folder_source(overrides.get("data", args.data))
    ):
        # a folder of images is split by hash whatever the preset's split (sizes are for archives)
        overrides["split"] = {
            "protocol": "hash",
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    if args.split or split:
        overrides["split"] = {
            "protocol": args.split or "sizes",
            **{k.removesuffix("_size"): v for k, v in split.items()},
            **({"seed": args.seed} if args.seed is not None else {}),
        }
    if args.track:
        overrides["gate"] = {"track": args.track}
    if args.skip_if_unchanged:
        overrides["skip_if_unchanged"] = True
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
    # this process runs the parent flow: its Prefect client rides out an API outage too
    os.environ.setdefault(
        "PREFECT_CLIENT_MAX_RETRIES", str(params.execution.prefect_client_retries())
    )

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

    with _progress(as_json):
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
    from compare_models.runs.record import RunSummary, SkippedRun

    result = state.result()
    if result.get("skipped"):
        skipped = SkippedRun.model_validate(result)
        if as_json:
            print(json.dumps({"status": "skipped", "flow_run_id": str(flow_run_id), "ui_url": url, **skipped.model_dump(mode="json")}, indent=2))  # fmt: skip
        else:
            print(
                f"run id:     {skipped.run_id}\nflow run:   {url or flow_run_id}\n{skipped.reason}"
            )
        return 0
    summary = RunSummary.model_validate(result)
    if as_json:
        print(
            json.dumps(
                {
                    "status": "completed",
                    "flow_run_id": str(flow_run_id),
                    "ui_url": url,
                    **summary.model_dump(mode="json", by_alias=True),
                },
                indent=2,
            )
        )
        return 0
    fields = {
        "run id": summary.run_id,
        "flow run": url or flow_run_id,
        "report": summary.report,
        "run prefix": summary.prefix,
    }
    if summary.synthetic_data:
        fields["data"] = "SYNTHETIC (not CIFAR-10)"
    if summary.scale:
        fields["note"] = summary.scale
    print_fields(fields, title="Run")
    _print_metrics(summary)
    if summary.replay:
        _print_replay(summary.replay)
    return 0


def _progress(as_json: bool) -> contextlib.AbstractContextManager:
    """A live display of the trainings' epochs on a terminal; nothing for scripts and pipes."""
    out = console()
    if as_json or not out.is_terminal:
        return contextlib.nullcontext()
    from compare_models.cli.progress import live_progress

    return live_progress(out)


def _interval_text(interval: Interval | None) -> str:
    """ "0.6100 to 0.6400", or "-" where the run has no interval."""
    return "-" if interval is None else f"{interval.ci_low:.4f} to {interval.ci_high:.4f}"


def _print_metrics(run: RunSummary | RunRecord) -> None:
    """A table of each model's accuracy with its interval and its gate decision, then the
    verdict of every pair and the reason of every decision."""
    comparison = run.comparison
    level = f"{100 * comparison.settings.confidence:g}% CI" if comparison else "CI"
    rows = []
    for model, m in run.metrics.items():
        interval = (
            comparison.models[model].accuracy if comparison and model in comparison.models else None
        )
        decision = run.gate.get(model)
        rows.append(
            {
                "model": model,
                "accuracy": f"{m.accuracy:.4f}",
                f"accuracy {level}": _interval_text(interval),
                "F1 (macro)": f"{m.f1_macro:.4f}",
                "gate": decision.decision if decision else "-",
            }
        )
    print_table(rows, title="Models")
    for verdict in comparison.verdicts if comparison else []:
        print_line(f"verdict: {verdict}", style="bold")
    for model, decision in run.gate.items():
        print_line(
            f"{model} vs champion (track {decision.track}): {decision.decision}: {decision.reason}"
        )


def _print_replay(replay: Replay) -> None:
    rows = []
    for model, r in replay.models.items():
        diff, level = r.pair.difference.accuracy, f"{100 * r.pair.settings.confidence:g}%"
        rows.append(
            {
                "model": model,
                "same class on": r.identical_predictions,
                "accuracy replay − original (points)": f"{100 * diff.estimate:+.2f}",
                f"{level} CI": f"{100 * diff.ci_low:+.2f} to {100 * diff.ci_high:+.2f}",
                "McNemar p": f"{r.pair.mcnemar.pvalue:.3g}",
                "largest probability change": f"{r.max_abs_probability_difference:.3g}",
            }
        )
    print_table(rows, title=f"Replay of {replay.original_run_id}: {replay.summary}")
    if replay.fingerprint_changes:
        print_table(
            [
                {"entry": c.entry, "original": repr(c.original), "replay": repr(c.replay)}
                for c in replay.fingerprint_changes
            ],
            title="Changed in the fingerprint",
        )
    else:
        print_line(
            "fingerprint: nothing changed (code, libraries, machine, data, seeds, parameters)"
        )


def cmd_replay(args: argparse.Namespace) -> int:
    from compare_models.runs.replay import replay_params
    from compare_models.runs.stored import read_record
    from compare_models.storage.store import StoreError

    try:
        _, store = _open_store()
        original = read_record(store, args.run_id)
        overrides = (
            {"execution": {**original.params.execution.model_dump(), "trainer": args.trainer}}
            if args.trainer
            else {}
        )
        params = replay_params(store, original, run_id=args.new_run_id, **overrides)
    except StoreError as exc:
        return _fail(str(exc))
    except (ValidationError, ValueError) as exc:
        return _fail(f"run {args.run_id}'s stored parameters cannot be replayed:\n{exc}", 2)
    return _run_flow(params, as_json=args.json)


def _print_fingerprint(record: RunRecord) -> None:
    fp = record.fingerprint
    if fp is None:
        print_line("fingerprint: none recorded (a run from before fingerprints)")
        return
    host, data = fp.orchestrator, fp.data
    git = host.get("git") or {}
    libraries = host.get("libraries") or {}
    fields = {
        "code": f"compare-models {host.get('project_version')}, commit {git.get('commit') or 'unknown'}"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        "python": f"{host.get('python')} on {host.get('platform')}, CPU {host.get('cpu')} "
        f"({host.get('cpu_count')} cores)",
        "libraries": ", ".join(f"{k} {v}" for k, v in libraries.items() if v),
    }
    for model, device in fp.trainings.items():
        where = device.get("host", {})
        gpus = ", ".join(device.get("gpu_names") or device.get("gpus") or []) or "no GPU"
        backend = device.get("backend") or "tensorflow"  # runs from before the choice: TensorFlow
        fields[model] = (
            f"{gpus}, precision {device.get('precision')}, {device.get('threads')} thread(s), "
            f"CPU {where.get('cpu', '?')}, Keras backend {backend} "
            f"{where.get('libraries', {}).get(backend)}"
        )
    fields["data"] = (
        f"{data.get('name')}, archive SHA-256 {data.get('archive_sha256')}, split key "
        f"{data.get('split_key')}, split indices SHA-256 {data.get('split_indices_sha256')}"
    )
    fields["seeds"] = ", ".join(f"{k} {v}" for k, v in fp.seeds.items())
    fields["parameters"] = json.dumps(fp.params, sort_keys=True)
    print_fields(fields, title="Fingerprint")


def cmd_show(args: argparse.Namespace) -> int:
    from compare_models.runs.stored import latest_run_id, read_record
    from compare_models.storage import layout
    from compare_models.storage.store import StoreError

    try:
        settings, store = _open_store()
        run_id = args.run_id or latest_run_id(store)
        if not run_id:
            return _fail(f"no completed run yet in {store.uri(layout.RUNS)}")
        record = read_record(store, run_id)
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(record.model_dump(mode="json", by_alias=True), indent=2))
        return 0
    fields = {"run id": run_id + ("   [SYNTHETIC DATA]" if record.synthetic_data else "")}
    fields["completed"] = record.completed_at.isoformat()
    if settings.ui_url and record.flow_run_id:
        fields["flow run"] = f"{settings.ui_url}/runs/flow-run/{record.flow_run_id}"
    fields["report"] = record.report.index
    link = store.presign(record.report.files["index.html"], 3600)
    fields["report link"] = f"{link}  (expires in 1 h)"
    print_fields(fields, title="Run")
    _print_metrics(record)
    if record.replay:
        _print_replay(record.replay)
    _print_fingerprint(record)
    return 0


def cmd_champion(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.storage.store import StoreError

    try:
        _, store = _open_store()
        records = [
            (track, r)
            for track, r in champions.champions(store, args.track)
            if not args.model or r.model == args.model
        ]
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([_champion_json(t, r) for t, r in records], indent=2))
        return 0
    if not records:
        print_line(
            "no champion yet"
            + (f" for {args.model}" if args.model else "")
            + (f" on track {args.track}" if args.track else "")
        )
        return 0
    print_table(
        [_champion_row(t, r, r.current) for t, r in records if r.current], title="Champions"
    )
    earlier = [
        {**_champion_row(t, r, old), "replaced": old.replaced_at, "replaced by": old.replaced_by}
        for t, r in records
        for old in r.history[: args.last]
    ]
    if earlier:
        print_table(earlier, title="Earlier champions")
    return 0


def _champion_json(track: str, record: ChampionRecord) -> dict[str, Any]:
    """`champion --json`: the stored record with its track, as before the schema."""
    return {"track": track, **record.model_dump(mode="json", exclude={"schema_version"})}


def _champion_row(track: str, record: ChampionRecord, entry: ChampionEntry) -> dict[str, Any]:
    """One champion (the current one or an earlier one) of a model's record, as a table row."""
    return {
        "model": record.model,
        "track": track,
        "run": entry.run_id,
        "accuracy": f"{entry.metrics.accuracy:.4f}",
        "promoted": entry.promoted_at,
        "by": entry.by,
        "reason": entry.reason,
    }


def cmd_promote(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.runs.stored import read_record
    from compare_models.storage.store import StoreError

    try:
        _, store = _open_store()
        record = read_record(store, args.run_id)
        track = args.track or record.track
        champion = champions.promote_by_hand(
            store, track=track, record=record, model=args.model, reason=args.reason
        )
    except StoreError as exc:
        return _fail(str(exc))
    replaced = champion.history[0].run_id if champion.history else "no earlier champion"
    print_line(
        f"{args.model} champion of track {track}: run {args.run_id} (replaces {replaced}); reason recorded: {args.reason}"
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from compare_models.runs import track_history
    from compare_models.runs.stored import completed_records
    from compare_models.storage.store import StoreError

    try:
        _, store = _open_store()
        rows = track_history.rows(
            completed_records(store), model=args.model, track=args.track, last=args.last
        )
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in rows], indent=2))
        return 0
    shown = [
        {
            "run": r.run_id,
            "completed": (r.completed_at or "")[:19],
            "track": r.track,
            "model": r.model,
            "accuracy": f"{r.accuracy:.4f}",
            "CI": f"{r.ci_low:.4f}-{r.ci_high:.4f} ({100 * r.confidence:g}%)"
            if r.ci_low is not None
            else "-",
            "decision": r.decision or "-",
            "vs": r.champion_run_id or "-",
        }
        for r in rows
    ]
    print_table(shown, title="History")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from compare_models.runs.stored import list_runs
    from compare_models.storage.store import ArtifactStore, StoreError

    store = ArtifactStore.from_settings(Settings())
    try:
        store.check()
    except StoreError as exc:
        return _fail(str(exc))
    runs = [r.model_dump(mode="json") for r in list_runs(store)]
    if args.json:
        print(json.dumps(runs, indent=2))
    else:
        print_table(runs, title="Runs")
    return 0


# ── argument parsing ───────────────────────────────────────────────────────


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare-models",
        description=__doc__,
        epilog="exit codes:\n"
        + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    # `--help` lists the commands in the order they are added: keep that order, not the groups'.
    for add_command in (
        _add_up,
        _add_deploy,
        _add_show,
        _add_down,
        _add_status,
        _add_replay,
        _add_champion,
        _add_promote,
        _add_history,
        _add_runs,
        cli_datasets.add_datasets,
        cli_datasets.add_dataset,
        _add_params,
        _add_run,
    ):
        add_command(sub)
    return parser


# services: the local S3 and Prefect server, and the deployments on them


def _add_up(sub: argparse._SubParsersAction) -> None:
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
    upp.add_argument(
        "--auth",
        action="store_true",
        help="turn on the Prefect API's authentication: a random user:password written once to the "
        "env file (PREFECT_API_AUTH_STRING), required by the server, sent by the CLI and workers; "
        "remembered for later `up`s",
    )
    upp.set_defaults(func=cmd_up)


def _add_deploy(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("deploy", help="create the work pools and apply prefect.yaml").set_defaults(
        func=cmd_deploy
    )


def _add_down(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("down", help="stop the local services").set_defaults(func=cmd_down)


def _add_status(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="show the local services")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)


# runs: starting them, replaying them and reading them back


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The run's parameters, shared by `run` and `params` so that both accept the same ones."""
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="seed",
        help="parameter set (default: seed, the report's protocol)",
    )
    parser.add_argument(
        "--data",
        help="'cifar10' (default, official download), URL, path or s3:// URI of an archive, a folder "
        "of images (a directory or s3://bucket/prefix/), version:<id>, or 'synthetic[:N]'",
    )
    parser.add_argument("--data-sha256", help="expected SHA-256 of the archive")
    parser.add_argument(
        "--models",
        help=f"comma-separated registered models (default {','.join(registry.DEFAULT_MODELS)})",
    )
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--optimizer")
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument(
        "--threads", type=int, help="TensorFlow threads per training process (0: share of cores)"
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--split",
        choices=["seed", "full", "sizes", "hash"],
        help="split protocol (a folder of images is split by hash, the default for it)",
    )
    parser.add_argument(
        "--skip-if-unchanged",
        action="store_true",
        default=None,
        help="skip training when the data has not changed since the champion's (folder sources)",
    )
    parser.add_argument("--train-size", type=int)
    parser.add_argument("--val-size", type=int)
    parser.add_argument("--test-size", type=int)
    parser.add_argument(
        "--resnet-weights",
        help="'imagenet' (default), 'none', or a path / s3:// URI of a *_notop.h5 file",
    )
    parser.add_argument("--run-id")
    parser.add_argument(
        "--trainer",
        choices=["local", "deployment"],
        help="local: subprocesses of this run (default); deployment: train-model/gpu on the gpu pool, one flow run per model",
    )
    parser.add_argument(
        "--track",
        help="which champions the gate judges against (default: the preset's name, or main)",
    )
    parser.add_argument(
        "--schedule",
        choices=["auto", "parallel", "weighted", "sequential"],
        help="how local trainings share the cores (default auto: the measured best)",
    )
    parser.add_argument(
        "--time-budget-minutes",
        type=float,
        help="stop training at the end of the epoch in which this budget (from the run's start) runs out",
    )
    parser.add_argument(
        "--retries",
        type=int,
        help="retries of a failed training (each resumes from its checkpoint)",
    )
    parser.add_argument(
        "--retry-delay-seconds",
        type=float,
        help="delay before the first retry; each later one waits twice as long (with jitter)",
    )
    parser.add_argument(
        "--store-outage-minutes",
        type=float,
        help="how long the run waits out an unreachable object store (default 15)",
    )


def _add_params(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser(
        "params", help="print run parameters as JSON for `prefect deployment run --params`"
    )
    _add_run_arguments(pa)
    pa.set_defaults(func=cmd_params)


def _add_run(sub: argparse._SubParsersAction) -> None:
    runp = sub.add_parser("run", help="run the compare-models flow")
    _add_run_arguments(runp)
    runp.add_argument("--json", action="store_true", help="print a machine-readable summary")
    runp.set_defaults(func=cmd_run)


def _add_replay(sub: argparse._SubParsersAction) -> None:
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


def _add_show(sub: argparse._SubParsersAction) -> None:
    sh = sub.add_parser("show", help="show a completed run (default: the latest)")
    sh.add_argument("run_id", nargs="?")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)


def _add_runs(sub: argparse._SubParsersAction) -> None:
    rs = sub.add_parser("runs", help="list the runs stored in S3")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)


def _add_history(sub: argparse._SubParsersAction) -> None:
    hi = sub.add_parser(
        "history", help="completed runs with their metrics and gate decisions, newest first"
    )
    hi.add_argument("--model")
    hi.add_argument("--track")
    hi.add_argument("--last", type=int, help="at most this many rows")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_history)


# champions: the models in use, and choosing one by hand


def _add_champion(sub: argparse._SubParsersAction) -> None:
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


def _add_promote(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "promote",
        help="make a completed run's model the champion by hand (recorded with the reason)",
    )
    pr.add_argument("run_id")
    pr.add_argument("--model", required=True)
    pr.add_argument("--reason", required=True, help="why: kept in the champion's history")
    pr.add_argument("--track", help="default: the run's own track")
    pr.set_defaults(func=cmd_promote)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
