"""`data-watch`: a small flow on the CPU pool, on a short schedule, that snapshots a folder
source and, when its content changed, emits `compare-models.data.changed` with the new
version's id and counts. The nightly deployment can be triggered by that event (prefect.yaml;
off by default).

An unchanged folder costs one listing and two small reads (the source's latest pointer and
its version); a grown one downloads and decodes only the new files, which the next training
run then finds decoded already.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from compare_models.config import ExecutionParams, FolderPolicy, SplitSpec
from compare_models.data.dataset import folder_name, folder_split_spec
from compare_models.data.errors import DataError
from compare_models.data.folders import folder_source
from compare_models.data.snapshot import snapshot
from compare_models.data.versions import VersionSummary
from compare_models.events import DATA_CHANGED, DataChanged
from tasks._store import open_store

DEFAULT_SPLIT, DEFAULT_FOLDER = SplitSpec(), FolderPolicy()


@task(name="snapshot-folder")
def snapshot_folder(
    data: str, split: SplitSpec, folder: FolderPolicy
) -> tuple[VersionSummary, bool]:
    source = folder_source(data.strip())
    if source is None:
        raise DataError(
            f"data-watch watches a folder of images (a directory or s3://bucket/prefix/ ending in "
            f"'/'), not {data[:200]!r}: set the deployment's `data` parameter"
        )
    _, store = open_store(ExecutionParams().store_outage_minutes)
    snap = snapshot(
        source, store, folder_split_spec(split), folder, name=folder_name(source.location)
    )
    get_run_logger().info(
        "%s: version %s, %d files listed, %d read, %d decoded (%.1f s)",
        source.location,
        snap.version.version_id[:12],
        snap.listed,
        snap.downloaded,
        snap.decoded,
        snap.seconds,
    )
    return snap.version.summary, snap.changed


@flow(name="data-watch", persist_result=False)
def data_watch(
    data: str, split: SplitSpec = DEFAULT_SPLIT, folder: FolderPolicy = DEFAULT_FOLDER
) -> dict[str, Any]:
    """Snapshot the folder `data`; emit `compare-models.data.changed` when it changed."""
    summary, changed = snapshot_folder(data, split, folder)
    added = sum(c.added for c in summary.changes.values())
    removed = sum(c.removed for c in summary.changes.values())
    if changed:
        DATA_CHANGED.emit(
            DataChanged(
                source=summary.source,
                version_id=summary.version_id,
                parent=summary.parent,
                images=summary.images,
                added=added,
                removed=removed,
                skipped=summary.skipped,
                per_class={c: sum(n.values()) for c, n in summary.counts.items()},
            )
        )
        get_run_logger().info(
            "new version %s (+%d / -%d images): %s emitted",
            summary.version_id[:12],
            added,
            removed,
            DATA_CHANGED.name,
        )
    return {
        "version_id": summary.version_id,
        "changed": changed,
        "added": added,
        "removed": removed,
    }
