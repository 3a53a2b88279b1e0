"""A live progress display for `compare-models run` on a terminal: per training, epoch i/N, its
loss and accuracy, images/s and the time left.

The trainings run in processes of their own (subprocesses or workers' flow runs), so this
process cannot see their Keras callbacks. What it can see is what every training already sends
to the Prefect server: its epoch log line (`training.EpochLogger`). A thread reads those lines
from the server every `POLL_SECONDS` for the child flow runs of this run (named
`<run-id>-<training>`, see flows/train_model.py) and moves one Rich progress bar per training.
The run id comes from this process's own flow run, through a logging handler on Prefect's run
logger. Off a terminal nothing is shown: the log lines are the plain output.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)

POLL_SECONDS = 2.0

#: `EpochLogger`'s line: "<label> epoch 3/10 accuracy=0.5 loss=1.2 ... (12.3 s, 456 images/s)".
EPOCH_LINE = re.compile(
    r"^(?P<label>.+?) epoch (?P<epoch>\d+)/(?P<epochs>\d+) (?P<metrics>.*?) "
    r"\((?P<seconds>[\d.]+) s, (?P<rate>\d+) images/s\)$"
)


@dataclass(frozen=True)
class EpochLine:
    """One training's epoch, as its log line says it."""

    label: str
    epoch: int
    epochs: int
    metrics: dict[str, float]
    seconds: float
    images_per_second: int
    #: The line as it was logged.
    text: str = ""

    @classmethod
    def parse(cls, message: str) -> EpochLine | None:
        match = EPOCH_LINE.match(message.strip())
        if not match:
            return None
        metrics = {}
        for pair in match["metrics"].split():
            name, _, value = pair.partition("=")
            with contextlib.suppress(ValueError):
                metrics[name] = float(value)
        return cls(
            label=match["label"],
            epoch=int(match["epoch"]),
            epochs=int(match["epochs"]),
            metrics=metrics,
            seconds=float(match["seconds"]),
            images_per_second=int(match["rate"]),
            text=message.strip(),
        )

    def summary(self) -> str:
        """ "loss 1.2034  accuracy 0.5120  456 images/s": what the bar shows beside it."""
        shown = [f"{k} {self.metrics[k]:.4f}" for k in ("loss", "accuracy") if k in self.metrics]
        return "  ".join([*shown, f"{self.images_per_second:,} images/s"])


class _RunIdFromLogs(logging.Handler):
    """Learns this process's flow run name ("<run-id> [cnn+resnet50]") from its first log
    record, which Prefect's run logger tags with it."""

    def __init__(self) -> None:
        super().__init__()
        self.run_id: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "flow_run_name", None)
        if self.run_id is None and name and name != "<unknown>":
            self.run_id = str(name).split(" ", 1)[0]


class TrainingProgress:
    """One bar per training, moved by the epoch lines it is given (`show`)."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}

    def show(self, line: EpochLine) -> None:
        task = self.tasks.get(line.label)
        if task is None:
            task = self.tasks[line.label] = self.progress.add_task(
                line.label, total=line.epochs, summary=""
            )
        self.progress.update(task, completed=line.epoch, total=line.epochs, summary=line.summary())


@dataclass(frozen=True)
class EpochLog:
    """An epoch line as the Prefect server holds it: the log's id (a line read twice is one
    line), its time, and what it says."""

    id: str
    timestamp: datetime
    line: EpochLine


def training_runs(client, run_id: str) -> list:
    """The run's trainings: its flow runs named `<run-id>-<training>` (Prefect's `like_` is a
    substring match, so the prefix is checked again)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    found = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=f"{run_id}-"))
    )
    return [r for r in found if r.name.startswith(f"{run_id}-")]


#: how far behind the newest line read each read looks again. Prefect's log workers send each
#: process's lines in batches (every 2 s by default, and the rest at exit), so one training's
#: line can reach the server after a later line of another training has been read; the ids make a
#: line read twice one line
LATE_LOGS = timedelta(seconds=120)

#: the server's page of logs (Prefect's default limit), and the most pages one read takes: a read
#: stays bounded however much the trainings log
LOG_PAGE = 200
MAX_LOG_PAGES = 50


@dataclass
class EpochLogReader:
    """Reads the trainings' epoch lines from the Prefect server, each line once, oldest first."""

    since: datetime = field(default_factory=lambda: datetime.now(UTC))
    seen: set[str] = field(default_factory=set)

    def read(self, client, trainings: list) -> list[EpochLog]:
        """The epoch lines of `trainings` (flow runs, `training_runs`) not returned before."""
        from prefect.client.schemas.filters import (
            LogFilter,
            LogFilterFlowRunId,
            LogFilterTimestamp,
        )
        from prefect.client.schemas.sorting import LogSort

        if not trainings:
            return []
        log_filter = LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[t.id for t in trainings]),
            timestamp=LogFilterTimestamp(after_=self.since - LATE_LOGS),
        )
        logs: list = []
        for page in range(MAX_LOG_PAGES):
            found = client.read_logs(
                log_filter=log_filter,
                limit=LOG_PAGE,
                offset=page * LOG_PAGE,
                sort=LogSort.TIMESTAMP_ASC,
            )
            logs += found
            if len(found) < LOG_PAGE:
                break
        self.since = max((log.timestamp for log in logs), default=self.since)
        new = []
        for log in logs:
            if str(log.id) in self.seen:
                continue
            self.seen.add(str(log.id))
            if (line := EpochLine.parse(log.message)) is not None:
                new.append(EpochLog(id=str(log.id), timestamp=log.timestamp, line=line))
        return new


def progress_bars(console) -> Progress:
    """The bars' columns: the training, its bar, epoch i/N, loss, accuracy, images/s, time left."""
    return Progress(
        TextColumn("[bold cyan]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TextColumn("{task.fields[summary]}"),
        TimeRemainingColumn(),
        console=console,
    )


@contextlib.contextmanager
def live_progress(console) -> Iterator[None]:
    """While the body runs (the flow, in this thread), shows the trainings' progress."""
    from prefect import get_client

    handler = _RunIdFromLogs()
    run_logger = logging.getLogger("prefect.flow_runs")
    run_logger.addHandler(handler)
    stop = threading.Event()
    progress = progress_bars(console)
    bars = TrainingProgress(progress)

    def poll() -> None:
        reader = EpochLogReader()
        with get_client(sync_client=True) as client:
            while not stop.wait(POLL_SECONDS):
                if handler.run_id is None:
                    continue
                try:
                    trainings = training_runs(client, handler.run_id)
                    logs = reader.read(client, trainings)
                except Exception:  # noqa: BLE001 - a display must never fail the run
                    continue
                for log in logs:
                    bars.show(log.line)

    thread = threading.Thread(target=poll, name="compare-models-progress", daemon=True)
    try:
        with progress:
            thread.start()
            yield
    finally:
        stop.set()
        thread.join(timeout=2 * POLL_SECONDS)
        run_logger.removeHandler(handler)
