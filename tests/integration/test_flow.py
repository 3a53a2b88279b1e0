"""The whole compare-models flow against the real local S3 and Prefect server, on tiny
synthetic data; results are read back from S3 and from Prefect."""

from __future__ import annotations

import asyncio
import json
import secrets

import pytest

from compare_models.config import RunParams
from compare_models.storage import layout
from tests.support.html_validation import html_problems

pytestmark = pytest.mark.integration


def run_flow(**params):
    from flows.compare_models import compare_models

    return compare_models(params=RunParams.model_validate(params), return_state=True)


TINY = {
    "data": "synthetic:200",
    "split": {"protocol": "sizes", "train": 100, "val": 40, "test": 40},
    "train": {"epochs": 2, "batch_size": 32},
    "resnet_weights": "none",
    # a track of its own: the first run makes both models champions, and both are exported
    "gate": {"track": f"flow-{secrets.token_hex(3)}"},
}


@pytest.fixture(scope="module")
def both_models_run(prefect_api):
    state = run_flow(**TINY)
    assert state.is_completed(), state.message
    return state


def test_both_models_train_evaluate_and_publish(both_models_run, stack, tmp_path):
    from compare_models.models.networks import load_model

    summary = both_models_run.result()
    run_id = summary["run_id"]
    manifest = stack.get_json(layout.manifest_key(run_id))
    assert manifest["status"] == "complete" and manifest["synthetic_data"] is True
    assert manifest["dataset"]["name"] == "synthetic"
    keys = {o["key"] for o in manifest["objects"]}
    for model in ("cnn", "resnet50"):
        assert layout.model_key(run_id, model) in keys
        assert layout.metrics_key(run_id, model) in keys
        assert layout.metrics_table_key(run_id, model, "per_class") in keys
        metrics = stack.get_json(layout.metrics_key(run_id, model))
        assert metrics["n_samples"] == 40 and len(metrics["confusion_matrix"]) == 10
        assert metrics["accuracy"] == manifest["metrics"][model]["accuracy"]
        history = stack.get_json(layout.history_key(run_id, model))["history"]
        assert len(history["loss"]) == len(history["val_accuracy"]) == 2
        # the stored model loads and predicts the stored probabilities
        model_file = stack.download(layout.model_key(run_id, model), tmp_path / f"{model}.keras")
        restored = load_model(model_file)
        assert restored.output_shape == (None, 10)
        assert not list(stack.list_keys(layout.checkpoint_prefix(run_id, model))), (
            "checkpoints are pruned after success"
        )
    # both champions exported, each format checked against the trained model before publishing
    # (ResNet50's with its ImageNet preprocessing inside)
    for model in ("cnn", "resnet50"):
        export = manifest["gate"][model]["export"]
        prefix = layout.export_version_prefix(TINY["gate"]["track"], model, export["version"])
        published = stack.get_json(prefix + layout.EXPORT_MANIFEST)
        assert {c["format"] for c in published["checks"]} == {"savedmodel", "onnx"}
        assert all(c["passed"] for c in published["checks"]), published["checks"]
        assert stack.exists(prefix + "model.onnx") and stack.exists(prefix + "saved_model.pb")
        assert ("ImageNet" in published["input"]["preprocessing"]) == (model == "resnet50")
    assert manifest["models"]["cnn"]["parameters"] == 2_915_114
    assert manifest["models"]["resnet50"]["parameters"] == 26_215_818
    # On this GPU-less machine each model trains on the backend `training_backend` picks for
    # this CPU (ResNet50 on JAX where TensorFlow has no oneDNN kernels), and a JAX-trained
    # ResNet50 loaded above under TensorFlow.
    from compare_models.device import training_backend

    trainings = manifest["fingerprint"]["trainings"]
    assert (trainings["cnn"]["backend"], trainings["resnet50"]["backend"]) == (
        "tensorflow",
        training_backend("jax"),
    )
    for name in (
        "index.html",
        "learning_curves.png",
        "confusion_matrices.png",
        "roc_curves.png",
        "comparison.png",
        "comparison.csv",
    ):
        assert layout.report_key(run_id, name) in keys
    html = stack.get_bytes(layout.report_key(run_id, "index.html")).decode()
    assert "SYNTHETIC DATA" in html and f"{manifest['metrics']['cnn']['accuracy']:.4f}" in html
    # the paired comparison of the two models, in the store, the manifest and the report
    [pair] = stack.get_json(layout.comparison_key(run_id))["pairs"]
    assert (pair["a"], pair["b"]) == ("cnn", "resnet50") and manifest["comparison"]["pairs"] == [
        pair
    ]
    assert (
        "How sure is this comparison?" in html and "disagreements.png" not in html
    )  # figures are embedded
    assert layout.report_key(run_id, "disagreements.png") in keys
    # the stored page is valid HTML (the Nu HTML Checker)
    page = tmp_path / "index.html"
    page.write_text(html, encoding="utf-8")
    assert html_problems(page) == []
    # no credential anywhere in what was published
    secret = (
        __import__("compare_models.config", fromlist=["Settings"])
        .Settings()
        .aws_secret_access_key.get_secret_value()
    )
    assert secret not in json.dumps(manifest) and secret not in html


def test_prefect_shows_child_runs_logs_and_artifacts(both_models_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    run_id = both_models_run.result()["run_id"]
    flow_run_id = both_models_run.state_details.flow_run_id

    async def read():
        async with get_client() as client:
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])
                )
            )
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[f"{run_id}-cnn", f"{run_id}-resnet50"])
                )
            )
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[c.id for c in children]))
            )
            return artifacts, children, logs

    artifacts, children, logs = asyncio.run(read())
    kinds = {a.key: a.type for a in artifacts}
    data = {a.key: str(a.data) for a in artifacts}
    assert (
        kinds["compare-models-summary"] == "markdown"
        and "| cnn |" in data["compare-models-summary"]
    )
    assert "How sure is this comparison?" in data["compare-models-summary"]
    assert kinds["compare-models-per-class"] == "table"
    # link artifacts (Prefect stores them as markdown links) carry expiring presigned URLs
    assert (
        "index.html" in data["compare-models-report"]
        and "X-Amz-Expires=" in data["compare-models-report"]
    )
    assert (
        "cnn.keras" in data["compare-models-model-cnn"]
        and "resnet50.keras" in data["compare-models-model-resnet50"]
    )
    assert sorted(c.state_name for c in children) == ["Completed", "Completed"]
    messages = [log.message for log in logs]
    assert any("cnn epoch 2/2" in m and "val_accuracy=" in m for m in messages)
    assert any("resnet50 epoch 1/2" in m for m in messages)


def test_second_run_reuses_the_prepared_data(both_models_run, prefect_api):
    state = run_flow(**{**TINY, "models": ["cnn"], "train": {"epochs": 1}})
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["data"]["reused"] is True
    assert summary["data"]["prefix"] == both_models_run.result()["data"]["prefix"]


def test_a_completed_run_is_never_overwritten(both_models_run, stack, prefect_api):
    run_id = both_models_run.result()["run_id"]
    before = stack.get_bytes(layout.manifest_key(run_id))
    state = run_flow(**{**TINY, "models": ["cnn"], "run_id": run_id})
    assert state.is_failed() and "already complete" in state.message
    assert stack.get_bytes(layout.manifest_key(run_id)) == before
