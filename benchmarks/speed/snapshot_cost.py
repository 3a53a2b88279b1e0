"""What a dataset version's snapshot costs, cold against incremental, alternating in one run:
real CIFAR-10 training images (JPEG) as class folders in an S3 prefix, `--base` images first
(their version kept as a template), then `--added` more. Each trial times, in turn:

* cold: a snapshot of the grown prefix into a fresh bucket of versions (every file read and
  decoded);
* incremental: a snapshot of the same prefix into a fresh bucket holding only the template's
  version, pointer and pixels (what the previous night left): only the added files are read.

    python -m benchmarks.speed.snapshot_cost [--base 10000] [--added 10000] [--trials 3]

Needs the local stack (`compare-models up`); everything goes to scratch buckets.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from benchmarks.common import emit, require_archive, scratch_bucket
from benchmarks.studies.growing_data import _training_images, _upload


def _copy_all(source, target) -> None:
    """Every object of `source`'s bucket into `target`'s (the previous night's state)."""
    for key, _ in source.list_objects(""):
        target.client.copy_object(
            Bucket=target.bucket, Key=key, CopySource={"Bucket": source.bucket, "Key": key}
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=10_000)
    ap.add_argument("--added", type=int, default=10_000)
    ap.add_argument("--trials", type=int, default=3)
    args = ap.parse_args()

    from compare_models.config import FolderPolicy, SplitSpec
    from compare_models.data.dataset import folder_split_spec
    from compare_models.data.folders import folder_source
    from compare_models.data.snapshot import snapshot

    spec, policy = folder_split_spec(SplitSpec()), FolderPolicy()
    base, added = args.base // 10, args.added // 10
    images = _training_images(require_archive(), base + added)
    trials = []
    with scratch_bucket() as data, scratch_bucket() as template:
        prefix = "team-data/images/"
        source = folder_source(data.uri(prefix))
        _upload(data, prefix, [(f"{c}/{n}", b) for c, f in images.items() for n, b in f[:base]])
        first = snapshot(source, template, spec, policy, name="folder-bench")
        _upload(data, prefix, [(f"{c}/{n}", b) for c, f in images.items() for n, b in f[base:]])
        for trial in range(args.trials):
            for side in ("cold", "incremental"):
                with scratch_bucket() as versions:
                    if side == "incremental":
                        _copy_all(template, versions)
                    started = time.perf_counter()
                    snap = snapshot(source, versions, spec, policy, name="folder-bench")
                    seconds = time.perf_counter() - started
                trials.append(
                    {
                        "trial": trial,
                        "side": side,
                        "seconds": round(seconds, 2),
                        "files_read": snap.downloaded,
                        "decoded": snap.decoded,
                        "images": snap.version.summary.images,
                        "parent": (snap.version.summary.parent or "")[:12],
                        "timings": {k: round(v, 2) for k, v in snap.timings.items()},
                    }
                )
                print(json.dumps(trials[-1]), file=sys.stderr)
    cold = [t["seconds"] for t in trials if t["side"] == "cold"]
    incremental = [t["seconds"] for t in trials if t["side"] == "incremental"]
    emit(
        "snapshot_cost",
        {
            "data": "cifar10-jpeg.tar.gz training images as class folders in S3",
            "base_images": args.base,
            "added_images": args.added,
            "base_version": first.version.version_id[:12],
            "trials": trials,
            "median_cold_seconds": sorted(cold)[len(cold) // 2],
            "median_incremental_seconds": sorted(incremental)[len(incremental) // 2],
            "incremental_over_cold": round(
                sorted(incremental)[len(incremental) // 2] / sorted(cold)[len(cold) // 2], 3
            ),
            "target": "incremental well under half of cold for +10k images",
        },
    )


if __name__ == "__main__":
    main()
