"""The champion handed to serving: after the gate (or a person) makes a model the champion,
it is exported and published as the next served version (`compare_models.serving`), and the
champion record names that version and its URIs.

Two promotions of one track's model within an export's duration can publish in the other
order, so that the highest version is the earlier champion: each hand-over ends by serving the
champion again (`serve_the_champion`), so the last one to finish leaves the champion served."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from compare_models.config import ExportPolicy
from compare_models.evaluation.records import Evaluation
from compare_models.events import CHAMPION_PROMOTED, ChampionPromoted
from compare_models.gate.champions import read, update_current
from compare_models.runs.champion_record import ChampionEntry, ChampionExport, ChampionRecord
from compare_models.runs.decision import GateDecision
from compare_models.runs.record import RunRecord
from compare_models.serving.card import card_data, card_markdown
from compare_models.serving.export import export_in_own_process
from compare_models.serving.publish import republish, served_version, stored_export
from compare_models.serving.records import ExportFailed, ExportRequest, ExportResult
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore

log = logging.getLogger(__name__)


def export_request(
    record: RunRecord,
    model: str,
    *,
    track: str | None,
    decision: GateDecision | None = None,
    evaluation: Evaluation | None = None,
    threads: int = 1,
) -> ExportRequest:
    """The export of `model` of the completed run `record`: as `track`'s next served version,
    or (None) beside its run; with its model card."""
    if model not in record.models:
        raise ValueError(
            f"run {record.run_id} has no model {model!r}; it has {sorted(record.models)}"
        )
    card = card_data(record, model, decision, evaluation)
    return ExportRequest(
        run_id=record.run_id,
        model=model,
        model_key=record.models[model].model_key,
        dataset=record.dataset,
        track=track,
        policy=record.params.gate.export,
        card_markdown=card_markdown(card),
        card_json=card,
        threads=threads,
        store_outage_minutes=record.params.execution.store_outage_minutes,
    )


def note_export(store: ArtifactStore, result: ExportResult) -> ChampionRecord | None:
    """Names the export in the champion record when its run is still the champion (None: it no
    longer is, or there is no record)."""
    if result.track is None or result.version is None:
        return None
    exported = ChampionExport(
        version=result.version,
        prefix=store.uri(result.prefix),
        uris=result.uris,
        exported_at=result.exported_at,
    )
    return update_current(
        store,
        result.track,
        result.model,
        result.run_id,
        lambda current: current.model_copy(update={"export": exported}),
    )


def publish_champion(
    store: ArtifactStore,
    record: RunRecord,
    model: str,
    *,
    track: str | None,
    decision: GateDecision | None = None,
    evaluation: Evaluation | None = None,
    threads: int = 1,
) -> ExportResult:
    """Exports `model` of `record`, the champion of `track`, as its next served version, and
    names it in the champion record (`track` None: a model that is not its track's champion,
    beside its run). Raises `ExportFailed` (nothing published) when an export fails its
    check."""
    request = export_request(
        record, model, track=track, decision=decision, evaluation=evaluation, threads=threads
    )
    result = export_in_own_process(request, timeout=request.policy.timeout_s)
    note_export(store, result)
    return result


@dataclass(frozen=True)
class HandOver:
    """What serving got of a new champion: its published export, or why there is none."""

    result: ExportResult | None
    error: str | None


def hand_over(
    store: ArtifactStore,
    *,
    track: str,
    entry: ChampionEntry,
    previous_run_id: str | None,
    how: str,
    record: RunRecord | None = None,
    decision: GateDecision | None = None,
    evaluation: Evaluation | None = None,
    threads: int = 1,
) -> HandOver:
    """After `entry` became `track`'s champion (`how`: the gate, `promote` or `rollback`): its
    export published as the track's next served version (an earlier champion's own export
    copied again, else exported from `record`, its run), then `compare-models.champion.promoted`
    emitted. A failed export is returned, not raised: the champion stays the champion."""
    policy = record.params.gate.export if record is not None else ExportPolicy()
    result, error = None, None
    if policy.enabled:
        try:
            if entry.export is not None:
                result = republish(
                    store, track, entry.model, from_version=entry.export.version,
                    run_id=entry.run_id,
                )  # fmt: skip
                note_export(store, result)
            elif record is not None:
                result = publish_champion(
                    store, record, entry.model, track=track, decision=decision,
                    evaluation=evaluation, threads=threads,
                )  # fmt: skip
            else:
                error = "no export of it was kept and its run was not given"
        except ExportFailed as exc:
            error = str(exc)
        # with exports off, the served tree is left as it is: no earlier export is republished
        serve_the_champion(store, track, entry.model)
    CHAMPION_PROMOTED.emit(
        ChampionPromoted(
            track=track,
            model=entry.model,
            run_id=entry.run_id,
            previous_run_id=previous_run_id,
            how=how,
            accuracy=entry.metrics.accuracy,
            reason=entry.reason,
            export_version=result.version if result else None,
            export_uris=result.uris if result else {},
        )
    )
    return HandOver(result=result, error=error)


def serve_the_champion(store: ArtifactStore, track: str, model: str) -> ExportResult | None:
    """When the served (highest) version of `track`'s `model` is not its champion's export (a
    later promotion's export finished first), the champion's export published again as the next
    version; None when the champion is served already, or has no export."""
    record, _ = read(store, track, model)
    current = record.current if record else None
    if current is None or current.export is None:
        return None
    served = served_version(store, track, model)
    if served is None or served == current.export.version:
        return None
    top = stored_export(store, layout.export_version_prefix(track, model, served))
    if top is not None and top.run_id == current.run_id:
        return None
    log.warning(
        "version %s of %s's %s is not the champion's export (%s): publishing the champion again",
        served, track, model, current.export.version,
    )  # fmt: skip
    result = republish(
        store, track, model, from_version=current.export.version, run_id=current.run_id
    )
    note_export(store, result)
    return result
