"""`compare-models up`, `down`, `status` and `deploy`: the local S3 and Prefect server (and
workers), and the work pools and deployments on them."""

from __future__ import annotations

import argparse
import json

from compare_models.cli.common import export_settings
from compare_models.cli.common import fail as _fail
from compare_models.cli.console import print_line, print_table
from compare_models.config import Settings


def cmd_up(args: argparse.Namespace) -> int:
    from compare_models.local.processes import ServiceError
    from compare_models.local.services import status, up

    try:
        for name, state in up(
            workers=args.workers, database=args.database, auth=args.auth, mlflow=args.mlflow
        ).items():
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
    export_settings(Settings())
    from deployments.deploy import deploy

    return deploy()


def add_up(sub: argparse._SubParsersAction) -> None:
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
    upp.add_argument(
        "--mlflow",
        action="store_true",
        help="also start an MLflow tracking server on 127.0.0.1:5000 (its store in the chosen "
        "database, its artifacts in the bucket) and log runs to it (MLFLOW_TRACKING_URI in the "
        "env file)",
    )
    upp.set_defaults(func=cmd_up)


def add_deploy(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("deploy", help="create the work pools and apply prefect.yaml").set_defaults(
        func=cmd_deploy
    )


def add_down(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("down", help="stop the local services").set_defaults(func=cmd_down)


def add_status(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("status", help="show the local services")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
