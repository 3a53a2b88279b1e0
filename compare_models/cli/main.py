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
compare-models watch [FLOW_RUN]          a run's trainings as they go (a deployment's run too)
compare-models show [RUN_ID]             one run's report, metrics, verdicts, fingerprint (default: latest)
compare-models replay RUN_ID             the same run again (same data by hash, split, seeds), and
                                         how far it landed from the original

People get tables (compare_models.cli.console); `--json` gives scripts the same data as JSON.
Each command lives in the module of its job: `services` (up, down, status, deploy), `runs` (run,
params, replay; their flags come from RunParams through `run_options`), `show` (show, history,
runs), `champions` (champion, promote) and `datasets` (datasets, dataset).
"""

from __future__ import annotations

import argparse
import os
import sys

from compare_models.cli import (
    champions,
    datasets,
    mlflow,
    predictions,
    runs,
    services,
    show,
    watch,
)

#: The command's exit codes (`compare-models --help` and the CLI reference list them).
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "an error: a service or the bucket cannot be reached, a run failed, a run or champion "
    "does not exist or cannot be promoted",
    2: "invalid parameters or arguments (nothing was started)",
    3: "`status`: a required local service is not healthy",
}


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
        services.add_up,
        services.add_deploy,
        show.add_show,
        watch.add_watch,
        services.add_down,
        services.add_status,
        runs.add_replay,
        champions.add_champion,
        champions.add_promote,
        champions.add_rollback,
        champions.add_export,
        mlflow.add_mlflow,
        predictions.add_predict,
        show.add_history,
        show.add_runs,
        datasets.add_datasets,
        datasets.add_dataset,
        runs.add_params,
        runs.add_run,
    ):
        add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
