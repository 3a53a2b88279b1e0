"""Experiments and runs found by our tags, or created: the one way a run, a training or a
registered version comes into MLflow, so that a retried task, a resumed run or a repeated sync
finds what an earlier attempt created instead of creating a second one."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, TypeVar

from compare_models.tracking import names
from compare_models.tracking.sink import Sink

if TYPE_CHECKING:
    from mlflow.entities import Run

T = TypeVar("T")

#: What may stand inside a filter's quotes: our run ids, training, model and track names (all
#: validated where they are made; checked again, since a record read back is untrusted).
_FILTER_VALUE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def quoted(value: str) -> str:
    if not _FILTER_VALUE.fullmatch(value):
        raise ValueError(f"{value[:40]!r} is not a run, model or track name")
    return f"'{value}'"


def created_or_found(create: Callable[[], T], find: Callable[[], T | None]) -> T:
    """`create()`; when it fails because another process created the same thing meanwhile,
    what `find()` finds instead (its own error again when `find` finds nothing)."""
    try:
        return create()
    except Exception:
        found = find()
        if found is None:
            raise
        return found


def experiment(sink: Sink, track: str) -> str | None:
    """The id of the track's experiment, created if missing (None: MLflow did not answer)."""
    name = names.experiment_name(track)

    def found_id() -> str | None:
        found = sink.client.get_experiment_by_name(name)
        return found.experiment_id if found is not None else None

    def find_or_create() -> str:
        found = sink.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                sink.client.restore_experiment(found.experiment_id)
            return found.experiment_id
        return created_or_found(
            lambda: sink.client.create_experiment(name, tags={names.KIND: "track"}), found_id
        )

    return sink.call(f"experiment {name}", find_or_create)


def find_run(sink: Sink, experiment_id: str, what: str, tags: Mapping[str, str]) -> Run | None:
    """The oldest run of the experiment with all of these tags (None: none, or no answer)."""
    where = " and ".join(f"tags.`{k}` = {quoted(v)}" for k, v in tags.items())
    found = sink.call(
        what,
        sink.client.search_runs,
        [experiment_id],
        where,
        max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    return found[0] if found else None


def find_or_create_run(
    sink: Sink,
    experiment_id: str,
    what: str,
    key_tags: Mapping[str, str],
    *,
    name: str,
    parent: str | None = None,
) -> str | None:
    """The id of the run with `key_tags`, created (with them) if there is none; a found run gets
    `parent` as its parent when it had another or none (None: no answer)."""
    if sink.down:
        sink.note(what, sink.down)
        return None
    found = find_run(sink, experiment_id, what, key_tags)
    if found is not None:
        if parent and found.data.tags.get(names.PARENT) != parent:
            sink.call(what, sink.client.set_tag, found.info.run_id, names.PARENT, parent)
        return found.info.run_id
    if sink.down:
        return None
    tags = {**key_tags, names.RUN_NAME: name, **({names.PARENT: parent} if parent else {})}
    created = sink.call(
        what, sink.client.create_run, experiment_id, start_time=int(time.time() * 1000), tags=tags
    )
    return created.info.run_id if created is not None else None


def parent_tags(run_id: str) -> dict[str, str]:
    return {names.RUN_ID: run_id, names.KIND: names.KIND_RUN}


def training_tags(run_id: str, training: str) -> dict[str, str]:
    return {names.RUN_ID: run_id, names.KIND: names.KIND_TRAINING, names.TRAINING: training}


def logged_steps(sink: Sink, mlflow_run_id: str, key: str, what: str) -> set[int] | None:
    """The steps of `key` the run already has (None: no answer)."""
    history = sink.call(what, sink.client.get_metric_history, mlflow_run_id, key)
    return None if history is None else {m.step for m in history}
