"""A bare `model.fit` of the same model, data and thread settings as a pipeline job.

Usage: python benchmarks/_bare_fit.py JOB.json  -> prints {"fit_seconds": ..., ...}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks.config import Settings  # noqa: E402
from tasks.data import load_split  # noqa: E402
from tasks.store import ArtifactStore  # noqa: E402
from tasks.training import TrainingJob, configure_device, peak_rss_mb  # noqa: E402


def main(job_path: str) -> None:
    job = TrainingJob.model_validate_json(Path(job_path).read_text())
    configure_device(job.threads)
    import keras

    from tasks.models import build_model, compile_model

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    keras.utils.set_random_seed(job.train.seed)
    x, y = load_split(job.dataset, "train", store, settings.cache_dir)
    xv, yv = load_split(job.dataset, "val", store, settings.cache_dir)
    model = compile_model(build_model(job.model), job.train.optimizer, job.train.learning_rate)
    started = time.perf_counter()
    model.fit(x, y, validation_data=(xv, yv), epochs=job.train.epochs, batch_size=job.train.batch_size, verbose=0)
    fit_seconds = time.perf_counter() - started
    print(json.dumps({"fit_seconds": fit_seconds, "train_images_per_second": job.train.epochs * len(y) / fit_seconds,
                      "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main(sys.argv[1])
