"""The MLflow sink without a server: off costs nothing (MLflow is not even imported), a server
that is not there fails one call within the timeout and every later call at once, credentials
never appear in what is noted, and `previous` follows the champion record through a rollback."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from compare_models.config import Settings
from compare_models.data.safety import redacted
from compare_models.runs.champion_record import (
    ChampionData,
    ChampionEntry,
    ChampionMetrics,
    ChampionRecord,
    promote,
)
from compare_models.tracking.records import Tracked
from compare_models.tracking.registry import previous_of
from compare_models.tracking.sink import Sink
from tests.support.runs import ROOT
from tests.support.stack import unused_port


def test_off_when_unset_or_empty_and_mlflow_is_not_imported():
    script = (
        "import sys\n"
        "from compare_models.config import Settings\n"
        "from compare_models.tracking.sink import Sink\n"
        "import tasks.tracking\n"
        "assert Settings().mlflow_tracking_uri is None\n"
        "assert Sink.open() is None\n"
        "print(sorted(m for m in sys.modules if m == 'mlflow' or m.startswith('mlflow.')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "MLFLOW_TRACKING_URI": ""},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_server_that_is_not_there_fails_once_then_every_call_is_skipped():
    uri = f"http://someone:s3cret-pass@127.0.0.1:{unused_port()}"
    sink = Sink.open(Settings(MLFLOW_TRACKING_URI=uri, COMPARE_MODELS_MLFLOW_TIMEOUT_S=2))
    assert sink is not None and sink.down is None
    started = time.monotonic()
    assert sink.call("the experiment", sink.client.get_experiment_by_name, "x") is None
    first = time.monotonic() - started
    assert sink.down and "did not answer" in sink.down
    started = time.monotonic()
    for epoch in range(50):
        assert not sink.done("cnn: the epochs", sink.client.get_run, f"run{epoch}")
    assert time.monotonic() - started < 1  # skipped, not tried again
    assert first < 30
    assert sink.problems[0].startswith("the experiment: MLflow at http://***@127.0.0.1")
    assert len(sink.problems) == 2  # noted once per thing, not once per call
    assert not any("s3cret" in p or "someone" in p for p in sink.problems)


def test_a_uri_that_is_not_http_is_noted_not_raised():
    sink = Sink.open(Settings(MLFLOW_TRACKING_URI="databricks://user:pw@x"))
    assert sink is not None and "not an http(s):// URL" in sink.down
    assert "pw" not in sink.down
    assert sink.call("the run", lambda: 1) is None and sink.problems


@pytest.mark.parametrize(
    "text, shown",
    [
        (
            "API request to https://u:p@host/api failed",
            "API request to https://***@host/api failed",
        ),
        ("no credentials here", "no credentials here"),
    ],
)
def test_redacted(text, shown):
    assert redacted(text) == shown


def _entry(run_id: str) -> ChampionEntry:
    return ChampionEntry(
        run_id=run_id,
        model="cnn",
        model_key=f"runs/{run_id}/models/cnn.keras",
        predictions_key=f"runs/{run_id}/predictions/cnn.npz",
        dataset=ChampionData(),
        metrics=ChampionMetrics(accuracy=0.5),
        promoted_at=f"2026-12-06T00:00:0{len(run_id)}",
        reason="test",
        by="test",
    )


def test_previous_is_the_champion_replaced_and_after_a_rollback_the_one_before_it():
    record: ChampionRecord | None = None
    assert previous_of(promote(record, _entry("a"))) is None
    record = promote(promote(promote(None, _entry("a")), _entry("b")), _entry("c"))
    assert (record.current.run_id, previous_of(record).run_id) == ("c", "b")
    rolled_back = promote(record, _entry("b"))  # a rollback: b again, c goes to the history
    assert [h.run_id for h in rolled_back.history] == ["c", "b", "a"]
    assert (rolled_back.current.run_id, previous_of(rolled_back).run_id) == ("b", "a")
    to_first = promote(promote(promote(None, _entry("a")), _entry("b")), _entry("a"))
    assert previous_of(to_first) is None


def test_tracked_says_what_was_not_logged_and_how_to_catch_up():
    tracked = Tracked(uri="http://mlflow:5000", not_logged=["the run: down"])
    assert "not all logged" in tracked.describe() and "mlflow sync" in tracked.describe()
    assert Tracked(uri="u", run_id="r", experiment_id="1").describe().startswith("logged to")


def test_a_create_that_lost_a_race_takes_what_the_other_process_created():
    from compare_models.tracking.lookup import created_or_found

    def taken():
        raise RuntimeError("RESOURCE_ALREADY_EXISTS")

    assert created_or_found(lambda: "mine", lambda: "theirs") == "mine"
    assert created_or_found(taken, lambda: "theirs") == "theirs"
    with pytest.raises(RuntimeError, match="RESOURCE_ALREADY_EXISTS"):
        created_or_found(taken, lambda: None)  # nothing there: the create's own error
