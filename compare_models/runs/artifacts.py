"""`RunArtifacts`: the catalog of one run's files in the store (in the spirit of Kedro's data
catalog). It owns every save of the parent's steps (metrics, comparison, replay, report,
manifest, the `latest` pointer) and every load they share: the test split and stored
predictions are fetched once per process, whichever task asks first, and then served from
memory (every key it caches is write-once, so a cached copy never goes stale).

Keys come from `compare_models.storage.layout`; nothing here spells a key itself.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from compare_models.data.dataset import DatasetRef, split_images, split_labels
from compare_models.data.errors import DataError
from compare_models.data.shard_windows import WindowedShardReader
from compare_models.data.shards import ImageIndex
from compare_models.evaluation.metrics import metrics_tables
from compare_models.evaluation.records import Evaluation
from compare_models.runs.claim import guard_run_prefix
from compare_models.runs.record import Replay, ReportFiles, RunRecord, StoredObject
from compare_models.runs.stored import completed_records, read_record, validation_problems
from compare_models.statistics.records import Comparison
from compare_models.storage import layout
from compare_models.storage.errors import StoreError
from compare_models.storage.store import ArtifactStore
from compare_models.training.jobs import TrainingResult

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".png": "image/png",
    ".csv": "text/csv",
    ".json": "application/json",
}

#: Stored predictions are n x k float32 (10,000 x 10 is 400 KB); far more was not written by us.
MAX_PREDICTIONS_BYTES = 512 << 20

#: A model's stored evaluation is a few KiB for 10 classes (its confusion matrices grow with k^2:
#: ~25 MiB for 1,000 classes); far more was not written by us.
MAX_METRICS_BYTES = 64 << 20


class UnreadableMetrics(StoreError):
    """A stored evaluation (`metrics/<model>.json`) that is not valid (damaged, or not written
    by compare-models)."""


def load_predictions(store: ArtifactStore, key: str) -> np.ndarray:
    """Stored test-set probabilities (`predictions.npz`, no pickles), size-capped."""
    data = store.get_bytes(key, max_bytes=MAX_PREDICTIONS_BYTES)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return npz["y_prob"]


def parse_metrics(data: bytes, where: str) -> Evaluation:
    """A stored evaluation as an `Evaluation`, or `UnreadableMetrics` naming the first problems."""
    try:
        return Evaluation.model_validate_json(data)
    except ValidationError as exc:
        raise UnreadableMetrics(
            f"{where} is not a valid evaluation record: {validation_problems(exc)}"
        ) from None


class RunArtifacts:
    """One run's files: `RunArtifacts.of(store, run_id, dataset, cache_dir)` gives every task
    of a process the same catalog, so what one task loaded the next one reuses."""

    _open: dict[tuple[str, str, str], RunArtifacts] = {}
    _opening = threading.Lock()

    def __init__(self, store: ArtifactStore, run_id: str, dataset: DatasetRef, cache_dir: Path):
        self.store = store
        self.run_id = run_id
        self.dataset = dataset
        self.cache_dir = cache_dir
        self._loading = threading.Lock()
        self._test_images: np.ndarray | ImageIndex | None = None
        self._test_labels: np.ndarray | None = None
        self._predictions: dict[str, np.ndarray] = {}
        self._metrics: dict[str, Evaluation] = {}
        self._completed: list[RunRecord] | None = None

    @classmethod
    def of(
        cls, store: ArtifactStore, run_id: str, dataset: DatasetRef, cache_dir: Path
    ) -> RunArtifacts:
        """This process's catalog of the run (made on first use)."""
        key = (store.bucket, run_id, dataset.prefix)
        with cls._opening:
            if key not in cls._open:
                cls._open[key] = cls(store, run_id, dataset, cache_dir)
            return cls._open[key]

    def close(self) -> None:
        """Forget what was loaded (the run is complete: its arrays are not needed again here)."""
        with self._opening:
            self._open.pop((self.store.bucket, self.run_id, self.dataset.prefix), None)
        if isinstance(self._test_images, ImageIndex):
            self._test_images.close()  # its shards evictable again

    # ── loads, once per process ──────────────────────────────────────────────────────

    def test_split(self) -> tuple[np.ndarray | ImageIndex, np.ndarray]:
        """The stored test split: its images (a reader of its shards, which reads only the
        images asked for; floats in [0, 1] for a split prepared before shards) and labels."""
        labels = self.test_labels()
        with self._loading:
            if self._test_images is None:
                images = split_images(self.dataset, "test", self.store, self.cache_dir, labels)
                if isinstance(images, WindowedShardReader):
                    images.read_ahead = False  # the report picks a few: only what is read
                self._test_images = images
            return self._test_images, labels

    def test_labels(self) -> np.ndarray:
        """The test split's labels (for shards, without reading an image)."""
        with self._loading:
            if self._test_labels is None:
                self._test_labels = split_labels(self.dataset, "test", self.store, self.cache_dir)
            return self._test_labels

    def predictions(self, key: str) -> np.ndarray:
        """Stored test-set probabilities: this run's, a champion's, or a replayed run's."""
        with self._loading:
            if key not in self._predictions:
                self._predictions[key] = load_predictions(self.store, key)
            return self._predictions[key]

    def model_predictions(self, trainings: Mapping[str, TrainingResult]) -> dict[str, np.ndarray]:
        """Every trained model's test-set probabilities, checked against the test labels."""
        labels = self.test_labels()
        probs = {m: self.predictions(t.predictions_key) for m, t in trainings.items()}
        for model, prob in probs.items():
            if len(prob) != len(labels):
                raise DataError(f"{model}: {len(prob)} predictions for {len(labels)} test labels")
        return probs

    def metrics(self, model: str) -> Evaluation:
        """A model's full evaluation metrics (per class, confusion matrix, ROC curves): as
        saved by this process, or read back once (size-capped and validated:
        `UnreadableMetrics` names what is wrong with a damaged file)."""
        with self._loading:
            if model not in self._metrics:
                key = layout.metrics_key(self.run_id, model)
                data = self.store.get_bytes(key, max_bytes=MAX_METRICS_BYTES)
                self._metrics[model] = parse_metrics(data, self.store.uri(key))
            return self._metrics[model]

    def completed_runs(self) -> list[RunRecord]:
        """Every completed run in the bucket, newest first: the history the gate's noise band
        and the report's trend read (listed once per process)."""
        with self._loading:
            if self._completed is None:
                self._completed = completed_records(self.store)
            return self._completed

    # ── saves ────────────────────────────────────────────────────────────────────────

    def save_metrics(self, model: str, evaluation: Evaluation) -> None:
        """A model's evaluation as JSON, and its tables (summary, per class, confusion matrix)
        as CSV."""
        self.store.put_json(
            evaluation.model_dump(mode="json", by_alias=True),
            layout.metrics_key(self.run_id, model),
            overwrite=True,
        )
        with self._loading:
            self._metrics[model] = evaluation
        for name, frame in metrics_tables(evaluation).items():
            self.store.put_bytes(
                frame.to_csv().encode(),
                layout.metrics_table_key(self.run_id, model, name),
                overwrite=True,
                content_type="text/csv",
            )

    def save_comparison(self, comparison: Comparison) -> None:
        self.store.put_json(
            comparison.model_dump(mode="json", by_alias=True),
            layout.comparison_key(self.run_id),
            overwrite=True,
        )

    def save_replay(self, replay: Replay) -> None:
        self.store.put_json(
            replay.model_dump(mode="json", by_alias=True),
            layout.replay_key(self.run_id),
            overwrite=True,
        )

    def save_report(self, folder: Path) -> ReportFiles:
        """Uploads every file of a rendered report folder."""
        files: dict[str, str] = {}
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            key = layout.report_key(self.run_id, path.name)
            self.store.upload(
                path, key, overwrite=True, content_type=CONTENT_TYPES.get(path.suffix)
            )
            files[path.name] = key
        return ReportFiles(index=self.store.uri(files["index.html"]), files=files)

    def save_record(self, record: RunRecord) -> tuple[RunRecord, str]:
        """Writes `manifest.json` last: the record completed with every object of the run (but
        its checkpoints) and their sizes. Returns the completed record and the manifest's URI.

        A budget-stopped run continued under its id keeps its earlier manifest under
        `previous/`; any other completed run is never written again."""
        checkpoints = layout.checkpoints_prefix(self.run_id)
        objects = [
            StoredObject(key=key, bytes=size)
            for key, size in self.store.list_objects(layout.run_prefix(self.run_id))
            if not key.startswith(checkpoints)
        ]
        complete = record.model_copy(
            update={"status": "complete", "completed_at": datetime.now(UTC), "objects": objects}
        )
        key = layout.manifest_key(self.run_id)
        continuing = guard_run_prefix(self.store, self.run_id) == "continuing"
        if continuing:
            earlier = read_record(self.store, self.run_id)
            self.store.put_json(
                earlier.model_dump(mode="json", by_alias=True),
                layout.previous_manifest_key(self.run_id, earlier.completed_at.isoformat()),
                overwrite=False,
            )
        body = complete.model_dump(mode="json", by_alias=True)
        if continuing:
            return complete, self.store.put_json(body, key, overwrite=True)
        # exactly once, even when an outage makes the write be retried: a conditional create
        self.store.put_json_if(body, key, etag=None)
        return complete, self.store.uri(key)

    def move_latest(self, manifest_uri: str) -> None:
        """Points runs/latest.json at this run (only ever called after its manifest)."""
        self.store.put_json(
            {"run_id": self.run_id, "manifest": manifest_uri, "at": datetime.now(UTC).isoformat()},
            layout.LATEST,
            overwrite=True,
        )
