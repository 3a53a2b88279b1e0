"""The MLflow registry follows the champion records: one registered model per track and model
(`<track>-<model>`), a version per champion, the alias `champion` on the champion's version and
`previous` on the one it replaced.

A registered version is an MLflow model built from the champion's ONNX export (the one serving
gets, checked against the trained model before it was published): `mlflow.onnx`'s flavor, with a
signature (uint8 images `[N, H, W, 3]` in, probabilities per class out) and the class names in
its metadata and in `labels.txt`, so `mlflow.pyfunc.load_model("models:/<name>@champion")`
loads it without compare-models. The export's version is the counter; the MLflow version is
recorded beside it in the champion record (`ChampionExport.mlflow_version`).

`follow` is idempotent and reads only the champion record, so the gate, `promote`, `rollback`
and `sync` all call it, and whatever failed before is repaired the next time."""

from __future__ import annotations

import tempfile
from pathlib import Path

from compare_models.gate.champions import read, update_current
from compare_models.runs.champion_record import ChampionEntry, ChampionRecord
from compare_models.runs.stored import read_record
from compare_models.serving.publish import stored_export
from compare_models.storage import layout
from compare_models.storage.errors import StoreError
from compare_models.storage.store import ArtifactStore
from compare_models.tracking import lookup, names
from compare_models.tracking.sink import Sink


def previous_of(record: ChampionRecord) -> ChampionEntry | None:
    """The champion the current one replaced when it became champion: the newest former champion,
    or, after a rollback (the current run is in the history), the one before its earlier tenure."""
    if record.current is None:
        return None
    for index, former in enumerate(record.history):
        if former.run_id == record.current.run_id:
            return record.history[index + 1] if index + 1 < len(record.history) else None
    return record.history[0] if record.history else None


def registered_version(sink: Sink, name: str, run_id: str, what: str) -> int | None:
    """The version of `name` registered for run `run_id` (None: none, or no answer)."""
    found = sink.call(
        what,
        sink.client.search_model_versions,
        f"name = {lookup.quoted(name)} and tags.`{names.RUN_ID}` = {lookup.quoted(run_id)}",
    )
    versions = sorted(int(v.version) for v in found or [])
    return versions[0] if versions else None


def _ensure_registered_model(sink: Sink, name: str, track: str, model: str, what: str) -> bool:
    def exists() -> bool:
        return bool(sink.client.search_registered_models(f"name = {lookup.quoted(name)}"))

    def create() -> None:
        if exists():
            return
        lookup.created_or_found(
            lambda: sink.client.create_registered_model(
                name,
                tags={names.MODEL: model, "compare_models.track": track},
                description=f"The {model} champions of compare-models' track {track!r}.",
            ),
            lambda: True if exists() else None,
        )

    return sink.done(what, create)


def _mlflow_model(store: ArtifactStore, prefix: str, folder: Path) -> dict[str, str]:
    """The export under `prefix` as an MLflow model in `folder` (ONNX flavor, with a signature);
    returns the tags its registered version gets."""
    import mlflow.onnx
    import numpy as np
    import onnx
    import onnxruntime
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    export = stored_export(store, prefix)
    if export is None or "model.onnx" not in export.uris:
        raise StoreError(f"{store.uri(prefix)} holds no complete ONNX export")
    onnx_file = store.download(prefix + "model.onnx", folder / "model.onnx")
    graph = onnx.load(str(onnx_file))
    size = export.input
    signature = ModelSignature(
        inputs=Schema(
            [
                TensorSpec(
                    np.dtype("uint8"),
                    (-1, size.height, size.width, size.channels),
                    graph.graph.input[0].name,
                )
            ]
        ),
        outputs=Schema(
            [
                TensorSpec(np.dtype("float32"), (-1, len(export.class_names)), o.name)
                for o in graph.graph.output
            ]
        ),
    )
    saved = folder / "mlflow-model"
    mlflow.onnx.save_model(
        graph,
        str(saved),
        signature=signature,
        # what loading it needs, pinned to what checked the export; given, since MLflow would
        # otherwise infer them by loading the model in a subprocess, nearly all of a save's
        # time (docs/benchmarks.md, "The MLflow sink")
        pip_requirements=[
            f"mlflow=={mlflow.__version__}",
            f"onnx=={onnx.__version__}",
            f"onnxruntime=={onnxruntime.__version__}",
            f"numpy=={np.__version__}",
        ],
        metadata={
            "class_names": list(export.class_names),
            "input": size.model_dump(mode="json"),
            "run_id": export.run_id,
            "export_version": export.version,
            "export": store.uri(prefix),
        },
    )
    (saved / "labels.txt").write_text("".join(f"{n}\n" for n in export.class_names))
    return {
        names.RUN_ID: export.run_id,
        names.MODEL: export.model,
        names.EXPORT_VERSION: str(export.version),
        names.EXPORT_URI: store.uri(prefix),
    }


