"""A bare `model.fit` of the same model, data, input pipeline and thread settings as a
pipeline job: no callbacks, no checkpoints, no Prefect.

Usage: python -m benchmarks.speed.bare_fit JOB.json  -> prints {"fit_seconds": ..., ...}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from compare_models.config import Settings
from compare_models.data.dataset import load_split
from compare_models.storage.store import ArtifactStore
from compare_models.training.fit import configure_device, peak_rss_mb, training_input
from compare_models.training.jobs import TrainingJob


def main(job_path: str) -> None:
    job = TrainingJob.model_validate_json(Path(job_path).read_text())
    configure_device(job.threads)
    import keras

    from compare_models.models import registry
    from compare_models.models.networks import compile_model, learning_rate_schedule

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    keras.utils.set_random_seed(job.train.seed)
    x, y = load_split(job.dataset, "train", store, settings.cache_dir)
    xv, yv = load_split(job.dataset, "val", store, settings.cache_dir)
    p = job.train
    rate = learning_rate_schedule(
        p.learning_rate, p.lr_schedule, p.epochs * -(-len(y) // p.batch_size)
    )
    model = compile_model(registry.get(job.model).build(), p.optimizer, rate)
    started = time.perf_counter()
    # the same input pipeline (shuffle, flips, batching) as the pipeline; no callbacks
    model.fit(training_input(x, y, p), validation_data=(xv, yv), epochs=p.epochs, verbose=0)
    fit_seconds = time.perf_counter() - started
    print(
        json.dumps(
            {
                "fit_seconds": fit_seconds,
                "train_images_per_second": job.train.epochs * len(y) / fit_seconds,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
