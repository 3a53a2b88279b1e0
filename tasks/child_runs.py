"""Child flow runs through the Prefect API: waiting with a start deadline, cancelling
left-overs of earlier attempts, and a training's check that it still owns its run."""

from __future__ import annotations

import time
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling

from compare_models.training.jobs import TrainingFailed


class Superseded(RuntimeError):
    """This flow run was declared finished (e.g. Crashed by the zombie-run automation while
    it was in fact alive) and a newer attempt may own the run's keys: do not publish."""


def wait_until_final(
    child: FlowRun, poll_seconds: float, start_timeout_seconds: float, *, run_timeout_seconds: float
) -> FlowRun:
    """The child flow run once it reached a final state (`run_deployment`'s own wait, with deadlines).

    A child that no worker has started within `start_timeout_seconds` (no worker on the
    pool, or one that died after claiming it: such a run sends no heartbeats) is cancelled
    and the attempt fails, instead of the parent waiting forever; so is one still running
    `run_timeout_seconds` after this wait began (the worker then stops its process).
    """
    deadline = time.monotonic() + start_timeout_seconds
    run_deadline = time.monotonic() + run_timeout_seconds
    with get_client(sync_client=True) as client:
        while True:
            flow_run = client.read_flow_run(child.id)
            state = flow_run.state
            if state and state.is_final():
                return flow_run
            waiting = state is None or state.is_scheduled() or state.is_pending()
            if waiting and time.monotonic() > deadline:
                message = (
                    f"no worker of the {flow_run.work_pool_name!r} work pool started {flow_run.name} within "
                    f"{start_timeout_seconds:g} s"
                )
                client.set_flow_run_state(child.id, Cancelled(message=message), force=True)
                raise TrainingFailed(
                    f"{message}. Start one (`compare-models up --workers` locally, or `prefect worker "
                    f"start --pool {flow_run.work_pool_name}`), or raise execution.start_timeout_seconds."
                )
            if time.monotonic() > run_deadline:
                message = f"{flow_run.name} ran past {run_timeout_seconds / 60:g} minutes"
                client.set_flow_run_state(child.id, Cancelling(message=message), force=True)
                raise TrainingFailed(
                    f"{message} (execution.training_timeout_minutes); it was cancelled"
                )
            time.sleep(poll_seconds)


def cancel_earlier_attempts(child: FlowRun, logger: Any) -> None:
    """Cancels unfinished children of earlier attempts (their parent lost track of them, e.g.
    over an API outage), so two attempts never train the same model of a run at once."""
    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    with get_client(sync_client=True) as client:
        for stale in client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[child.id]),
                name=FlowRunFilterName(any_=[child.name]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
            ),
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[child.deployment_id])),
        ):
            logger.warning(
                "cancelling %s (%s), left over from an earlier attempt", stale.name, stale.id
            )
            client.set_flow_run_state(
                stale.id, Cancelling(message="superseded by a newer attempt"), force=True
            )


def ensure_still_running(flow_run_id, logger) -> None:
    """Raises Superseded when the server no longer sees this flow run as Running. An API
    that cannot be reached is not a reason to throw away a finished training: then it only warns."""
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except Exception as exc:
        logger.warning(
            "could not read this flow run's state before publishing (%s); publishing anyway", exc
        )
        return
    if state is not None and not state.is_running():
        raise Superseded(
            f"this flow run is {state.name} on the server ({state.message or 'no message'}); a newer "
            "attempt may be training this model, so this one publishes nothing"
        )


def flow_run_alive(flow_run_id: str) -> bool:
    """Whether a flow run may still be writing: not in a final state. An id the server does not
    know (e.g. a local run without a flow run) is not alive; an unreachable API counts as alive,
    so that nothing is taken over on a guess."""
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state
    except ObjectNotFound:
        return False
    except ValueError:  # not a UUID: a `local-...` owner
        return False
    except Exception:
        return True
    return state is None or not state.is_final()
