"""The report's protocol on the real data through the whole pipeline.

16,250 train / 8,750 validation / 10,000 test images, 10 epochs, batch 128. Prints test
metrics, training time and peak memory of each training process. Target: CNN test
accuracy >= 0.65 (the report: CNN 0.5493, ResNet50 0.6333 with ImageNet weights).

    python -m benchmarks.studies.seed_protocol [--models cnn,resnet50] [--resnet-weights none] [--epochs 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from benchmarks.common import ROOT, emit, require_archive


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="cnn")
    ap.add_argument("--resnet-weights", default="none")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    cmd = [
        sys.executable,
        "-m",
        "compare_models.cli.main",
        "run",
        "--preset",
        "seed",
        "--data",
        str(require_archive()),
        "--models",
        args.models,
        "--resnet-weights",
        args.resnet_weights,
        "--epochs",
        str(args.epochs),
        "--threads",
        str(args.threads),
        "--json",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        sys.exit(out.stderr[-4000:])
    from compare_models.config import Settings
    from compare_models.runs.record import RunSummary
    from compare_models.runs.stored import read_record
    from compare_models.storage.store import ArtifactStore

    summary = RunSummary.model_validate_json(out.stdout)
    store = ArtifactStore.from_settings(Settings())
    record = read_record(store, summary.run_id)
    manifest_models = {}
    for model, info in record.models.items():
        metrics = summary.metrics[model]
        manifest_models[model] = {
            "test_accuracy": round(metrics.accuracy, 4),
            "f1_macro": round(metrics.f1_macro, 4),
            "roc_auc_macro": round(metrics.roc_auc_macro, 4),
            "fit_seconds": round(info.fit_seconds, 1),
            "train_images_per_second": round(info.train_images_per_second, 1),
            "peak_rss_mb": round(info.peak_rss_mb),
            "threads": info.device["threads"],
        }
    emit(
        f"seed_protocol_{args.models.replace(',', '+')}",
        {
            "data": "cifar10-jpeg.tar.gz (real CIFAR-10, JPEG re-encoded)",
            "split": record.dataset.sizes,
            "epochs": args.epochs,
            "batch_size": 128,
            "resnet_weights": args.resnet_weights,
            "run_id": summary.run_id,
            "report": summary.report,
            "models": manifest_models,
            "targets": {"cnn_test_accuracy": 0.65},
        },
    )


if __name__ == "__main__":
    main()
