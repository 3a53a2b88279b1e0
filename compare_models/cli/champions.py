"""`compare-models champion`, `promote` and `export`: the models in use per track with their
history, a person's promotion of a completed run's model (recorded with the reason, and
published for serving), and a model's serving export by hand."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store as _open_store
from compare_models.cli.console import print_line, print_table

if TYPE_CHECKING:
    from compare_models.runs.champion_record import ChampionEntry, ChampionRecord


def cmd_champion(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.storage.errors import StoreError

    try:
        settings, store = _open_store()
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
    rows = [_champion_row(t, r, r.current) for t, r in records if r.current]
    if settings.mlflow_tracking_uri is None:  # MLflow off: no column for it
        rows = [{k: v for k, v in row.items() if k != "mlflow"} for row in rows]
    print_table(rows, title="Champions")
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
        "served": f"v{entry.export.version}" if entry.export else "-",
        "mlflow": f"v{entry.export.mlflow_version}"
        if entry.export and entry.export.mlflow_version
        else "-",
        "reason": entry.reason,
    }


def cmd_promote(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.runs.stored import read_record
    from compare_models.storage.errors import StoreError

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
    return _hand_over(store, champion, track, "promote", record)


def _hand_over(store, champion, track: str, how: str, record=None) -> int:
    """Publishes the new champion for serving and emits the promotion event; says what it did."""
    from compare_models.events import CHAMPION_PROMOTED
    from compare_models.gate.publishing import hand_over

    entry = champion.current
    handed = hand_over(
        store,
        track=track,
        entry=entry,
        previous_run_id=champion.history[0].run_id if champion.history else None,
        how=how,
        record=record,
    )
    if handed.result is not None:
        print_line(
            f"published as version {handed.result.version} of {track}'s {entry.model}: "
            f"{store.uri(handed.result.prefix)}"
        )
    print_line(f"{CHAMPION_PROMOTED.name} emitted")
    _follow_in_mlflow(store, track, entry.model)
    if handed.error:
        return _fail(f"the champion changed, but its export was not published: {handed.error}")
    return 0


def _follow_in_mlflow(store, track: str, model: str) -> None:
    """When MLflow is on: the registry follows the champion (the version, `champion` and
    `previous`); what failed is said, and `compare-models mlflow sync` repairs it."""
    from compare_models.tracking import names
    from compare_models.tracking.registry import follow
    from compare_models.tracking.sink import Sink

    sink = Sink.open()
    if sink is None:
        return
    version = follow(sink, store, track, model)
    name = names.registered_name(track, model)
    if version is not None:
        print_line(f"MLflow: {name} version {version} is `{names.CHAMPION}`")
    for problem in sink.problems:
        print_line(f"MLflow: not done: {problem} (`compare-models mlflow sync` repairs it)")


def cmd_rollback(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.runs.stored import read_record
    from compare_models.storage.errors import StoreError

    try:
        _, store = _open_store()
        champion = champions.rollback(
            store, track=args.track, model=args.model, reason=args.reason or ""
        )
        entry = champion.current
        record = None if entry.export is not None else read_record(store, entry.run_id)
    except StoreError as exc:
        return _fail(str(exc))
    print_line(
        f"{args.model} champion of track {args.track}: run {entry.run_id} again (replaces "
        f"{champion.history[0].run_id}); {entry.reason}"
    )
    return _hand_over(store, champion, args.track, "rollback", record)


def _publish(store, record, model: str, track: str | None) -> int:
    """Exports `model` of `record`: as `track`'s next served version, or beside its run (None)."""
    from compare_models.gate.publishing import publish_champion
    from compare_models.serving.records import ExportFailed

    try:
        result = publish_champion(store, record, model, track=track)
    except ExportFailed as exc:
        return _fail(f"the export was not published: {exc}")
    where = (
        f"version {result.version} of {track}'s {model}"
        if result.version
        else f"beside run {record.run_id} (it is not the champion: never served)"
    )
    print_line(f"exported {model} of run {record.run_id} as {where}: {store.uri(result.prefix)}")
    for check in result.checks:
        print_line(f"  {check.describe()}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from compare_models.gate import champions
    from compare_models.runs.stored import read_record
    from compare_models.storage.errors import StoreError

    try:
        _, store = _open_store()
        record = read_record(store, args.run_id)
        if args.model not in record.models:
            return _fail(
                f"run {args.run_id} has no model {args.model!r}; it has {sorted(record.models)}"
            )
        track = args.track or record.track
        current, _ = champions.read(store, track, args.model)
        is_champion = bool(current and current.current and current.current.run_id == record.run_id)
    except StoreError as exc:
        return _fail(str(exc))
    return _publish(store, record, args.model, track if is_champion else None)


def add_champion(sub: argparse._SubParsersAction) -> None:
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


def add_promote(sub: argparse._SubParsersAction) -> None:
    pr = sub.add_parser(
        "promote",
        help="make a completed run's model the champion by hand (recorded with the reason)",
    )
    pr.add_argument("run_id")
    pr.add_argument("--model", required=True)
    pr.add_argument("--reason", required=True, help="why: kept in the champion's history")
    pr.add_argument("--track", help="default: the run's own track")
    pr.set_defaults(func=cmd_promote)


def add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser(
        "export",
        help="export a run's model for serving (SavedModel and ONNX, checked against the model): "
        "the champion as its track's next served version, any other model beside its run",
    )
    ex.add_argument("run_id")
    ex.add_argument("--model", required=True)
    ex.add_argument("--track", help="whose champion it may be (default: the run's own track)")
    ex.set_defaults(func=cmd_export)


def add_rollback(sub: argparse._SubParsersAction) -> None:
    rb = sub.add_parser(
        "rollback",
        help="make the previous champion the champion again (published as the next served version)",
    )
    rb.add_argument("--track", required=True)
    rb.add_argument("--model", required=True)
    rb.add_argument("--reason", help="why: kept in the champion's history")
    rb.set_defaults(func=cmd_rollback)
