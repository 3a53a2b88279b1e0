"""`compare-models mlflow sync [RUN_ID]`: MLflow catches up with the bucket. It logs what MLflow
lacks of a completed run (every run whose last logging was incomplete, or that ran while MLflow
was off, when no id is given), writes what MLflow holds now to the run's `mlflow.json`, and makes
the registry's aliases agree with every champion record. Idempotent: a second sync changes
nothing."""

from __future__ import annotations

import argparse

from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store as _open_store
from compare_models.cli.console import print_line, print_table


def cmd_sync(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.runs.stored import completed_records, read_record
    from compare_models.storage.errors import StoreError
    from compare_models.tracking.registry import follow
    from compare_models.tracking.sink import Sink
    from compare_models.tracking.sync import latest, sync

    try:
        settings, store = _open_store()
        sink = Sink.open(settings)
        if sink is None:
            return _fail(
                "MLflow is off: set MLFLOW_TRACKING_URI to its tracking server "
                "(`compare-models up --mlflow` starts one on http://127.0.0.1:5000)"
            )
        if sink.down:
            return _fail(sink.down)
        if args.run_id:
            records = [read_record(store, args.run_id)]
        else:
            records = [
                r
                for r in completed_records(store)
                if args.all or not ((found := latest(store, r)) and found.complete)
            ]
        rows, down = [], None
        for record in reversed(records):  # oldest first: the registry's versions in order
            run_sink = Sink.open(settings)
            tracked = sync(run_sink, store, record)
            rows.append(
                {
                    "run": record.run_id,
                    "mlflow run": tracked.run_id or "-",
                    "registered": ", ".join(f"{m} v{v}" for m, v in tracked.registered.items())
                    or "-",
                    "not logged": "; ".join(tracked.not_logged) or "-",
                }
            )
            down = run_sink.down
            if down:  # MLflow stopped answering: the other runs would only wait too
                print_line(f"stopped after run {record.run_id}: {down}")
                break
        problems = [row for row in rows if row["not logged"] != "-"]
        if not args.run_id and down is None:
            for track, record in champions.champions(store):
                follower = Sink.open(settings)
                follow(follower, store, track, record.model)
                if follower.problems:
                    problems.append({"run": f"{track}/{record.model}"})
                    print_line(f"{track} {record.model}: " + "; ".join(follower.problems))
    except StoreError as exc:
        return _fail(str(exc))
    if rows:
        print_table(rows, title=f"MLflow sync ({sink.uri})")
    else:
        print_line(f"MLflow ({sink.uri}) has every run already")
    return 1 if problems else 0


def add_mlflow(sub: argparse._SubParsersAction) -> None:
    ml = sub.add_parser("mlflow", help="MLflow: catch up with the bucket (`mlflow sync`)")
    commands = ml.add_subparsers(dest="mlflow_command", required=True)
    sync = commands.add_parser(
        "sync",
        help="log to MLflow what it lacks of a run (default: every run not fully logged) and "
        "make the registry's aliases agree with the champions",
    )
    sync.add_argument("run_id", nargs="?")
    sync.add_argument(
        "--all", action="store_true", help="every completed run, even those logged in full"
    )
    sync.set_defaults(func=cmd_sync)
