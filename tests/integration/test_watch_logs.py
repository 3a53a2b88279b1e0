"""How `compare-models watch` and `run`'s live bars read the trainings' epoch lines from a real
Prefect server: every line once and in order, even when a process's batch of lines reaches the
server after a later line of another training has been read."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from compare_models.cli.progress import EpochLogReader, training_runs

pytestmark = pytest.mark.integration


def _line(label: str, epoch: int) -> str:
    return f"{label} epoch {epoch}/2 accuracy=0.5000 loss=1.0000 (1.0 s, 100 images/s)"


def test_a_line_that_reaches_the_server_late_is_still_read_once(prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate

    @flow(name="watch-logs-test")
    def placeholder():
        pass

    run_id = f"watch-{secrets.token_hex(4)}"
    start = datetime.now(UTC)

    def log(run, label, epoch, seconds):
        return LogCreate(
            name="prefect.flow_runs",
            level=20,
            message=_line(label, epoch),
            timestamp=start + timedelta(seconds=seconds),
            flow_run_id=run.id,
        )

    with get_client(sync_client=True) as client:
        cnn = client.create_flow_run(placeholder, name=f"{run_id}-cnn")
        tiny = client.create_flow_run(placeholder, name=f"{run_id}-tiny")
        try:
            trainings = training_runs(client, run_id)
            assert {t.name for t in trainings} == {f"{run_id}-cnn", f"{run_id}-tiny"}
            reader = EpochLogReader(since=start)
            client.create_logs([log(cnn, "cnn", 1, 1), log(tiny, "tiny", 1, 2)])
            client.create_logs([log(tiny, "tiny", 2, 4)])
            first = reader.read(client, trainings)
            assert [(e.line.label, e.line.epoch) for e in first] == [
                ("cnn", 1),
                ("tiny", 1),
                ("tiny", 2),
            ]
            # cnn's second epoch was logged before tiny's second, and its process sent it after
            client.create_logs([log(cnn, "cnn", 2, 3)])
            late = reader.read(client, trainings)
            assert [(e.line.label, e.line.epoch) for e in late] == [("cnn", 2)]
            assert reader.read(client, trainings) == []  # nothing is shown twice
            # more lines than one page of the server's answer are all read, in order
            client.create_logs([log(tiny, "tiny", 1 + i % 2, 10 + i / 100) for i in range(450)])
            many = reader.read(client, trainings)
            assert len(many) == 450 and [e.timestamp for e in many] == sorted(
                e.timestamp for e in many
            )
        finally:
            client.delete_flow_run(cnn.id)
            client.delete_flow_run(tiny.id)
