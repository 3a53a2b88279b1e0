"""The Prefect events the pipeline emits, declared once: each event's name, its typed payload,
its resource labels, when it is emitted and by what.

    payload = ModelRegressed(run_id=..., model=..., ...)
    MODEL_REGRESSED.emit(payload)  # builds the resource from the payload, then emit_event

The emitting code (the gate's `alert` task, the `data-watch` flow) builds the payload and calls
`emit`; the regression automation (deployments/alerts.py) and prefect.yaml's triggers match the
declared names and resources (a test holds prefect.yaml to them); the reference page
docs/reference/events.md is generated from `EVENTS`.

This module sits beside `config` rather than in a stage: the gate emits one event and the data
watch the other, and the deployments react to both, so neither stage owns the vocabulary.
It imports only the run's record (for the interval type the regression payload carries).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from compare_models.statistics.records import Interval


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Labels(BaseModel):
    """Resource labels: Prefect's label names are dotted, so each field carries its label as
    its alias (`model_dump(by_alias=True)` gives what `emit_event` takes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def labels(self) -> dict[str, str]:
        return self.model_dump(by_alias=True)


# ── compare-models.model.regressed ─────────────────────────────────────────────


class ModelRegressed(_Payload):
    """The gate judged a model of a run a regression against the champion of its track."""

    run_id: str = Field(description="the run whose model regressed")
    model: str = Field(description="the model that regressed")
    track: str = Field(description="the champion track it was judged on")
    reason: str = Field(description="the gate's reason, in words")
    champion_run_id: str | None = Field(description="the run of the champion it was judged against")
    manifest: str = Field(description="the run's manifest (s3:// URI)")
    accuracy_difference: Interval | None = Field(
        description="challenger minus champion test accuracy, with its interval (None without "
        "a paired comparison)"
    )
    mcnemar_pvalue: float | None = Field(
        description="McNemar's test of the paired predictions (None without a paired comparison)"
    )
    worse_classes: list[str] = Field(
        description="the classes significantly worse than the champion's (Holm)"
    )


class RunModelResource(_Labels):
    id: str = Field(
        alias="prefect.resource.id",
        description="`compare-models.run.<run>.<model>` (what the regression automation matches)",
    )
    name: str = Field(alias="prefect.resource.name", description="`<run> <model>`")
    run_id: str = Field(alias="compare-models.run-id", description="the run")
    model: str = Field(alias="compare-models.model", description="the model")


def _regressed_resource(payload: ModelRegressed) -> RunModelResource:
    run_id, model = payload.run_id, payload.model
    return RunModelResource(
        id=f"compare-models.run.{run_id}.{model}",
        name=f"{run_id} {model}",
        run_id=run_id,
        model=model,
    )


def _run_and_model(run_id: str, model: str) -> list[dict[str, str]]:
    """The related resources of an event about one model of one run."""
    return [
        {"prefect.resource.id": f"compare-models.run.{run_id}", "prefect.resource.role": "run"},
        {"prefect.resource.id": f"compare-models.model.{model}", "prefect.resource.role": "model"},
    ]


def _regressed_related(payload: ModelRegressed) -> list[dict[str, str]]:
    return _run_and_model(payload.run_id, payload.model)


# ── compare-models.data.changed ────────────────────────────────────────────────


class DataChanged(_Payload):
    """A watched folder source has a new dataset version."""

    source: str = Field(description="the folder (a directory or s3://bucket/prefix/)")
    version_id: str = Field(description="the new dataset version (SHA-256)")
    parent: str | None = Field(description="the version it grew from (None for the first)")
    images: int = Field(description="images in the new version")
    added: int = Field(description="images added since the parent version, all classes")
    removed: int = Field(description="images removed since the parent version, all classes")
    skipped: int = Field(description="files skipped, each with its reason in the version's rows")
    per_class: dict[str, int] = Field(description="images per class, all splits")


class DatasetResource(_Labels):
    id: str = Field(
        alias="prefect.resource.id",
        description="`compare-models.dataset.<first 16 hex digits of the source's SHA-256>` "
        "(what the nightly's trigger in prefect.yaml matches)",
    )
    name: str = Field(alias="prefect.resource.name", description="the folder source")
    version_id: str = Field(alias="compare-models.version-id", description="the new version")


def dataset_resource_id(location: str) -> str:
    """The event resource of a folder source (what a trigger matches)."""
    return f"compare-models.dataset.{hashlib.sha256(location.encode()).hexdigest()[:16]}"


def _changed_resource(payload: DataChanged) -> DatasetResource:
    return DatasetResource(
        id=dataset_resource_id(payload.source), name=payload.source, version_id=payload.version_id
    )


# ── compare-models.champion.promoted ───────────────────────────────────────────


class ChampionPromoted(_Payload):
    """A track's champion changed: the gate promoted a model, a person promoted one by hand, or a
    rollback made the previous champion the champion again."""

    track: str = Field(description="the track whose champion changed")
    model: str = Field(description="the model")
    run_id: str = Field(description="the run of the new champion")
    previous_run_id: str | None = Field(description="the run of the champion it replaced")
    how: str = Field(description="`gate`, `promote` or `rollback`")
    accuracy: float = Field(description="the new champion's test accuracy")
    reason: str = Field(description="why, in words")
    export_version: int | None = Field(
        description="the served export version it was published as (None: not exported)"
    )
    export_uris: dict[str, str] = Field(
        description="the export's files by name (model.onnx, saved_model.pb, ...), s3:// URIs"
    )


class TrackModelResource(_Labels):
    id: str = Field(
        alias="prefect.resource.id",
        description="`compare-models.champion.<track>.<model>` (what prefect.yaml's batch "
        "prediction trigger matches)",
    )
    name: str = Field(alias="prefect.resource.name", description="`<track> <model>`")
    track: str = Field(alias="compare-models.track", description="the track")
    model: str = Field(alias="compare-models.model", description="the model")


def champion_resource_id(track: str, model: str) -> str:
    return f"compare-models.champion.{track}.{model}"


def _promoted_resource(payload: ChampionPromoted) -> TrackModelResource:
    return TrackModelResource(
        id=champion_resource_id(payload.track, payload.model),
        name=f"{payload.track} {payload.model}",
        track=payload.track,
        model=payload.model,
    )


def _promoted_related(payload: ChampionPromoted) -> list[dict[str, str]]:
    return _run_and_model(payload.run_id, payload.model)


# ── the declarations ───────────────────────────────────────────────────────────

P = TypeVar("P", bound=_Payload)


@dataclass(frozen=True)
class Event(Generic[P]):
    """One event: its name, payload type and resource, and the sentence the reference prints."""

    name: str
    when: str
    emitted_by: str  # "module:function", the one place that emits it
    payload: type[P]
    resource_type: type[_Labels]
    resource_match: str  # the `prefect.resource.id` pattern automations and triggers match
    resource: Callable[[P], _Labels]
    related: Callable[[P], list[dict[str, str]]] = lambda _: []

    def emit(self, payload: P) -> None:
        """Emits the event to Prefect (a no-op outside a Prefect API, as `emit_event` is)."""
        from prefect.events import emit_event

        emit_event(
            event=self.name,
            resource=self.resource(payload).labels(),
            related=self.related(payload) or None,
            payload=payload.model_dump(mode="json"),
        )


MODEL_REGRESSED: Event[ModelRegressed] = Event(
    name="compare-models.model.regressed",
    when="the gate judged a model a regression (one event per model)",
    emitted_by="tasks.gate:alert",
    payload=ModelRegressed,
    resource_type=RunModelResource,
    resource_match="compare-models.run.*",
    resource=_regressed_resource,
    related=_regressed_related,
)

DATA_CHANGED: Event[DataChanged] = Event(
    name="compare-models.data.changed",
    when="a watched folder source has a new version (new, removed or changed images)",
    emitted_by="flows.data_watch:data_watch",
    payload=DataChanged,
    resource_type=DatasetResource,
    resource_match="compare-models.dataset.*",
    resource=_changed_resource,
)

CHAMPION_PROMOTED: Event[ChampionPromoted] = Event(
    name="compare-models.champion.promoted",
    when="a track's champion changed: by the gate, by `promote` or by `rollback` (one event "
    "per model), after its export was published",
    emitted_by="compare_models.gate.publishing:hand_over",
    payload=ChampionPromoted,
    resource_type=TrackModelResource,
    resource_match="compare-models.champion.*",
    resource=_promoted_resource,
    related=_promoted_related,
)

#: Every event the pipeline emits, by name.
EVENTS: dict[str, Event] = {e.name: e for e in (MODEL_REGRESSED, DATA_CHANGED, CHAMPION_PROMOTED)}
