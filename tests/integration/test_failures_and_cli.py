"""Runs that must fail early and cleanly, and the `compare-models run` command line, against
the real local S3 and Prefect server on tiny synthetic data (split from test_flow.py so that
the two files run in parallel)."""

from __future__ import annotations

import json
import os

import pytest

from compare_models.storage import layout
from tests.integration.test_flow import TINY, run_flow
from tests.support.runs import NO_EXPORT_FLAG, cli

pytestmark = pytest.mark.integration


def test_nan_loss_fails_the_run_and_publishes_nothing(stack, prefect_api):
    state = run_flow(
        **{
            **TINY,
            "models": ["cnn"],
            "run_id": "nan-check",
            "train": {"epochs": 2, "optimizer": "sgd", "learning_rate": 1000.0},
        }
    )
    assert state.is_failed()
    assert "training diverged: the loss or the model became NaN/inf" in state.message
    assert "Lower the learning rate" in state.message
    assert not list(
        stack.list_keys(layout.checkpoints_prefix("nan-check"))
    )  # nothing to resume a diverged model from
    assert not stack.exists(layout.model_key("nan-check", "cnn"))
    assert not stack.exists(layout.manifest_key("nan-check"))


def test_missing_imagenet_weights_fail_before_training(stack, prefect_api, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "COMPARE_MODELS_IMAGENET_WEIGHTS_URL", "http://127.0.0.1:9/resnet50_notop.h5"
    )
    monkeypatch.setenv(
        "COMPARE_MODELS_ALLOW_PRIVATE_URLS", "1"
    )  # reach the (closed) port, not refused as loopback
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.keras cache either
    state = run_flow(**{**TINY, "resnet_weights": "imagenet", "run_id": "no-weights"})
    assert state.is_failed()
    assert (
        "could not fetch ResNet50 ImageNet weights" in state.message
        and "--resnet-weights" in state.message
    )
    # failed before any work: only the run's claim was written
    assert list(stack.list_keys(layout.run_prefix("no-weights"))) == [
        layout.claim_key("no-weights")
    ]


def test_missing_bucket_fails_at_start(prefect_api, monkeypatch):
    monkeypatch.setenv("COMPARE_MODELS_BUCKET", "cm-does-not-exist")
    state = run_flow(**TINY)
    assert state.is_failed() and "bucket 'cm-does-not-exist' does not exist" in state.message


def test_cli_run_json_and_cnn_learns(stack):
    out = cli(
        "run",
        "--preset",
        "smoke",
        "--data",
        "synthetic:600",
        "--models",
        "cnn",
        "--split",
        "sizes",
        "--train-size",
        "400",
        "--val-size",
        "100",
        "--test-size",
        "100",
        "--epochs",
        "5",
        "--batch-size",
        "32",
        NO_EXPORT_FLAG,
        "--json",
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary["status"] == "completed" and summary["ui_url"].startswith(
        os.environ["PREFECT_API_URL"].removesuffix("/api") + "/runs/flow-run/"
    )
    assert summary["report"] == stack.uri(layout.report_key(summary["run_id"], "index.html"))
    assert summary["metrics"]["cnn"]["accuracy"] > 0.5  # chance is 0.1
    listed = cli("runs", "--json")
    assert any(
        r["run_id"] == summary["run_id"] and r["status"] == "complete"
        for r in json.loads(listed.stdout)
    )
    _tables_say_what_json_says(summary["run_id"])


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The rows of the Rich tables in `text` whose first cell is `first_cell`, as cells."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if cells and cells[0] == first_cell:
            rows.append(cells)
    return rows


def _tables_say_what_json_says(run_id: str) -> None:
    """`runs`, `show` and `history` print tables for people with the numbers `--json` gives
    scripts; the JSON stays the documented shape."""
    shown = json.loads(cli("show", run_id, "--json").stdout)
    runs = cli("runs")
    assert runs.returncode == 0 and runs.stdout.startswith("Runs")
    [row] = _table_rows(runs.stdout, run_id)
    assert "complete" in row
    assert next(r for r in json.loads(cli("runs", "--json").stdout) if r["run_id"] == run_id)

    table = cli("show", run_id)
    assert table.returncode == 0, table.stderr
    assert "Models" in table.stdout and "Fingerprint" in table.stdout
    for model, metrics in shown["metrics"].items():
        [row] = _table_rows(table.stdout, model)
        assert f"{metrics['accuracy']:.4f}" in row and f"{metrics['f1_macro']:.4f}" in row

    history = json.loads(cli("history", "--last", "3", "--json").stdout)
    assert history and set(history[0]) >= {"run_id", "model", "accuracy", "decision"}
    printed = cli("history", "--last", "3").stdout
    assert printed.startswith("History")
    for entry in history:
        assert any(f"{entry['accuracy']:.4f}" in r for r in _table_rows(printed, entry["run_id"]))


def test_cli_rejects_bad_parameters_before_any_work():
    out = cli("run", "--models", "cnn,vgg", "--epochs", "0")
    assert out.returncode == 2
    assert "unknown model name(s) ['vgg']" in out.stderr
    out = cli("run", "--batch-size", "-1")
    assert out.returncode == 2 and "batch_size" in out.stderr
