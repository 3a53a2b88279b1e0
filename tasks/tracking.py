"""MLflow tasks (when `MLFLOW_TRACKING_URI` is set; nothing otherwise): the run's parent MLflow
run opened before training, so the trainings' nested runs appear under it as they train, and the
whole run logged after the champions are handed over. Neither ever fails the run: what MLflow
did not take is in the returned `Tracked`, which the report and the record show."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from compare_models.data.safety import reason_of
from compare_models.runs.record import RunRecord
from compare_models.tracking.records import Tracked
from compare_models.tracking.runs import start_run
from compare_models.tracking.sink import Sink
from compare_models.tracking.sync import log_run
from tasks._store import open_store


def _with_flow_run(record: RunRecord) -> RunRecord:
    return record.model_copy(update={"flow_run_id": str(flow_run.id) if flow_run.id else None})


@task(name="open mlflow run")
def open_tracking(record: RunRecord) -> None:
    sink = Sink.open()
    if sink is None:
        return
    try:
        start_run(sink, _with_flow_run(record))
    except Exception as exc:  # noqa: BLE001 - MLflow never fails a night
        get_run_logger().warning("MLflow: the run was not opened: %s", reason_of(exc))


@task(name="log to mlflow")
def track(record: RunRecord) -> Tracked | None:
    """The run in MLflow (`compare_models.tracking.runs.log_run`); None when MLflow is off."""
    sink = Sink.open()
    if sink is None:
        return None
    logger = get_run_logger()
    try:
        _, store = open_store(record.params.execution.store_outage_minutes)
        tracked = log_run(sink, store, _with_flow_run(record))
    except Exception as exc:  # noqa: BLE001 - MLflow never fails a night
        sink.note("the run", f"logging stopped on an error: {reason_of(exc)}")
        tracked = Tracked(uri=sink.uri, not_logged=list(sink.problems))
    (logger.info if tracked.complete else logger.warning)("%s", tracked.describe())
    return tracked
