"""Nightly runs that remember, end to end on tiny synthetic data: the first run becomes the
champion, an identical run changes nothing, a deliberately weaker run is a regression that
Prefect sees as an event and a webhook on 127.0.0.1 receives as a notification; two runs
racing to promote leave exactly one winner; a person's promotion is recorded with its reason."""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time

import numpy as np
import pytest
from pydantic import SecretStr

from compare_models.config import ComparisonParams, GatePolicy, RunParams
from compare_models.gate import champions
from compare_models.runs.artifacts import load_predictions
from compare_models.runs.champion_record import ChampionEntry
from compare_models.storage import layout
from tests.support.runs import NO_EXPORT
from tests.support.runs import cli as run_cli
from tests.support.webhook_receiver import start_receiver

pytestmark = pytest.mark.integration
cli = functools.partial(run_cli, timeout=300)

TRACK = f"test-{secrets.token_hex(3)}"
BASE = {
    "data": "synthetic:600",
    "split": {"protocol": "sizes", "train": 300, "val": 60, "test": 120},
    "models": ["tiny"],
    "train": {"epochs": 8, "batch_size": 32, "threads": 1, "learning_rate": 0.01},
    "comparison": {"resamples": 1000},
    "gate": {"track": TRACK, **NO_EXPORT},
}
WEAKER = {**BASE, "train": {**BASE["train"], "epochs": 1, "learning_rate": 1e-6}}


def run_flow(**params):
    from flows.compare_models import compare_models

    return compare_models(params=RunParams.model_validate(params), return_state=True)


