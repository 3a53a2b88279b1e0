"""What changed in a folder source's data since the champion's version and the track's previous
run: a typed part of the run record (`DataChanges`) and the markdown of its Prefect artifact
(the report draws its class-balance figure: `compare_models.report.class_balance`)."""

from __future__ import annotations

from collections.abc import Sequence

from compare_models.data.errors import DataError
from compare_models.data.versions import DatasetVersion, changes, read_version
from compare_models.gate import champions
from compare_models.runs.record import ClassDelta, DataChanges, RunRecord, SkippedFile
from compare_models.storage.store import ArtifactStore

#: Skipped files listed by name in the record and report (the version lists every one).
MAX_SKIPPED_LISTED = 200


def _version(store: ArtifactStore, version_id: str | None) -> DatasetVersion | None:
    if not version_id:
        return None
    try:
        return read_version(store, version_id)
    except DataError:
        return None  # removed or damaged: the change against it is not shown


def _deltas(old: DatasetVersion | None, new: DatasetVersion) -> dict[str, ClassDelta]:
    if old is None:
        return {}
    return {c: ClassDelta(added=d.added, removed=d.removed) for c, d in changes(old, new).items()}


def data_changes(
    store: ArtifactStore, record: RunRecord, completed: Sequence[RunRecord]
) -> DataChanges | None:
    """The run's data changes (None unless its data is a dataset version)."""
    version_id = record.dataset.version_id
    if not version_id:
        return None
    current = read_version(store, version_id)
    champion_versions = []
    for model in record.params.models:
        champion, _ = champions.read(store, record.track, model)
        found = champion.current.dataset.version_id if champion and champion.current else None
        if found:
            champion_versions.append(found)
    champion_id = champion_versions[0] if champion_versions else None
    previous = next(
        (
            r
            for r in completed
            if r.run_id != record.run_id and r.track == record.track and r.dataset.version_id
        ),
        None,
    )
    previous_id = previous.dataset.version_id if previous else None
    skipped = current.skipped_rows()
    return DataChanges(
        version_id=version_id,
        champion_version_id=champion_id,
        previous_version_id=previous_id,
        previous_run_id=previous.run_id if previous else None,
        since_champion=_deltas(_version(store, champion_id), current),
        since_previous=_deltas(_version(store, previous_id), current),
        counts={c: dict(n) for c, n in current.summary.counts.items()},
        duplicates=current.summary.duplicates,
        skipped_total=len(skipped),
        skipped=[SkippedFile(key=r.key, reason=r.skipped) for r in skipped[:MAX_SKIPPED_LISTED]],
    )


def markdown(changes: DataChanges) -> str:
    """The data changes as a markdown table (Prefect artifact)."""

    def delta(d: dict[str, ClassDelta], c: str) -> str:
        return f"+{d[c].added} / -{d[c].removed}" if c in d else "-"

    lines = [
        f"# Data: version `{changes.version_id[:12]}`",
        "",
        f"Since the champion's version `{(changes.champion_version_id or '-')[:12]}` and the "
        f"previous run's `{(changes.previous_version_id or '-')[:12]}`; {changes.duplicates} "
        f"duplicate(s), {changes.skipped_total} file(s) skipped.",
        "",
        "| class | train | val | test | since champion | since previous run |",
        "|---|---|---|---|---|---|",
    ]
    for c, n in changes.counts.items():
        lines.append(
            f"| {c} | {n.get('train', 0)} | {n.get('val', 0)} | {n.get('test', 0)} | "
            f"{delta(changes.since_champion, c)} | {delta(changes.since_previous, c)} |"
        )
    if changes.skipped:
        lines += ["", "| skipped file | reason |", "|---|---|"]
        lines += [
            f"| `{s.key.replace('|', '%7C')}` | {s.reason.replace('|', '/')} |"
            for s in changes.skipped
        ]
    return "\n".join(lines) + "\n"