def _register(
    sink: Sink,
    store: ArtifactStore,
    track: str,
    entry: ChampionEntry,
    what: str,
    known: dict[str, str],
) -> int | None:
    """Registers `entry` (a champion with an export) as the next version of `<track>-<model>`,
    logged as an MLflow model in its run's parent MLflow run (`known`: our run id → that MLflow
    run, for a run being logged now, whose record is not written yet)."""
    from compare_models.tracking.runs import ensure_logged

    name = names.registered_name(track, entry.model)
    if entry.export is None:
        sink.note(
            what,
            "it has no serving export, which its registered version is built from "
            f"(`compare-models export {entry.run_id} --model {entry.model}`, then `mlflow sync`)",
        )
        return None
    parent = known.get(entry.run_id)
    if parent is None:
        try:
            record = read_record(store, entry.run_id)
        except StoreError as exc:
            sink.note(what, f"its run's record cannot be read: {exc}")
            return None
        parent = ensure_logged(sink, store, record, by="registry").run_id
    if parent is None or not _ensure_registered_model(sink, name, track, entry.model, what):
        return None
    prefix = layout.export_version_prefix(track, entry.model, entry.export.version)
    artifacts = f"{names.REGISTERED_ARTIFACTS}/{entry.model}-export-{entry.export.version}"
    with tempfile.TemporaryDirectory(prefix="mlflow-model-") as tmp:
        try:
            tags = _mlflow_model(store, prefix, Path(tmp))
        except (StoreError, ValueError, OSError) as exc:
            sink.note(what, f"the export could not be made an MLflow model: {exc}")
            return None
        if not sink.done(what, sink.client.log_artifacts, parent, f"{tmp}/mlflow-model", artifacts):
            return None
    run = sink.call(what, sink.client.get_run, parent)
    if run is None:
        return None
    created = sink.call(
        what,
        sink.client.create_model_version,
        name,
        f"{run.info.artifact_uri}/{artifacts}",
        run_id=parent,
        tags=tags,
        description=f"{entry.model} of run {entry.run_id}: {entry.reason}"[:5000],
    )
    return int(created.version) if created is not None else None


def _version(
    sink: Sink, store: ArtifactStore, track: str, entry: ChampionEntry, known: dict[str, str]
) -> int | None:
    """The registered version of a champion (an earlier one's again after a rollback), registered
    now when it has none."""
    name = names.registered_name(track, entry.model)
    what = f"{name}: run {entry.run_id} in the registry"
    found = registered_version(sink, name, entry.run_id, what)
    if found is not None or sink.down:
        return found
    return _register(sink, store, track, entry, what, known)


def _alias(sink: Sink, name: str, alias: str, version: int | None) -> None:
    what = f"{name}@{alias}"
    if version is not None:
        sink.call(what, sink.client.set_registered_model_alias, name, alias, str(version))
        return
    current = sink.call(what, sink.client.get_registered_model, name)
    if current is not None and alias in (current.aliases or {}):
        sink.call(what, sink.client.delete_registered_model_alias, name, alias)


def follow(
    sink: Sink,
    store: ArtifactStore,
    track: str,
    model: str,
    known: dict[str, str] | None = None,
) -> int | None:
    """Makes MLflow's registry agree with the champion record of `track`'s `model`: the champion
    registered (built from its export), `champion` on it, `previous` on the one it replaced (or
    on none), and its MLflow version recorded beside its export. Returns that version (None: no
    champion, or not registered; what failed is in `sink.problems`)."""
    record, _ = read(store, track, model)
    if record is None or record.current is None:
        return None
    name = names.registered_name(track, model)
    known = known or {}
    current = _version(sink, store, track, record.current, known)
    if current is None:
        return None
    _alias(sink, name, names.CHAMPION, current)
    previous = previous_of(record)
    earlier = _version(sink, store, track, previous, known) if previous is not None else None
    _alias(sink, name, names.PREVIOUS, earlier)

    def noted(entry: ChampionEntry) -> ChampionEntry | None:
        if entry.export is None or entry.export.mlflow_version == current:
            return None
        export = entry.export.model_copy(update={"mlflow_version": current})
        return entry.model_copy(update={"export": export})

    update_current(store, track, model, record.current.run_id, noted)
    return current
