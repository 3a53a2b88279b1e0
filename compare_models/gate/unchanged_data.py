"""`skip_if_unchanged`: whether a run of a folder source may skip training because the data is
the version every model's champion was trained on."""

from __future__ import annotations

from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef
from compare_models.gate import champions
from compare_models.runs.record import SkippedRun
from compare_models.storage.store import ArtifactStore


def skipped_run(
    store: ArtifactStore, params: RunParams, run_id: str, dataset: DatasetRef
) -> SkippedRun | None:
    """The skipped run, when `params.skip_if_unchanged` is set, the data is a dataset version
    and each model's champion on the track was trained on that same version; else None."""
    if not params.skip_if_unchanged or not dataset.version_id:
        return None
    found: dict[str, str] = {}
    for model in params.models:
        record, _ = champions.read(store, params.gate.track, model)
        current = record.current if record else None
        if current is None or current.dataset.version_id != dataset.version_id:
            return None
        found[model] = current.run_id
    return SkippedRun(
        run_id=run_id,
        reason=(
            f"skipped: the data ({dataset.source}) is dataset version {dataset.version_id[:12]}, "
            f"the one the champions of track {params.gate.track!r} were trained on "
            f"({', '.join(f'{m}: run {r}' for m, r in found.items())}); skip_if_unchanged is set"
        ),
        version_id=dataset.version_id,
        champions=found,
    )
