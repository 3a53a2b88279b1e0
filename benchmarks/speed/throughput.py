"""Training throughput inside the pipeline vs a bare `model.fit`, side by side in one run.

Both sides train the same model on the same prepared split with the same thread settings,
each in a fresh process: "pipeline" is the real `train-model` flow run (Prefect logging
callback, NaN guard, per-epoch S3 checkpoints, progress artifact), "bare" is plain
`model.fit`. Which side goes first alternates from rep to rep (bare first in even reps),
so drift on this shared machine and ordering effects hit both. Target: pipeline / bare >= 0.95.

    python -m benchmarks.speed.throughput [--model cnn] [--epochs 3] [--reps 3]

With N epochs the pipeline writes N-1 checkpoints (the last epoch's model is the
published one), so use N >= 2 for a fair comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, emit, require_archive
from compare_models.config import Settings, SplitSpec, TrainParams
from compare_models.data.dataset import prepare_dataset
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.training.jobs import TrainingJob, TrainingResult


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    dataset = prepare_dataset(
        str(require_archive()), SplitSpec(protocol="seed"), store, settings.cache_dir
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    samples: dict[str, list[dict]] = {"bare": [], "pipeline": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            run_id = f"bench-throughput-{os.getpid()}-{rep}"
            job = TrainingJob(
                run_id=run_id,
                model=args.model,
                dataset=dataset,
                threads=args.threads,
                train=TrainParams(epochs=args.epochs),
            )
            job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
            job_path.write_text(job.model_dump_json())

            def bare(job_path: Path = job_path) -> None:
                out = subprocess.run(
                    [sys.executable, "-m", "benchmarks.speed.bare_fit", str(job_path)],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                    cwd=ROOT,
                )
                samples["bare"].append(json.loads(out.stdout.strip().splitlines()[-1]))

            def pipeline(job_path: Path = job_path, result_path: Path = result_path) -> None:
                subprocess.run(
                    [sys.executable, "-m", "flows.train_model", str(job_path), str(result_path)],
                    capture_output=True,
                    env=env,
                    check=True,
                    cwd=ROOT,
                )
                result = TrainingResult.model_validate(
                    json.loads(result_path.read_text())["result"]
                )
                samples["pipeline"].append(
                    result.model_dump(
                        include={"fit_seconds", "train_images_per_second", "peak_rss_mb"}
                    )
                )

            for side in (bare, pipeline) if rep % 2 == 0 else (pipeline, bare):
                side()
            store.delete_prefix(layout.run_prefix(run_id))
    ips = {
        side: statistics.median(s["train_images_per_second"] for s in runs)
        for side, runs in samples.items()
    }
    emit(
        "throughput",
        {
            "data": "cifar10-jpeg seed split",
            "model": args.model,
            "epochs": args.epochs,
            "batch_size": 128,
            "threads": args.threads,
            "train_images": dataset.sizes["train"],
            "reps": args.reps,
            "median_images_per_second": {k: round(v, 1) for k, v in ips.items()},
            "ratio_pipeline_to_bare": round(ips["pipeline"] / ips["bare"], 3),
            "ratio_per_rep": [
                round(p["train_images_per_second"] / b["train_images_per_second"], 3)
                for b, p in zip(samples["bare"], samples["pipeline"], strict=True)
            ],
            "target_ratio": 0.95,
            "samples": samples,
        },
    )


if __name__ == "__main__":
    main()
