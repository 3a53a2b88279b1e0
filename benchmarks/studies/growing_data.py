"""A nightly on data that grows, on real CIFAR-10 images: the JPEG archive's training images
unpacked into an S3 prefix as class folders (`<prefix>/<class>/<file>.jpg`) over four nights,
`--per-night` images a night (default 10,000: 1,000 a class), and a `compare-models run` of the
CNN each night against the folder, on a track of its own.

Per night it prints: the version and the images added; the snapshot's time, cold (a fresh
bucket: every file read and decoded) and incremental (the run's own, against the previous
night's version: only the new files read and decoded), each timed in this process on the same
prefix; the gate's decision with its numbers; and the test images that leaked into training,
counted here from the versions: every earlier test image must still be test, and no image (by
SHA-256) may be both in training and in test.

    python -m benchmarks.studies.growing_data [--nights 4] [--per-night 10000] [--epochs 2]

Needs the local stack (`compare-models up`); everything goes to scratch buckets, removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from benchmarks.common import ROOT, emit, require_archive, scratch_bucket


def _training_images(archive, per_class_total: int) -> dict[str, list[tuple[str, bytes]]]:
    """{class: [(file name, JPEG bytes)]} of the archive's training images, in name order."""
    found: dict[str, list[tuple[str, bytes]]] = {}
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.isfile() and len(parts) == 4 and parts[1] == "train":
                found.setdefault(parts[2], []).append((parts[3], tar.extractfile(member).read()))
    return {c: sorted(files)[:per_class_total] for c, files in sorted(found.items())}


def _upload(store, prefix: str, files: list[tuple[str, bytes]]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda kv: store.put_bytes(kv[1], prefix + kv[0], overwrite=True), files))
    return time.perf_counter() - started


def _snapshot_seconds(source, store, name: str):
    from compare_models.config import FolderPolicy, SplitSpec
    from compare_models.data.dataset import folder_split_spec
    from compare_models.data.snapshot import snapshot

    started = time.perf_counter()
    snap = snapshot(source, store, folder_split_spec(SplitSpec()), FolderPolicy(), name=name)
    return snap, time.perf_counter() - started


def _leaks(versions) -> dict[str, int]:
    """Images of an earlier version's test set that a later version puts in training, and
    images (by SHA-256) both in training and in test within one version."""
    moved, both = 0, 0
    for earlier, later in zip(versions, versions[1:], strict=False):
        test = {r.sha256 for r in earlier.used("test")}
        moved += sum(1 for r in later.used() if r.sha256 in test and r.split != "test")
    for version in versions:
        training = {r.sha256 for r in version.used() if r.split != "test"}
        both += sum(1 for r in version.used("test") if r.sha256 in training)
    return {"earlier_test_images_now_in_training": moved, "images_in_training_and_test": both}


def _run(data: str, track: str, epochs: int) -> dict:
    command = [
        sys.executable, "-m", "compare_models.cli.main", "run", "--preset", "smoke", "--data", data,
        "--models", "cnn", "--epochs", str(epochs), "--track", track, "--json",
    ]  # fmt: skip
    started = time.perf_counter()
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=7200)
    if out.returncode != 0:
        raise SystemExit(f"the run failed:\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=4)
    ap.add_argument("--per-night", type=int, default=10_000, help="images added each night")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    from compare_models.data.dataset import folder_name
    from compare_models.data.folders import folder_source
    from compare_models.data.versions import read_version

    per_class = args.per_night // 10
    images = _training_images(require_archive(), per_class * args.nights)
    track = f"grow-{secrets.token_hex(3)}"
    nights, versions = [], []
    with scratch_bucket() as store:
        prefix = f"team-data/images-{secrets.token_hex(3)}/"
        data = store.uri(prefix)
        source = folder_source(data)
        for night in range(args.nights):
            new = [
                (f"{c}/{name}", payload)
                for c, files in images.items()
                for name, payload in files[night * per_class : (night + 1) * per_class]
            ]
            upload_s = _upload(store, prefix, new)
            # cold: the same prefix into a fresh bucket of versions (no earlier version, no pixels)
            with scratch_bucket() as cold_store:
                os.environ["COMPARE_MODELS_BUCKET"] = store.bucket  # the run's bucket, restored
                cold, cold_s = _snapshot_seconds(source, cold_store, folder_name(data))
            os.environ["COMPARE_MODELS_BUCKET"] = store.bucket
            incremental, incremental_s = _snapshot_seconds(source, store, folder_name(data))
            assert incremental.version.version_id == cold.version.version_id
            summary = _run(data, track, args.epochs)
            gate = summary["gate"]["cnn"]
            pair = gate.get("comparison") or {}
            versions.append(read_version(store, summary["data"]["version_id"]))
            nights.append(
                {
                    "night": night + 1,
                    "version_id": summary["data"]["version_id"][:12],
                    "images": incremental.version.summary.images,
                    "added": len(new),
                    "upload_seconds": round(upload_s, 1),
                    "snapshot_cold_seconds": round(cold_s, 2),
                    "snapshot_cold_read": cold.downloaded,
                    "snapshot_incremental_seconds": round(incremental_s, 2),
                    "snapshot_incremental_read": incremental.downloaded,
                    "incremental_over_cold": round(incremental_s / cold_s, 3),
                    "sizes": summary["data"]["sizes"],
                    "accuracy": round(summary["metrics"]["cnn"]["accuracy"], 4),
                    "decision": gate["decision"],
                    "rescored": gate.get("rescored", False),
                    "difference_points": round(100 * pair["difference"]["accuracy"]["estimate"], 2)
                    if pair
                    else None,
                    "mcnemar_p": pair["mcnemar"]["pvalue"] if pair else None,
                    "band_points": round(100 * gate["band"]["points"], 2)
                    if gate.get("band")
                    else None,
                    "reason": gate["reason"],
                    "run_seconds": summary["seconds"],
                    "leaked_recorded": summary["data"].get("leaked"),
                }
            )
            print(json.dumps(nights[-1]), file=sys.stderr)
    emit(
        "growing_data",
        {
            "data": "cifar10-jpeg.tar.gz training images as class folders in S3",
            "per_night": args.per_night,
            "epochs": args.epochs,
            "nights": nights,
            "leaks": _leaks(versions),
            "targets": {"incremental_over_cold": "well under 0.5", "leaked": 0},
        },
    )


if __name__ == "__main__":
    main()
