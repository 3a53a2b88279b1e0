"""Training from shards: memory bounded by the batch, and the speed against in-memory arrays.

The data is CIFAR-10's training images (../shared/data/cifar10-jpeg.tar.gz), enlarged: a
folder of the first N images per ten classes, snapshotted at `--side` pixels (the product's
decoding, bicubic when enlarging) and prepared as the product prepares it (hash split, shards
in the dev stack's S3). Every training is the product's own (`python -m flows.train_model`,
the CNN, 1 epoch, batch 128 or `--batch-size`, the worker's threads), in a fresh process, with
COMPARE_MODELS_IN_MEMORY_MIB choosing the path: 0 streams every split from its shards, a large
value reads them whole into memory. It reports:

* `memory`: the peak resident memory of a 1-epoch training streamed from shards, at each
  folder size (target: under 2 GiB, and not growing with the images; at the smallest size,
  the first streamed training of `fits`);
* `fits`: images per second, shards against in memory, on the smallest folder (a split that
  fits), the two alternating for `--rounds` rounds (target: shards / memory >= 0.9);
* `cifar32`: the same at CIFAR-10's 32 x 32 on the seed protocol's split (the data where the
  in-memory path stays, below COMPARE_MODELS_IN_MEMORY_MIB);
* `write`: the seconds to write a split's shards to S3, per GiB;
* `windows`: on the second folder size, a streamed training whose shard cache holds the whole
  training split against one whose cache (`--window-cache-gib`) is smaller than the split, so
  that it reads a window of shards at a time, alternating: images per second, the peak memory,
  and the most disk the training split's shards took in the cache.

    python -m benchmarks.speed.streaming [--sizes 10000,25000,50000] [--side 128] [--rounds 2]
        [--batch-size 128] [--cifar-rounds 2] [--window-cache-gib 0.4]
        [--skip cifar32,write,fits,windows,memory]

Needs the dev stack (`compare-models up`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import ROOT, emit, require_archive
from compare_models.config import FolderPolicy, Settings, SplitSpec, TrainParams
from compare_models.data.dataset import (
    DatasetRef,
    prepare_dataset,
    prepare_folder,
    split_images_uint8,
    split_labels,
)
from compare_models.data.shards import write_split
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore
from compare_models.training.jobs import TrainingJob, TrainingResult

STREAM, MEMORY = "shards", "memory"
IN_MEMORY_MIB = {STREAM: "0", MEMORY: str(1 << 20)}


def extract(archive: Path, into: Path) -> Path:
    """The archive's training images, `<class>/<file>.jpg`, under `into`."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "/train/" in m.name]
        tar.extractall(into, members=members, filter="data")
    return next(into.rglob("train"))


def folder_of(train: Path, per_class: int, into: Path) -> Path:
    """A folder of the first `per_class` images of each class (hard links)."""
    for class_dir in sorted(p for p in train.iterdir() if p.is_dir()):
        target = into / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(class_dir.iterdir())[:per_class]:
            os.link(path, target / path.name)
    return into


