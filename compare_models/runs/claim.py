"""Who may write a run's prefix: a completed run is immutable, and two flow runs never write
one run id at once (a conditional put of `runs/<run-id>/claim.json`). Plain functions."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from compare_models.runs.stored import read_record
from compare_models.storage import layout
from compare_models.storage.errors import PreconditionFailed, StoreError
from compare_models.storage.store import ArtifactStore


class RunExists(StoreError):
    pass


class RunClaimed(StoreError):
    """Another live flow run is writing this run id."""


def new_run_id(now: datetime, suffix: str) -> str:
    return f"{now.astimezone(UTC):%Y%m%d-%H%M%S}-{suffix[:8]}"


def guard_run_prefix(store: ArtifactStore, run_id: str) -> str:
    """A completed run is immutable: refuse to write into its prefix. The one exception is a
    run the time budget stopped: a later run with its id continues it (its manifest is kept
    under `previous/`). Returns "new" or "continuing"."""
    if store.exists(layout.manifest_key(run_id)):
        if read_record(store, run_id).stopped_by_budget:
            return "continuing"
        raise RunExists(
            f"run {run_id!r} is already complete ({store.uri(layout.manifest_key(run_id))}); its objects are never "
            "overwritten. Leave run_id unset for a fresh id, or choose another."
        )
    return "new"


def claim_run(
    store: ArtifactStore, run_id: str, owner: str, *, owner_alive: Callable[[str], bool]
) -> str:
    """Claims the run prefix for `owner` (a flow run id) before anything is written to it.

    The claim is a conditional put, so of two runs started with the same run id at once
    exactly one writes. A claim held by `owner` itself (a retry) is kept; one held by a
    writer that is no longer alive is taken over, again conditionally: a re-run that
    resumes a failed, crashed or killed run. Alive means: `owner_alive(flow_run_id)` (the
    flow run is not in a final state) and, on this host, the claiming process still exists
    (pid and start time), so a run killed here is taken over at once. Returns how the run
    was claimed.
    """
    key = layout.claim_key(run_id)
    me = process_identity()
    for _ in range(3):
        claim, etag = store.get_json_versioned(key)
        holder = claim.get("owner") if isinstance(claim, dict) else None
        if holder == owner:
            return "already ours"
        if holder is not None and _claim_alive(claim, owner_alive):
            raise RunClaimed(
                f"run {run_id!r} is being written by flow run {holder} (claimed {claim.get('at')}); two runs "
                "never write one run id at once. Wait for it to finish, cancel it, or choose another run_id."
            )
        try:
            store.put_json_if(
                {
                    "owner": owner,
                    "at": datetime.now(UTC).isoformat(),
                    "previous": holder,
                    **me,
                },
                key,
                etag=etag,
            )
            return "claimed" if holder is None else f"taken over from {holder} (no longer running)"
        except PreconditionFailed:
            continue  # someone claimed or took over meanwhile: look again
    raise RunClaimed(
        f"run {run_id!r} was claimed by another flow run at the same moment; choose another run_id"
    )


def process_identity() -> dict[str, Any]:
    """This process as a claim records it: host, pid and the pid's start time."""
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": psutil.Process().create_time(),
    }


def _claim_alive(claim: dict[str, Any], owner_alive: Callable[[str], bool]) -> bool:
    """The holder may still write: its flow run is not finished and, on this host, its process exists."""
    if claim.get("host") == socket.gethostname() and isinstance(claim.get("pid"), int):
        import psutil

        try:
            if (
                abs(psutil.Process(claim["pid"]).create_time() - float(claim.get("pid_started", 0)))
                >= 1
            ):
                return False  # the pid was reused: the claiming process is gone
        except (psutil.Error, TypeError, ValueError):
            return False  # that process is gone: a killed run
    return owner_alive(str(claim["owner"]))
