"""`compare-models watch [FLOW_RUN]`: a run's trainings as they go, for a run this process did not
start (a deployment run, the nightly schedule, a run someone else triggered).

It reads what every training already sends to the Prefect server, its epoch log lines
(`training.EpochLogger`, parsed by `cli.progress.EpochLine`), and the flow runs' states. On a
terminal it draws one bar per training (epoch i/N, loss, accuracy, images/s, time left) under a
line with the run's state and the tasks running now. Off a terminal it prints each epoch line
once, each training's end and the run's state changes, and nothing else (no heartbeats). It ends
with the run: exit code 0 when the run completed, 1 when it failed, crashed or was cancelled (or
`--timeout` passed first).

FLOW_RUN is a flow run id or name; without it, the newest run of `--deployment` that is due (a
run just made by `prefect deployment run`, not the next night's scheduled one).
"""

from __future__ import annotations

import argparse
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from compare_models.cli.common import export_settings
from compare_models.cli.common import fail as _fail
from compare_models.cli.console import console, print_line
from compare_models.cli.progress import EpochLogReader
from compare_models.config import Settings
from compare_models.data.safety import reason_of, redact_url

POLL_SECONDS = 2.0
DEFAULT_DEPLOYMENT = "compare-models/nightly"
#: The state types (`StateType`, a str enum) of a training that has not started yet: its
#: "Submitting" (a Pending state) is not shown as a start.
_NOT_STARTED = ("SCHEDULED", "PENDING")
#: Prefect names a task run `<task>-<3 hex digits>` unless the task names it ("train-cnn").
_TASK_SUFFIX = re.compile(r"-[0-9a-f]{3}$")


class WatchError(Exception):
    """No flow run to watch: the message says which and what to do."""


def _find_flow_run(client, flow_run: str | None, deployment: str):
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
        FlowRunFilterName,
    )
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    if flow_run:
        try:
            return client.read_flow_run(uuid.UUID(flow_run))
        except ValueError:  # not an id: a name
            pass
        except ObjectNotFound:
            raise WatchError(f"no flow run has the id {flow_run}") from None
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[flow_run])), limit=2
        )
        if len(found) != 1:
            raise WatchError(
                f"{'no' if not found else 'more than one'} flow run is named {flow_run!r}: "
                "give its id (the Prefect UI and `prefect flow-run ls` show it)"
            )
        return found[0]
    try:
        dep = client.read_deployment_by_name(deployment)
    except ObjectNotFound:
        raise WatchError(
            f"no deployment {deployment!r} on this Prefect server: `compare-models deploy` "
            "creates it, or give a flow run id"
        ) from None
    found = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
        flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(before_=datetime.now(UTC))
        ),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC,
        limit=1,
    )
    if not found:
        raise WatchError(
            f"deployment {deployment!r} has no run due yet: "
            f"`prefect deployment run '{deployment}'` starts one"
        )
    return found[0]


def _run_id(flow_run) -> str | None:
    """Our run id, from the compare-models flow's run name "<run-id> [cnn+resnet50]"; None until
    the flow has started and named its run."""
    name = flow_run.name or ""
    head, sep, _ = name.partition(" [")
    return head if sep and head else None


def _running_tasks(client, flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING]))
        ),
    )
    return sorted({_TASK_SUFFIX.sub("", r.name) for r in runs})


@dataclass
class _Seen:
    """What has been shown already, so that a poll shows only what is new."""

    logs: EpochLogReader = field(default_factory=EpochLogReader)
    states: dict[str, str] = field(default_factory=dict)

    def changed(self, name: str, state: str | None) -> bool:
        if state is None or self.states.get(name) == state:
            return False
        self.states[name] = state
        return True


