"""Every comparison says how sure it is, a plugin model runs beside the CNN, and a replay
says how far it landed: through the real flow, S3 and Prefect, on tiny synthetic data."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from compare_models.config import RunParams
from compare_models.storage import layout
from tests.support import stack as test_stack
from tests.support.runs import NO_EXPORT, cli

pytestmark = pytest.mark.integration

PLUGIN_RUN = {
    "data": "synthetic:600",
    "split": {"protocol": "sizes", "train": 200, "val": 50, "test": 100},
    "models": ["cnn", "tiny"],
    "train": {"epochs": 2, "batch_size": 32, "threads": 1},
    "comparison": {"resamples": 1000},
    "gate": NO_EXPORT,
}


@pytest.fixture(scope="module")
def plugin_run(plugin_models, prefect_api):
    from flows.compare_models import compare_models

    state = compare_models(params=RunParams.model_validate(PLUGIN_RUN), return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def predictions(store, key):
    with np.load(io.BytesIO(store.get_bytes(key)), allow_pickle=False) as npz:
        return npz["y_prob"]


def test_a_plugin_model_trains_beside_the_cnn(plugin_run, stack):
    manifest = stack.get_json(layout.manifest_key(plugin_run["run_id"]))
    assert (
        manifest["models"]["tiny"]["parameters"] == 2_938
        and manifest["models"]["cnn"]["parameters"] == 2_915_114
    )
    assert set(manifest["metrics"]) == {"cnn", "tiny"}


def test_the_comparison_is_stored_and_reported(plugin_run, stack):
    run_id = plugin_run["run_id"]
    manifest = stack.get_json(layout.manifest_key(run_id))
    stored = stack.get_json(layout.comparison_key(run_id))
    [pair] = stored["pairs"]
    assert (pair["a"], pair["b"]) == ("cnn", "tiny") and sum(pair["table"].values()) == 100
    assert stored["settings"]["resamples"] == 1000 and set(stored["calibration"]) == {"cnn", "tiny"}
    assert (
        manifest["comparison"] == stored and plugin_run["comparison"] == stored
    )  # manifest and run summary agree
    keys = {o["key"] for o in manifest["objects"]}
    for name in ("disagreements.png", "confident_mistakes.png", "reliability.png"):
        assert layout.report_key(run_id, name) in keys
    html = stack.get_bytes(layout.report_key(run_id, "index.html")).decode()
    assert "How sure is this comparison?" in html and "Where the models disagree" in html
    assert pair["verdict"].replace("<", "&lt;") in html


def test_the_verdict_matches_an_independent_mcnemar(plugin_run, stack):
    from scipy.stats import binomtest

    from compare_models.data.dataset import DatasetRef, load_split

    run_id = plugin_run["run_id"]
    manifest = stack.get_json(layout.manifest_key(run_id))
    dataset = DatasetRef.model_validate(manifest["dataset"])
    _, y = load_split(dataset, "test", stack, test_stack.HOME / "cache")
    right = {
        m: predictions(stack, manifest["models"][m]["predictions_key"]).argmax(1) == y
        for m in ("cnn", "tiny")
    }
    only_cnn, only_tiny = (
        int((right["cnn"] & ~right["tiny"]).sum()),
        int((~right["cnn"] & right["tiny"]).sum()),
    )
    [pair] = manifest["comparison"]["pairs"]
    assert (pair["table"]["only_a_right"], pair["table"]["only_b_right"]) == (only_cnn, only_tiny)
    expected = (
        binomtest(min(only_cnn, only_tiny), only_cnn + only_tiny, 0.5).pvalue
        if only_cnn + only_tiny
        else 1.0
    )
    assert abs(pair["mcnemar"]["pvalue"] - expected) < 1e-9


def test_the_manifest_holds_a_fingerprint(plugin_run, stack):
    fingerprint = stack.get_json(layout.manifest_key(plugin_run["run_id"]))["fingerprint"]
    host = fingerprint["orchestrator"]
    assert host["git"]["commit"] and host["git"]["dirty"] in (True, False)
    assert all(
        host["libraries"][lib]
        for lib in ("tensorflow", "keras", "numpy", "scikit-learn", "prefect")
    )
    assert host["cpu"] and host["python"]
    for model in ("cnn", "tiny"):
        device = fingerprint["trainings"][model]
        assert (
            device["precision"] == "float32"
            and device["gpus"] == []
            and device["host"]["libraries"]["tensorflow"]
        )
    data = fingerprint["data"]
    assert data["split_key"] and len(data["split_indices_sha256"]) == 64
    assert fingerprint["seeds"] == {"split": 42, "train": 42, "comparison": 0}
    assert fingerprint["params"]["models"] == ["cnn", "tiny"]
    shown = cli("show", plugin_run["run_id"])
    assert shown.returncode == 0, shown.stderr
    assert (
        "Fingerprint" in shown.stdout
        and data["split_indices_sha256"] in shown.stdout
        and "verdict:" in shown.stdout
    )


def test_a_replay_reproduces_the_run_and_says_so(plugin_run, stack):
    out = cli("replay", plugin_run["run_id"], "--json")
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    replay = summary["replay"]
    assert replay["original_run_id"] == plugin_run["run_id"] and stack.exists(
        layout.replay_key(summary["run_id"])
    )
    # Same data by hash, same split, same seeds, same machine: on CPU the predictions repeat bit for bit.
    for model in ("cnn", "tiny"):
        result = replay["models"][model]
        assert result["bitwise_identical_probabilities"], (
            model,
            result["max_abs_probability_difference"],
        )
        assert (
            result["pair"]["mcnemar"]["pvalue"] == 1.0
            and result["pair"]["difference"]["accuracy"]["estimate"] == 0
        )
    assert replay["fingerprint_changes"] == []
    assert "2 of 2 model(s) reproduced their original predictions exactly" in replay["summary"]


def test_replaying_a_missing_or_incomplete_run_says_what_is_wrong(stack):
    out = cli("replay", "no-such-run")
    assert out.returncode == 1 and "run 'no-such-run' does not exist" in out.stderr
    stack.put_bytes(b"{}", layout.history_key("half-done", "cnn"), overwrite=True)
    out = cli("replay", "half-done")
    assert (
        out.returncode == 1
        and "run 'half-done' is incomplete (it has objects but no manifest)" in out.stderr
    )
    out = cli("replay", "../etc")
    assert out.returncode != 0
