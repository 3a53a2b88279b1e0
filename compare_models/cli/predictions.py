"""`compare-models predict`: a track's champion scores a folder of images (the `batch-predict`
flow, run in this process so that it shows in the Prefect UI like a deployment's run)."""

from __future__ import annotations

import argparse
import json

from pydantic import ValidationError

from compare_models.cli.common import export_settings
from compare_models.cli.common import fail as _fail
from compare_models.cli.console import print_line, print_table
from compare_models.config import PredictParams, Settings


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        params = PredictParams(track=args.track, model=args.model, source=args.source)
    except ValidationError as exc:
        return _fail(f"invalid parameters: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}")
    export_settings(Settings())
    from flows.batch_predict import batch_predict

    state = batch_predict(params=params, return_state=True)
    if not state.is_completed():
        return _fail(f"the batch prediction failed: {state.message or state.name}")
    summary = state.result()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    from compare_models.serving.predict import PredictSummary, describe, table_rows

    typed = PredictSummary.model_validate(summary)
    print_line(describe(typed))
    print_table(table_rows(typed), title="Predicted classes")
    for skipped in typed.skipped_files[:20]:
        print_line(f"skipped {skipped.key}: {skipped.reason}")
    print_line(f"rows: {typed.parquet} and {typed.csv}")
    return 0


def add_predict(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "predict",
        help="score a folder of images (a directory or s3://bucket/prefix/) or a tar archive with a "
        "track's champion",
    )
    pr.add_argument("source", nargs="?", help="default: the bucket's incoming/<track>/")
    pr.add_argument("--track", default="main")
    pr.add_argument("--model", default="cnn")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_predict)
