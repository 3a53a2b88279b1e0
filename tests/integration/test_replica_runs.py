"""`train.replicas` end to end on tiny synthetic data: a model trained twice with consecutive
seeds, both replicas published under their own names, the one best on validation data kept."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from compare_models.config import RunParams
from compare_models.runs.stored import read_record
from compare_models.storage import layout
from tests.support.runs import NO_EXPORT

pytestmark = pytest.mark.integration

SEED = 5
PARAMS = {
    "data": "synthetic:300",
    "split": {"protocol": "sizes", "train": 150, "val": 60, "test": 60},
    "models": ["tiny"],
    "train": {
        "epochs": 3,
        "batch_size": 32,
        "threads": 1,
        "learning_rate": 0.01,
        "seed": SEED,
        "replicas": 2,
    },
    "resnet_weights": "none",
    "comparison": {"resamples": 1000},
    "gate": {"track": f"test-replicas-{secrets.token_hex(3)}", **NO_EXPORT},
}


@pytest.fixture(scope="module")
def replicated_run(plugin_models, prefect_api, stack):
    from flows.compare_models import compare_models

    state = compare_models(params=RunParams.model_validate(PARAMS), return_state=True)
    assert state.is_completed(), state.message
    return state


def test_every_replica_is_published_under_its_name(replicated_run, stack):
    run_id = replicated_run.result()["run_id"]
    record = read_record(stack, run_id)
    listed = {o.key for o in record.objects}
    for name in ("tiny", "tiny.r1"):
        for key in (
            layout.model_key(run_id, name),
            layout.predictions_key(run_id, name),
            layout.history_key(run_id, name),
            layout.metrics_key(run_id, name),
            layout.metrics_table_key(run_id, name, "per_class"),
        ):
            assert stack.exists(key) and key in listed, key
        assert not list(stack.list_keys(layout.checkpoint_prefix(run_id, name)))
        stored = stack.get_json(layout.history_key(run_id, name))["result"]
        assert stored["model"] == "tiny" and layout.training_name("tiny", stored["replica"]) == name


def test_the_run_keeps_the_replica_best_on_validation_data(replicated_run, stack):
    run_id = replicated_run.result()["run_id"]
    record = read_record(stack, run_id)
    replicas = record.replicas["tiny"]
    assert [t.replica for t in replicas] == [0, 1]
    assert [t.seed for t in replicas] == [SEED, SEED + 1]
    assert [t.model_key for t in replicas] == [
        layout.model_key(run_id, "tiny"),
        layout.model_key(run_id, "tiny.r1"),
    ]
    assert replicas[0].history["loss"] != replicas[1].history["loss"]  # other seeds, other runs
    final = [t.history["val_accuracy"][-1] for t in replicas]
    best = final.index(max(final))  # the first of equals
    kept = record.models["tiny"]
    assert kept.replica == best and kept == replicas[best]

    metrics = record.replica_metrics["tiny"]
    assert len(metrics) == 2
    assert record.metrics["tiny"] == metrics[best]
    for training, m in zip(replicas, metrics, strict=True):
        stored = stack.get_json(layout.metrics_key(run_id, training.name))
        assert m.accuracy == stored["accuracy"]
        assert m.recall_per_class == [row["recall"] for row in stored["per_class"]]
        assert len(m.recall_per_class) == 10
    # the run's summary and its comparison speak of the model, by its kept replica
    summary = replicated_run.result()
    assert summary["models"]["tiny"].endswith(kept.model_key)
    assert summary["metrics"]["tiny"]["accuracy"] == metrics[best].accuracy


def test_each_replica_is_a_flow_run_of_its_own(replicated_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    run_id = replicated_run.result()["run_id"]

    async def read():
        async with get_client() as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    name=FlowRunFilterName(any_=[f"{run_id}-tiny", f"{run_id}-tiny.r1"])
                )
            )

    children = asyncio.run(read())
    assert sorted(c.name for c in children) == [f"{run_id}-tiny", f"{run_id}-tiny.r1"]
    assert all(c.state_name == "Completed" for c in children)
