"""`compare-models run`, `params` and `replay`: starting a run in this process (or printing its
parameters for a deployment run), and running a completed run again."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from typing import get_args

from pydantic import ValidationError

from compare_models.cli.common import export_settings
from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store as _open_store
from compare_models.cli.console import console, print_fields
from compare_models.cli.run_options import RunOptions
from compare_models.cli.show import print_metrics, print_replay
from compare_models.config import ExecutionParams, Settings, Shortcut


def cmd_params(args: argparse.Namespace) -> int:
    try:
        params = args.options.params(args)
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid parameters:\n{exc}", 2)
    print(json.dumps({"params": params.model_dump(mode="json", exclude_none=True)}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        params = args.options.params(args)
    except (ValidationError, ValueError) as exc:
        return _fail(f"invalid parameters:\n{exc}", 2)
    return _run_flow(params, as_json=args.json)


def _run_flow(params, *, as_json: bool) -> int:
    """Runs the compare-models flow in this process and prints its summary."""
    settings = Settings()
    export_settings(settings)
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
    print_metrics(summary)
    if summary.replay:
        print_replay(summary.replay)
    return 0


def _progress(as_json: bool) -> contextlib.AbstractContextManager:
    """A live display of the trainings' epochs on a terminal; nothing for scripts and pipes."""
    out = console()
    if as_json or not out.is_terminal:
        return contextlib.nullcontext()
    from compare_models.cli.progress import live_progress

    return live_progress(out)


def cmd_replay(args: argparse.Namespace) -> int:
    from compare_models.runs.replay import replay_params
    from compare_models.runs.stored import read_record
    from compare_models.storage.errors import StoreError

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


def add_params(sub: argparse._SubParsersAction) -> None:
    pa = sub.add_parser(
        "params",
        help="print run parameters as JSON for `prefect deployment run --params`",
        usage=RUN_USAGE.format(command="params", extra=""),
        conflict_handler="resolve",
    )
    pa.set_defaults(func=cmd_params, options=RunOptions(pa))


#: The usage line of the commands that take the run's flags: the common ones, then the rest
#: (every `RunParams` field has a flag; `--help` lists them by group).
RUN_USAGE = (
    "compare-models {command} [--preset NAME] [--data SOURCE] [--models M,...] [--epochs N] "
    "[--track NAME]{extra} [--<group>.<field> VALUE ...]"
)


def add_run(sub: argparse._SubParsersAction) -> None:
    runp = sub.add_parser(
        "run",
        help="run the compare-models flow",
        usage=RUN_USAGE.format(command="run", extra=" [--json]"),
        conflict_handler="resolve",
    )
    runp.add_argument("--json", action="store_true", help="print a machine-readable summary")
    runp.set_defaults(func=cmd_run, options=RunOptions(runp))


def add_replay(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser(
        "replay",
        help="run a completed run again with its stored parameters, data and seeds, "
        "and say how far the replay landed from it",
    )
    rp.add_argument("run_id", help="the completed run to replay")
    rp.add_argument(
        "--run-id", dest="new_run_id", help="id of the replay run (default: a fresh id)"
    )
    trainer = ExecutionParams.model_fields["trainer"]  # its flag and choices are the run's
    rp.add_argument(
        *(s.flag for s in trainer.metadata if isinstance(s, Shortcut)),
        choices=get_args(trainer.annotation),
        help="where the trainings run (default: as stored)",
    )
    rp.add_argument("--json", action="store_true", help="print a machine-readable summary")
    rp.set_defaults(func=cmd_replay)
