"""`compare-models show`, `history` and `runs`: the stored runs, read back for people (tables)
and scripts (`--json`); the metrics and replay tables are `run`'s and `replay`'s too."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store as _open_store
from compare_models.cli.console import print_fields, print_line, print_table
from compare_models.config import Settings

if TYPE_CHECKING:
    from compare_models.runs.record import Interval, Replay, RunRecord, RunSummary


def _interval_text(interval: Interval | None) -> str:
    """ "0.6100 to 0.6400", or "-" where the run has no interval."""
    return "-" if interval is None else f"{interval.ci_low:.4f} to {interval.ci_high:.4f}"


def print_metrics(run: RunSummary | RunRecord) -> None:
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


def print_replay(replay: Replay) -> None:
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
    from compare_models.storage.errors import StoreError

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
    try:
        from compare_models.tracking.sync import latest

        tracked = latest(store, record)
    except StoreError as exc:
        tracked, fields["mlflow"] = None, str(exc)
    if tracked is not None:
        fields["mlflow"] = tracked.describe()
    print_fields(fields, title="Run")
    print_metrics(record)
    if record.replay:
        print_replay(record.replay)
    _print_fingerprint(record)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from compare_models.runs import track_history
    from compare_models.runs.stored import completed_records
    from compare_models.storage.errors import StoreError

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
            "training images": f"{r.train_images:,}",
            "accuracy": f"{r.accuracy:.4f}",
            "CI": f"{r.ci_low:.4f}-{r.ci_high:.4f} ({100 * r.confidence:g}%)"
            if r.ci_low is not None
            else "-",
            "curve": f"{r.predicted:.4f}" if r.predicted is not None else "-",
            "residual": f"{100 * r.residual:+.2f} pts" if r.residual is not None else "-",
            "decision": r.decision or "-",
            "vs": r.champion_run_id or "-",
        }
        for r in rows
    ]
    print_table(shown, title="History")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from compare_models.runs.stored import list_runs
    from compare_models.storage.errors import StoreError
    from compare_models.storage.store import ArtifactStore

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


def add_show(sub: argparse._SubParsersAction) -> None:
    sh = sub.add_parser("show", help="show a completed run (default: the latest)")
    sh.add_argument("run_id", nargs="?")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)


def add_runs(sub: argparse._SubParsersAction) -> None:
    rs = sub.add_parser("runs", help="list the runs stored in S3")
    rs.add_argument("--json", action="store_true")
    rs.set_defaults(func=cmd_runs)


def add_history(sub: argparse._SubParsersAction) -> None:
    hi = sub.add_parser(
        "history",
        help="completed runs with their metrics and gate decisions, newest first; on a folder "
        "that grows, each run's training images, the learning curve's prediction and the residual",
    )
    hi.add_argument("--model")
    hi.add_argument("--track")
    hi.add_argument("--last", type=int, help="at most this many rows")
    hi.add_argument("--json", action="store_true")
    hi.set_defaults(func=cmd_history)
