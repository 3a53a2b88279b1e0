"""A run's time budget, and what keeps runs that share a run id apart: the claim taken at
the start, the recipe check before a stored model or checkpoint is reused, and a corrupt
checkpoint that makes the model start afresh. Real flow, S3 and Prefect; tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from compare_models.config import RunParams
from compare_models.storage import layout
from tests.support.runs import ROOT, cli_command, smoke_run_args

pytestmark = pytest.mark.integration

TINY = {
    "data": "synthetic:300",
    "split": {"protocol": "sizes", "train": 150, "val": 30, "test": 50},
    "models": ["tiny"],
    "train": {"epochs": 3, "batch_size": 32, "threads": 1},
    "comparison": {"resamples": 1000},
    "gate": {"enabled": False},
}


def run_flow(**params):
    from flows.compare_models import compare_models

    return compare_models(params=RunParams.model_validate(params), return_state=True)


def test_a_budget_stops_after_an_epoch_and_a_rerun_continues_from_the_checkpoint(
    plugin_models, prefect_api, stack
):
    stopped = run_flow(
        **TINY, run_id="budget-run", execution={"time_budget_minutes": 0.0001}
    )  # 6 ms: gone after epoch 1
    assert stopped.is_completed(), stopped.message
    manifest = stack.get_json(layout.manifest_key("budget-run"))
    assert manifest["stopped_by_budget"] is True
    assert manifest["budget"]["stopped"] == {"tiny": "stopped by budget after 1 of 3 epochs"}
    assert manifest["models"]["tiny"]["epochs"] == 1 and stack.exists(
        layout.checkpoint_state_key("budget-run", "tiny")
    )
    html = stack.get_bytes(layout.report_key("budget-run", "index.html")).decode()
    assert "STOPPED BY BUDGET — tiny: stopped by budget after 1 of 3 epochs" in html

    continued = run_flow(**TINY, run_id="budget-run")  # no budget this time
    assert continued.is_completed(), continued.message
    manifest = stack.get_json(layout.manifest_key("budget-run"))
    assert manifest["stopped_by_budget"] is False and manifest["models"]["tiny"]["epochs"] == 3
    result = stack.get_json(layout.history_key("budget-run", "tiny"))["result"]
    assert (
        result["resumed_from_epoch"] == 1
        and len(stack.get_json(layout.history_key("budget-run", "tiny"))["history"]["loss"]) == 3
    )
    [earlier] = list(stack.list_keys(layout.run_prefix("budget-run") + "previous/"))
    assert (
        stack.get_json(earlier)["stopped_by_budget"] is True
    )  # the stopped run's manifest is kept
    assert not list(
        stack.list_keys(layout.checkpoint_prefix("budget-run", "tiny"))
    )  # finished: pruned


def test_a_rerun_with_other_parameters_does_not_reuse_the_checkpoint(
    plugin_models, prefect_api, stack
):
    assert run_flow(
        **TINY, run_id="recipe-run", execution={"time_budget_minutes": 0.0001}
    ).is_completed()
    other = run_flow(
        **{**TINY, "train": {**TINY["train"], "learning_rate": 0.02}}, run_id="recipe-run"
    )
    assert other.is_failed() and "made from other data or training parameters" in other.message
    assert (
        stack.get_json(layout.manifest_key("recipe-run"))["stopped_by_budget"] is True
    )  # nothing overwritten


def test_a_corrupt_checkpoint_starts_the_model_afresh_and_says_so(
    plugin_models, prefect_api, stack
):
    stack.put_bytes(
        b"{not json", layout.checkpoint_state_key("corrupt-run", "tiny"), overwrite=True
    )
    state = run_flow(**TINY, run_id="corrupt-run")
    assert state.is_completed(), state.message
    result = stack.get_json(layout.history_key("corrupt-run", "tiny"))["result"]
    assert result["resumed_from_epoch"] == 0 and result["epochs"] == 3


def test_two_runs_with_one_run_id_at_once_leave_exactly_one_writer(plugin_models, stack):
    command = cli_command(
        *smoke_run_args(
            "synthetic:300", "tiny", (150, 30, 50), 2, "--threads", "1", "--run-id", "same-id"
        )
    )
    runs = [
        subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(run.wait(timeout=600), *run.communicate()) for run in runs]
    codes = sorted(code for code, _, _ in outcomes)
    assert codes == [0, 1], [(c, err[-1500:]) for c, _, err in outcomes]
    _, winner_out, _ = next(o for o in outcomes if o[0] == 0)
    _, _, loser_err = next(o for o in outcomes if o[0] == 1)
    assert (
        "is being written by flow run" in loser_err
        or "claimed by another flow run at the same moment" in loser_err
    )
    manifest = stack.get_json(layout.manifest_key("same-id"))
    assert manifest["flow_run_id"] == json.loads(winner_out)["flow_run_id"]
    claim = stack.get_json(layout.claim_key("same-id"))
    assert claim["owner"] == manifest["flow_run_id"]


def test_a_training_past_its_timeout_is_stopped_not_orphaned(plugin_models, prefect_api, stack):
    import psutil

    params = {**TINY, "run_id": "timeout-run"}
    params["execution"] = {
        "training_timeout_minutes": 0.02,
        "retries": 0,
    }  # 1.2 s: not even TensorFlow loads
    state = run_flow(**params)
    assert (
        state.is_failed()
        and "ran past execution.training_timeout_minutes (0.02) and was stopped" in state.message
    )
    # A training left behind would be one whose job folder (removed when its task ended) is gone;
    # trainings of tests running beside this one still have theirs.
    trainings = [
        p.info["cmdline"]
        for p in psutil.process_iter(["cmdline"])
        if "flows.train_model" in (p.info["cmdline"] or [])
    ]
    assert not [c for c in trainings if not Path(c[-2]).exists()], trainings
    assert not stack.exists(layout.manifest_key("timeout-run"))