@pytest.fixture(scope="module")
def webhook(prefect_api):
    """A receiver on 127.0.0.1 and the regression automation pointing at it (removed afterwards)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from deployments.alerts import ensure_regression_automation

    server, received = start_receiver()
    name, block = f"compare-models-test {TRACK}", f"cm-test-webhook-{TRACK}"
    from compare_models.config import Settings

    settings = Settings().model_copy(
        update={"alert_webhook_url": SecretStr(f"http://127.0.0.1:{server.server_port}/hook")}
    )
    state = ensure_regression_automation(settings, name=name, block_name=block)
    assert state.startswith("created, enabled")
    yield received
    server.shutdown()
    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(name):
            client.delete_automation(automation.id)
    CustomWebhookNotificationBlock.delete(block)


@pytest.fixture(scope="module")
def sequence(plugin_models, prefect_api, webhook):
    states = {}
    for label, params in (("first", BASE), ("same", BASE), ("weaker", WEAKER)):
        state = run_flow(**params)
        assert state.is_completed(), (label, state.message)
        states[label] = state.result()
    return states


def test_the_first_run_becomes_champion(sequence, stack):
    decision = sequence["first"]["gate"]["tiny"]
    assert decision["decision"] == champions.FIRST and decision["champion_run_id"] is None
    record = stack.get_json(layout.champion_key(TRACK, "tiny"))
    assert record["current"]["run_id"] == sequence["first"]["run_id"] and record["history"] == []


def test_an_identical_run_changes_nothing(sequence, stack):
    decision = sequence["same"]["gate"]["tiny"]
    assert (
        decision["decision"] == champions.NO_CHANGE
        and decision["champion_run_id"] == sequence["first"]["run_id"]
    )
    assert (
        decision["comparison"]["mcnemar"]["pvalue"] == 1.0
    )  # same data, seeds and machine: the same predictions
    manifest = stack.get_json(layout.manifest_key(sequence["same"]["run_id"]))
    assert (
        manifest["gate"]["tiny"]["decision"] == champions.NO_CHANGE
    )  # the decision is in the manifest
    html = stack.get_bytes(layout.report_key(sequence["same"]["run_id"], "index.html")).decode()
    assert f"vs champion (track {TRACK})" in html and "no significant change" in html
    assert layout.report_key(sequence["same"]["run_id"], "accuracy_trend.png") in {
        o["key"] for o in manifest["objects"]
    }


def test_a_weaker_run_is_a_regression_seen_by_prefect_and_the_webhook(sequence, stack, webhook):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    decision = sequence["weaker"]["gate"]["tiny"]
    assert decision["decision"] == champions.REGRESSION, decision["reason"]
    assert (
        stack.get_json(layout.champion_key(TRACK, "tiny"))["current"]["run_id"]
        == sequence["first"]["run_id"]
    )
    resource = f"compare-models.run.{sequence['weaker']['run_id']}.tiny"
    deadline, events = time.monotonic() + 60, []
    while time.monotonic() < deadline and not (events and webhook):
        with get_client(sync_client=True) as client:
            events = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["compare-models.model.regressed"]),
                    resource=EventResourceFilter(id=[resource]),
                ),
                limit=10,
            ).events
        time.sleep(1)
    assert events and events[0].payload["model"] == "tiny" and events[0].payload["track"] == TRACK
    assert events[0].payload["mcnemar_pvalue"] < 0.05
    assert (
        webhook
        and sequence["weaker"]["run_id"] in webhook[0]["subject"]
        and "regressed" in webhook[0]["body"]
    )


def test_fail_on_regression_fails_the_run_but_publishes_it(sequence, stack):
    state = run_flow(
        **{
            **WEAKER,
            "gate": {"track": TRACK, "fail_on_regression": True, **NO_EXPORT},
            "run_id": f"fail-{TRACK}",
        }
    )
    assert state.is_failed() and "gate.fail_on_regression is set" in state.message
    assert (
        stack.get_json(layout.manifest_key(f"fail-{TRACK}"))["gate"]["tiny"]["decision"]
        == champions.REGRESSION
    )


def test_a_champion_tested_on_other_images_is_re_scored_on_the_runs_own(sequence, stack):
    run_id = f"other-split-{TRACK}"
    state = run_flow(**{**BASE, "split": {**BASE["split"], "test": 100}, "run_id": run_id})
    assert state.is_completed(), state.message
    decision = state.result()["gate"]["tiny"]
    champion = stack.get_json(layout.champion_key(TRACK, "tiny"))["current"]
    assert decision["rescored"] and decision["test_images"]["count"] == 100
    assert decision["decision"] in (
        champions.NO_CHANGE,
        champions.WITHIN_NOISE,
        champions.PROMOTED,
        champions.REGRESSION,
    )
    assert "re-scored on this run's 100 test images" in decision["reason"]
    assert decision["rescored_predictions_key"] == layout.rescored_key(
        run_id, decision["champion_run_id"], "tiny"
    )
    rescored = load_predictions(stack, decision["rescored_predictions_key"])
    assert rescored.shape == (100, 10)
    if decision["decision"] != champions.PROMOTED:
        assert champion["run_id"] == decision["champion_run_id"]


def test_a_person_promotes_with_a_reason_and_history_shows_it(sequence, stack):
    weaker = sequence["weaker"]["run_id"]
    out = cli("promote", weaker, "--model", "tiny", "--reason", "rollback drill")
    assert out.returncode == 0, out.stderr
    record = stack.get_json(layout.champion_key(TRACK, "tiny"))
    assert (
        record["current"]["run_id"] == weaker
        and record["current"]["reason"] == "manual: rollback drill"
    )
    assert record["current"]["by"] and record["history"][0]["run_id"] == sequence["first"]["run_id"]
    assert record["history"][0]["replaced_by"] == weaker
    assert (
        cli("promote", weaker, "--model", "tiny", "--reason", "again").returncode == 1
    )  # already champion
    shown = cli("champion", "tiny", "--track", TRACK)
    assert "manual: rollback drill" in shown.stdout and sequence["first"]["run_id"] in shown.stdout
    rows = json.loads(cli("history", "--model", "tiny", "--track", TRACK, "--json").stdout)
    assert [r["run_id"] for r in rows[-3:]] == [
        sequence[k]["run_id"] for k in ("weaker", "same", "first")
    ]
    assert [r["decision"] for r in rows[-3:]] == [
        champions.REGRESSION,
        champions.NO_CHANGE,
        champions.FIRST,
    ]


def test_two_runs_racing_to_promote_leave_exactly_one_winner(stack):
    """Both challengers are better than the champion and read the record before either
    writes; the conditional write lets one win, and the other is judged again against the
    winner (identical predictions: no change) and records that it lost the race."""
    track, y = f"race-{TRACK}", np.arange(500) % 10
    good, bad = np.eye(10)[y] * 0.9 + 0.01, np.eye(10)[(y + 1) % 10] * 0.9 + 0.01
    stack.put_bytes(_npz(bad), "race/champion.npz", overwrite=True)
    dataset = {"name": "race", "archive_sha256": "a", "test_indices_sha256": "t"}

    def entry(run_id):
        return {
            "run_id": run_id,
            "model": "m",
            "model_key": "race/m.keras",
            "predictions_key": "race/champion.npz",
            "dataset": dataset,
            "metrics": {"accuracy": 0.0},
            "promoted_at": "now",
            "reason": "",
            "by": "test",
        }

    stack.put_json_if(
        {"model": "m", "current": entry("old"), "history": []},
        layout.champion_key(track, "m"),
        etag=None,
    )
    barrier, results = threading.Barrier(2), {}

    judge = champions.Judge(
        y_true=y,
        class_names=[str(i) for i in range(10)],
        policy=GatePolicy(track=track),
        comparison=ComparisonParams(resamples=1000),
        predictions=functools.partial(load_predictions, stack),
    )

    def challenge(run_id):
        results[run_id] = champions.gate(
            stack,
            champions.Challenger(
                run_id=run_id,
                model="m",
                entry=ChampionEntry.model_validate(
                    {**entry(run_id), "predictions_key": "race/good.npz"}
                ),
                probs=good,
            ),
            judge,
            before_write=lambda: (
                barrier.wait(timeout=30) if barrier.n_waiting or not results else None
            ),
        )

    stack.put_bytes(_npz(good), "race/good.npz", overwrite=True)
    threads = [threading.Thread(target=challenge, args=(r,)) for r in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    decisions = sorted(r.decision for r in results.values())
    assert decisions == [champions.NO_CHANGE, champions.PROMOTED], results
    winner = next(r for r, d in results.items() if d.decision == champions.PROMOTED)
    loser = next(r for r in results if r != winner)
    assert results[loser].lost_race_to == [winner] and results[loser].champion_run_id == winner
    record = stack.get_json(layout.champion_key(track, "m"))
    assert record["current"]["run_id"] == winner and [h["run_id"] for h in record["history"]] == [
        "old"
    ]
    # a retried run never promotes twice
    again = champions.gate(
        stack,
        champions.Challenger(
            run_id=winner, model="m", entry=ChampionEntry.model_validate(entry(winner)), probs=good
        ),
        judge,
    )
    assert (
        again.decision == champions.ALREADY
        and len(stack.get_json(layout.champion_key(track, "m"))["history"]) == 1
    )


def _npz(probs: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, y_prob=probs.astype(np.float32))
    return buffer.getvalue()