def train(
    dataset: DatasetRef,
    path: str,
    run_id: str,
    threads: int,
    batch_size: int = 128,
    cache_gib: float | None = None,
) -> dict:
    """One epoch of the CNN through the product's training process, on `path` (shards or
    memory), with the worker's shard cache or one of `cache_gib`: what it published (images/s,
    seconds in fit, peak resident memory), and the most disk the training split's shards took
    in the cache meanwhile (sampled every 0.5 s)."""
    job = TrainingJob(
        run_id=run_id,
        model="cnn",
        dataset=dataset,
        threads=threads,
        checkpoint=False,
        train=TrainParams(epochs=1, batch_size=batch_size),
    )
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "COMPARE_MODELS_IN_MEMORY_MIB": IN_MEMORY_MIB[path],
        **({"COMPARE_MODELS_SHARD_CACHE_GIB": str(cache_gib)} if cache_gib else {}),
    }
    shard_files = [Settings().cache_dir / s.key for s in dataset.shards["train"].shards]
    peak_cache, done = [0], threading.Event()

    def sample_cache() -> None:
        while not done.wait(0.5):
            held = sum(f.stat().st_size for f in shard_files if f.exists())
            peak_cache[0] = max(peak_cache[0], held)

    sampler = threading.Thread(target=sample_cache, daemon=True)
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json())
        out = subprocess.run(
            [sys.executable, "-m", "flows.train_model", str(job_path), str(result_path)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        done.set()
        if out.returncode != 0:
            raise SystemExit(f"training {run_id} failed:\n{out.stderr[-3000:]}")
        result = TrainingResult.model_validate(json.loads(result_path.read_text())["result"])
    expected = "shard windows" if cache_gib else path
    if result.device.get("input", {}).get("train") != expected:
        raise SystemExit(f"{run_id} read its training split from {result.device.get('input')}")
    return {
        "path": path,
        "train_images": dataset.sizes["train"],
        "images_per_second": round(result.train_images_per_second, 1),
        "fit_seconds": round(result.fit_seconds, 1),
        "peak_rss_mib": round(result.peak_rss_mb),
        "cache_gib": cache_gib or Settings().shard_cache_gib,
        "train_split_mib": round(dataset.shards["train"].bytes / 2**20),
        "peak_train_shards_in_cache_mib": round(peak_cache[0] / 2**20),
    }


def alternate(
    dataset: DatasetRef, rounds: int, tag: str, threads: int, store, batch_size: int = 128
) -> dict:
    """Shards and memory, alternating (memory first in even rounds), `rounds` times each."""
    samples: dict[str, list[dict]] = {STREAM: [], MEMORY: []}
    for r in range(rounds):
        for path in (MEMORY, STREAM) if r % 2 == 0 else (STREAM, MEMORY):
            run_id = f"bench-stream-{tag}-{os.getpid()}-{r}-{path}"
            samples[path].append(train(dataset, path, run_id, threads, batch_size))
            store.delete_prefix(layout.run_prefix(run_id))
            print(json.dumps({tag: samples[path][-1]}), flush=True)
    median = {
        p: statistics.median(s["images_per_second"] for s in runs) for p, runs in samples.items()
    }
    return {
        "train_images": dataset.sizes["train"],
        "image_size": dataset.image_size,
        "median_images_per_second": median,
        "ratio_shards_to_memory": round(median[STREAM] / median[MEMORY], 3),
        "ratio_per_round": [
            round(s["images_per_second"] / m["images_per_second"], 3)
            for s, m in zip(samples[STREAM], samples[MEMORY], strict=True)
        ],
        "samples": samples,
    }


def windowed(dataset: DatasetRef, args, store) -> dict:
    """Streamed trainings with the whole training split in the cache and with a cache smaller
    than the split (read a window of shards at a time), alternating, `args.rounds` times."""
    if dataset.shards["train"].bytes <= args.window_cache_gib * 2**30:
        raise SystemExit(
            f"the training split fits in {args.window_cache_gib} GiB: nothing to window"
        )
    samples: dict[str, list[dict]] = {"whole": [], "windows": []}
    for r in range(args.rounds):
        for side in ("whole", "windows") if r % 2 == 0 else ("windows", "whole"):
            run_id = f"bench-stream-windows-{os.getpid()}-{r}-{side}"
            cache_gib = args.window_cache_gib if side == "windows" else None
            sample = train(dataset, STREAM, run_id, args.threads, args.batch_size, cache_gib)
            samples[side].append(sample)
            store.delete_prefix(layout.run_prefix(run_id))
            print(json.dumps({"windows": {"side": side, **sample}}), flush=True)
    return {
        "train_images": dataset.sizes["train"],
        "median_images_per_second": {
            side: statistics.median(s["images_per_second"] for s in runs)
            for side, runs in samples.items()
        },
        "samples": samples,
    }


def write_rate(dataset: DatasetRef, store, cache: Path) -> dict:
    """Seconds per GiB to write the training split's shards anew (to a scratch prefix)."""
    y = split_labels(dataset, "train", store, cache)
    pixels = split_images_uint8(dataset, "train", store, cache, y)
    prefix = layout.splits_prefix("bench-shards", "0" * 64, f"{os.getpid():016x}"[-16:])
    started = time.perf_counter()
    manifest = write_split(pixels, y, prefix, "train", store, cache / "bench-work")
    seconds = time.perf_counter() - started
    store.delete_prefix(prefix)
    return {
        "images": manifest.images,
        "shards": len(manifest.shards),
        "gib": round(manifest.bytes / 2**30, 3),
        "seconds": round(seconds, 1),
        "seconds_per_gib": round(seconds / (manifest.bytes / 2**30), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,25000,50000", help="images in each folder")
    ap.add_argument("--side", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2, help="alternations at the enlarged size")
    ap.add_argument("--cifar-rounds", type=int, default=2, help="alternations at 32 x 32")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch-size", type=int, default=128, help="the trainings' batch")
    ap.add_argument("--window-cache-gib", type=float, default=0.4,
                    help="the shard cache of `windows`' windowed trainings")  # fmt: skip
    ap.add_argument("--skip", default="", help="comma-separated parts to leave out")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    sizes = [int(s) for s in args.sizes.split(",")]

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    cache = settings.cache_dir
    result: dict = {
        "data": f"CIFAR-10 training images (cifar10-jpeg), enlarged to {args.side}x{args.side} "
        "by the product's decoding (bicubic)",
        "model": "cnn",
        "epochs": 1,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "keras_backend": "the CNN's CPU default (tensorflow)",
    }
    if "cifar32" not in skip:
        seed = prepare_dataset(str(require_archive()), SplitSpec(protocol="seed"), store, cache)
        result["cifar32"] = alternate(
            seed, args.cifar_rounds, "cifar32", args.threads, store, args.batch_size
        )
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        train_dir = extract(require_archive(), Path(tmp) / "cifar")
        versions = {}
        for n in sizes:
            folder = folder_of(train_dir, n // 10, Path(tmp) / f"folder-{n}")
            started = time.perf_counter()
            ref, _ = prepare_folder(
                str(folder),
                SplitSpec(protocol="hash"),
                FolderPolicy(image_size=args.side),
                store,
                cache,
            )
            versions[n] = ref
            print(
                json.dumps(
                    {"prepared": n, "seconds": round(time.perf_counter() - started, 1),
                     "sizes": ref.sizes, "storage": ref.storage()}
                ),
                flush=True,
            )  # fmt: skip
        if "write" not in skip:
            result["write"] = write_rate(versions[sizes[-1]], store, cache)
            print(json.dumps({"write": result["write"]}), flush=True)
        if "fits" not in skip:
            result["fits"] = alternate(
                versions[sizes[0]], args.rounds, "fits", args.threads, store, args.batch_size
            )
        if "windows" not in skip:
            result["windows"] = windowed(
                versions[sizes[1] if len(sizes) > 1 else sizes[0]], args, store
            )
        if "memory" not in skip:
            result["memory"] = []
            for n in sizes:
                if n == sizes[0] and "fits" in result:  # streamed at this size already
                    sample = result["fits"]["samples"][STREAM][0]
                    result["memory"].append({"folder_images": n, **sample})
                    continue
                run_id = f"bench-stream-memory-{os.getpid()}-{n}"
                sample = train(versions[n], STREAM, run_id, args.threads, args.batch_size)
                store.delete_prefix(layout.run_prefix(run_id))
                result["memory"].append({"folder_images": n, **sample})
                print(json.dumps({"memory": result["memory"][-1]}), flush=True)
    emit("streaming", result)


if __name__ == "__main__":
    main()