class _Plain:
    """Off a terminal: one line per event, nothing redrawn."""

    def status(self, text: str) -> None:
        pass

    def event(self, text: str) -> None:
        print_line(text)

    def epoch(self, log) -> None:
        print_line(f"{log.timestamp:%H:%M:%S} {log.line.text}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Live:
    """On a terminal: the run's state line above one bar per training."""

    def __init__(self, out):
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        from compare_models.cli.progress import TrainingProgress, progress_bars

        self.text = Text("")
        self.progress = progress_bars(out)
        self.bars = TrainingProgress(self.progress)
        self.live = Live(Group(self.text, self.progress), console=out, refresh_per_second=4)

    def status(self, text: str) -> None:
        self.text.plain = text

    def event(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False)

    def epoch(self, log) -> None:
        self.bars.show(log.line)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        return self.live.__exit__(*exc)


def watch(
    client,
    flow_run,
    view,
    *,
    ui_url: str | None = None,
    timeout: float | None = None,
    poll: float = POLL_SECONDS,
):
    """Shows `flow_run` until it ends (or `timeout` seconds pass); returns its last state."""
    seen = _Seen(logs=EpochLogReader(since=flow_run.created or datetime.now(UTC)))
    deadline = None if timeout is None else time.monotonic() + timeout
    view.event(
        f"watching flow run {flow_run.name} ({flow_run.id})"
        + (f": {ui_url}/runs/flow-run/{flow_run.id}" if ui_url else "")
    )
    unreachable = False
    while True:
        try:
            flow_run, ended = _poll(client, flow_run, view, seen)
        except httpx.HTTPError as exc:  # the Prefect API away for a while: the run goes on
            if not unreachable:
                view.event(
                    f"{datetime.now(UTC):%H:%M:%S} the Prefect API did not answer "
                    f"({type(exc).__name__}: {reason_of(exc)}); asking again"
                )
            unreachable, ended = True, False
        else:
            unreachable = False
        if ended:
            return flow_run.state
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(poll)


def _poll(client, flow_run, view, seen: _Seen):
    """Shows what is new; returns the flow run as it is now and whether it has ended."""
    from compare_models.cli.progress import training_runs

    flow_run = client.read_flow_run(flow_run.id)
    state = flow_run.state_name or "?"
    if seen.changed("run", state):
        view.event(f"{datetime.now(UTC):%H:%M:%S} run {flow_run.name}: {state}")
    run_id = _run_id(flow_run)
    if run_id:
        # the states are read before the logs, so a training's end shows after its last epoch
        trainings = training_runs(client, run_id)
        for log in seen.logs.read(client, trainings):
            view.epoch(log)
        for training in trainings:
            if training.state_type not in _NOT_STARTED and seen.changed(
                training.name, training.state_name
            ):
                view.event(
                    f"{datetime.now(UTC):%H:%M:%S} training {training.name}: {training.state_name}"
                )
    if flow_run.state and flow_run.state.is_final():
        return flow_run, True
    tasks = _running_tasks(client, flow_run.id)
    view.status(f"run {flow_run.name}: {state}" + (f" · {', '.join(tasks)}" if tasks else ""))
    return flow_run, False


def cmd_watch(args: argparse.Namespace) -> int:
    from prefect import get_client

    settings = Settings()
    export_settings(settings)
    out = console()
    try:
        with get_client(sync_client=True) as client:
            flow_run = _find_flow_run(client, args.flow_run, args.deployment)
            view = _Live(out) if out.is_terminal else _Plain()
            with view:
                state = watch(client, flow_run, view, ui_url=settings.ui_url, timeout=args.timeout)
    except WatchError as exc:
        return _fail(str(exc))
    except httpx.HTTPError as exc:
        api = redact_url(os.environ.get("PREFECT_API_URL", "")) or "PREFECT_API_URL not set"
        return _fail(
            f"the Prefect API ({api}) cannot be reached ({type(exc).__name__}: "
            f"{reason_of(exc)}): `compare-models up` starts the local one; elsewhere set "
            "PREFECT_API_URL"
        )
    except KeyboardInterrupt:
        print_line("stopped watching; the run goes on")
        return 130
    if state is None:
        return _fail(f"flow run {flow_run.name} did not end within {args.timeout:g} s")
    if not state.is_completed():
        return _fail(f"flow run {flow_run.name} ended {state.name}: {state.message or ''}".strip())
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_watch(sub: argparse._SubParsersAction) -> None:
    watch_cmd = sub.add_parser(
        "watch",
        help="a run's trainings as they go (epochs, loss, accuracy, images/s, time left), "
        "read from the Prefect server; ends with the run",
        description="Shows a run's trainings as they go, for a run started anywhere (a "
        "deployment run, the nightly schedule): on a terminal one bar per training (epoch i/N, "
        "loss, accuracy, images/s, time left) under the run's state and running tasks; "
        "elsewhere one line per epoch, per training's end and per state change. Exit code 0 "
        "when the run completed, 1 when it failed, crashed or was cancelled, or --timeout "
        "passed first.",
    )
    watch_cmd.add_argument(
        "flow_run",
        nargs="?",
        help="a flow run id or name (default: the newest due run of --deployment)",
    )
    watch_cmd.add_argument(
        "--deployment",
        default=DEFAULT_DEPLOYMENT,
        help=f"the deployment whose newest run to watch (default: {DEFAULT_DEPLOYMENT})",
    )
    watch_cmd.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        help="give up after this many seconds (exit code 1); default: wait for the run's end",
    )
    watch_cmd.set_defaults(func=cmd_watch)
