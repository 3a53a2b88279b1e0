"""The run's catalog against the real test S3: every save lands at its layout key, and the test
split and stored predictions are fetched once per process, however many tasks (threads) ask."""

from __future__ import annotations

import io
import secrets
import threading
from collections import Counter

import numpy as np
import pytest

from compare_models.config import SplitSpec
from compare_models.data.dataset import prepare_dataset
from compare_models.runs.artifacts import RunArtifacts
from compare_models.storage.store import ArtifactStore
from tests.support.runs import training_result

pytestmark = pytest.mark.integration


def _npz(probs: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, y_prob=probs.astype(np.float32))
    return buffer.getvalue()


def test_the_test_split_and_predictions_are_fetched_once_per_process(stack, settings, tmp_path):
    spec = SplitSpec(protocol="sizes", train=40, val=20, test=30)
    dataset = prepare_dataset("synthetic:200", spec, stack, tmp_path / "prepare-cache")
    run_id = f"artifacts-{secrets.token_hex(3)}"
    rng = np.random.default_rng(0)
    trainings = {m: training_result(run_id, m) for m in ("cnn", "resnet50")}
    for t in trainings.values():
        stack.put_bytes(_npz(rng.dirichlet(np.ones(10), 30)), t.predictions_key, overwrite=True)
    champion_key = f"runs/{run_id}-champion/predictions/cnn.npz"
    stack.put_bytes(_npz(rng.dirichlet(np.ones(10), 30)), champion_key, overwrite=True)

    gets: Counter[str] = Counter()
    store = ArtifactStore.from_settings(settings)
    store.client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: gets.update([params["Key"]])
    )
    cache = tmp_path / "empty-cache"  # nothing on disk yet: the split comes from S3

    def one_task():  # what the evaluation, comparison, gate and report tasks each ask for
        artifacts = RunArtifacts.of(store, run_id, dataset, cache)
        artifacts.test_labels()
        artifacts.model_predictions(trainings)
        artifacts.predictions(champion_key)
        artifacts.test_split()

    threads = [threading.Thread(target=one_task) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    catalog = RunArtifacts.of(ArtifactStore.from_settings(settings), run_id, dataset, cache)
    assert catalog is RunArtifacts.of(store, run_id, dataset, cache)  # one per run and process
    try:
        test_split = dataset.shards["test"]
        expected = {*(s.key for s in test_split.shards), test_split.labels_key, champion_key} | {
            t.predictions_key for t in trainings.values()
        }
        assert set(gets) == expected and all(n == 1 for n in gets.values()), gets
        labels = catalog.test_labels()
        assert labels.shape == (30,) and len(catalog.test_split()[0]) == 30
    finally:
        catalog.close()
    assert RunArtifacts.of(store, run_id, dataset, cache) is not catalog  # closed: forgotten


def test_predictions_that_do_not_match_the_test_labels_are_refused(stack, settings, tmp_path):
    from compare_models.data.errors import DataError

    spec = SplitSpec(protocol="sizes", train=40, val=20, test=30)
    dataset = prepare_dataset("synthetic:200", spec, stack, tmp_path / "cache")
    run_id = f"artifacts-{secrets.token_hex(3)}"
    trained = training_result(run_id, "cnn")
    stack.put_bytes(_npz(np.full((29, 10), 0.1)), trained.predictions_key, overwrite=True)
    artifacts = RunArtifacts(stack, run_id, dataset, tmp_path / "cache")
    with pytest.raises(DataError, match="cnn: 29 predictions for 30 test labels"):
        artifacts.model_predictions({"cnn": trained})


def test_an_evaluation_is_stored_as_before_and_read_back_typed(stack, settings, tmp_path):
    import json

    from compare_models.evaluation.metrics import evaluate_predictions
    from compare_models.runs.artifacts import UnreadableMetrics
    from compare_models.storage import layout

    spec = SplitSpec(protocol="sizes", train=40, val=20, test=30)
    dataset = prepare_dataset("synthetic:200", spec, stack, tmp_path / "cache")
    run_id = f"artifacts-{secrets.token_hex(3)}"
    rng = np.random.default_rng(0)
    evaluation = evaluate_predictions(
        rng.integers(0, 10, 30), rng.dirichlet(np.ones(10), 30), dataset.class_names
    )
    RunArtifacts(stack, run_id, dataset, tmp_path / "cache").save_metrics("cnn", evaluation)
    stored = stack.get_json(layout.metrics_key(run_id, "cnn"))
    assert stored == evaluation.model_dump(mode="json", by_alias=True)
    assert stored["per_class"][0]["class"] == dataset.class_names[0]
    for table in ("summary", "per_class", "confusion_matrix"):
        assert stack.get_bytes(layout.metrics_table_key(run_id, "cnn", table))
    # another process (a fresh catalog) reads the file back as the same record
    assert RunArtifacts(stack, run_id, dataset, tmp_path / "cache").metrics("cnn") == evaluation

    del stored["per_class"][3]["recall"]
    stack.put_bytes(json.dumps(stored).encode(), layout.metrics_key(run_id, "resnet50"))
    artifacts = RunArtifacts(stack, run_id, dataset, tmp_path / "cache")
    with pytest.raises(UnreadableMetrics, match=r"resnet50\.json .*per_class\.3\.recall: Field"):
        artifacts.metrics("resnet50")
