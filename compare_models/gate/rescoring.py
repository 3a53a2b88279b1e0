"""A champion re-scored on today's test images: its stored model predicts the current run's
test split, so that the gate can pair it with the challenger on the same images when the
champion was tested on other ones (the data grew, or was split anew).

`rescore` runs in a process of its own (`python -m compare_models.gate.rescoring REQUEST_JSON`,
started by the gate task through `rescore_in_own_process`) because the parent flow never loads
TensorFlow; the predictions go
to `layout.rescored_key`, in the format of a training's, and the request's model key and
dataset are untrusted (they come from a champion record in the bucket): the model must be a
`.keras` file of a run, the dataset a prepared split of this project.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compare_models.config import project_root
from compare_models.data.dataset import DatasetRef, check_ref
from compare_models.device import selected_backend
from compare_models.storage import layout
from compare_models.training.process import ProcessTimedOut, run_in_own_process
from compare_models.training.zygote import WarmStart

#: What a warm re-scoring process has imported before it forks (`training.zygote`).
RESCORING_PRELOAD = (
    "compare_models.gate.rescoring",
    "compare_models.training.publish",
    "compare_models.models.networks",
)

MODEL_KEY = r"^runs/[A-Za-z0-9._-]{1,128}/models/[a-z][a-z0-9_.-]{0,40}\.keras$"


class RescoreRequest(BaseModel):
    """Which stored model predicts which test split, and where its predictions go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_key: str = Field(pattern=MODEL_KEY)
    dataset: DatasetRef
    out_key: str = Field(pattern=r"^runs/[A-Za-z0-9._-]{1,128}/rescored/")
    threads: int = Field(default=1, ge=1, le=256)
    store_outage_minutes: float = Field(default=0, ge=0, le=24 * 60)


class Rescored(BaseModel):
    """What `rescore` did."""

    predictions_key: str
    images: int
    seconds: float


def rescore(request: RescoreRequest) -> Rescored:
    """Loads the model, predicts the test split, stores the probabilities (float32)."""
    from compare_models.config import Settings, TrainingRuntime
    from compare_models.data.dataset import read_split
    from compare_models.storage.store import ArtifactStore
    from compare_models.training.backend import configure_device, prepare_environment

    prepare_environment()  # before Keras loads, as in a training process
    from compare_models.training.publish import predict_in_full_batches, prediction_batch

    started = time.perf_counter()
    check_ref(request.dataset)
    settings = Settings()
    configure_device(
        request.threads, require_gpu=False, allow_cpu=True, cache_dir=settings.cache_dir
    )
    from compare_models.models.networks import load_model

    store = ArtifactStore.from_settings(settings, outage_minutes=request.store_outage_minutes)
    # whole in memory up to the worker's threshold, else from the shards, batch by batch
    x_test, _ = read_split(
        request.dataset, "test", store, settings.cache_dir, TrainingRuntime().in_memory_mib
    )
    with tempfile.TemporaryDirectory(dir=settings.cache_dir) as tmp:
        local = store.download(request.model_key, Path(tmp) / "model.keras")
        model = load_model(local)
        outputs = model.outputs[0].shape[-1]
        if outputs != len(request.dataset.class_names):
            raise ValueError(
                f"the model {request.model_key} has {outputs} outputs, the data "
                f"{len(request.dataset.class_names)} classes: it cannot be re-scored on it"
            )
        probs = predict_in_full_batches(model, x_test, prediction_batch(model)).astype(np.float32)
        np.savez_compressed(Path(tmp) / "predictions.npz", y_prob=probs)
        store.upload(Path(tmp) / "predictions.npz", request.out_key, overwrite=True)
    return Rescored(
        predictions_key=request.out_key, images=len(x_test), seconds=time.perf_counter() - started
    )


def request_for(
    run_id: str,
    champion_run_id: str,
    name: str,
    model_key: str,
    dataset: DatasetRef,
    threads: int,
    store_outage_minutes: float = 0,
) -> RescoreRequest:
    return RescoreRequest(
        model_key=model_key,
        dataset=dataset,
        out_key=layout.rescored_key(run_id, champion_run_id, name),
        threads=threads,
        store_outage_minutes=store_outage_minutes,
    )


def rescore_in_own_process(request: RescoreRequest, *, timeout: float) -> Rescored:
    """`rescore(request)` in a process of its own (`run_in_own_process`), in the project's
    folder; what it did (the `Rescored` it printed). Raises `champions.RescoreFailed` when it
    ran past `timeout` seconds or failed (with the last line it wrote to standard error)."""
    # Imported here: `champions` loads SciPy and scikit-learn, which the re-scoring process
    # (this module's `main`) never needs; only the parent, which has them loaded, gets here.
    from compare_models.gate.champions import RescoreFailed

    try:
        outcome = run_in_own_process(
            [sys.executable, "-m", "compare_models.gate.rescoring", request.model_dump_json()],
            timeout=timeout,
            cwd=project_root(),
            warm=WarmStart(backend=selected_backend(), preload=RESCORING_PRELOAD),
        )
    except ProcessTimedOut:
        raise RescoreFailed(f"re-scoring took longer than {timeout:g} s") from None
    if outcome.returncode != 0:
        last = (outcome.errors.strip().splitlines() or ["no output"])[-1][:300]
        raise RescoreFailed(f"re-scoring failed ({last})")
    return Rescored.model_validate_json(outcome.output.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    """`python -m compare_models.gate.rescoring REQUEST_JSON`: prints the `Rescored` JSON."""
    if len(argv) != 1:
        print("usage: python -m compare_models.gate.rescoring REQUEST_JSON", file=sys.stderr)
        return 2
    print(rescore(RescoreRequest.model_validate_json(argv[0])).model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
