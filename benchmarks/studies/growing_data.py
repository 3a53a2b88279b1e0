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

Then the gate on data that grows: after the last normal night, `--replicas` seed replicas at
its size on a track of their own (their band is what the curve's band is measured against,
overall and, beside the class bands estimated from one run's predictions, per class), and a
further night where two broken recipes run on the track: a third of the training labels
shuffled (the `shuffle_labels` drill) and a tenth of the learning rate. Targets: no regression
among the normal nights; every broken recipe a regression; the last normal night's band
within 2x the replicas'.

    python -m benchmarks.studies.growing_data [--nights 6] [--per-night 2000] [--epochs E] [--no-cold]

Needs the local stack (`compare-models up`); everything goes to scratch buckets, removed after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath

from benchmarks.common import RESULTS, emit, require_archive, run_cli, scratch_bucket


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


def _run(data: str, track: str, epochs: int, *extra: str, env: dict | None = None) -> dict:
    stdout, seconds = run_cli(
        "run", "--preset", "smoke", "--data", data, "--models", "cnn", "--epochs", str(epochs),
        "--track", track, "--json", *extra, env=env,
    )  # fmt: skip
    return {**json.loads(stdout), "seconds": seconds}


def _gate_row(store, summary: dict) -> dict:
    """The gate's decision on a run, with its band: where it came from, the curve's prediction
    and tonight's residual, and the classes judged worse."""
    from compare_models.runs.stored import read_record

    record = read_record(store, summary["run_id"])
    decision = record.gate["cnn"]
    pair, band = decision.comparison, decision.band
    curve = band.curve if band else None
    accuracy = record.metrics["cnn"].accuracy
    return {
        "run_id": record.run_id,
        "train_images": record.dataset.sizes["train"],
        "test_images": record.dataset.sizes["test"],
        "accuracy": round(accuracy, 4),
        "decision": decision.decision,
        "rescored": decision.rescored,
        "difference_points": round(100 * pair.difference.accuracy.estimate, 2) if pair else None,
        "mcnemar_p": pair.mcnemar.pvalue if pair else None,
        "worse_classes": list(pair.worse_classes) if pair else [],
        "band_points": round(100 * band.points, 2) if band else None,
        "band_source": band.source if band else None,
        "band_runs": band.runs if band else None,
        "class_band_source": (band.class_source or band.source) if band else None,
        "class_band_points": {c: round(100 * w, 1) for c, w in band.class_points.items()}
        if band
        else None,
        "curve": curve.fit.describe() if curve else None,
        "predicted": round(curve.predicted, 4) if curve else None,
        "residual_points": round(100 * (accuracy - curve.predicted), 2) if curve else None,
        "residual_band_points": round(100 * curve.residual_points, 2) if curve else None,
        "reason": decision.reason,
        "run_seconds": summary["seconds"],
        "leaked_recorded": summary["data"].get("leaked"),
    }


def _replica_bands(store, summary: dict, coverage: float) -> dict:
    """The band that the run's seed replicas give (overall and per class), beside the class
    bands estimated from its kept model's test predictions alone."""
    from compare_models.config import Settings
    from compare_models.gate import noise_band
    from compare_models.runs.artifacts import RunArtifacts
    from compare_models.runs.stored import read_record
    from compare_models.statistics.class_noise import class_recall_bands

    record = read_record(store, summary["run_id"])
    replicas = noise_band.band_for(record, "cnn", [])
    assert replicas.source == "replicas", replicas.detail
    artifacts = RunArtifacts.of(store, record.run_id, record.dataset, Settings().cache_dir)
    try:
        probs = artifacts.model_predictions(record.models)["cnn"]
        predicted = class_recall_bands(
            probs, artifacts.test_labels(), record.dataset.class_names, coverage=coverage
        ).widths
    finally:
        artifacts.close()
    ratio = {c: predicted[c] / w for c, w in replicas.class_points.items() if w > 0}
    return {
        "run_id": record.run_id,
        "replicas": len(record.replica_metrics["cnn"]),
        "accuracies": [round(m.accuracy, 4) for m in record.replica_metrics["cnn"]],
        "band_points": round(100 * replicas.points, 2),
        "class_band_points": {c: round(100 * w, 1) for c, w in replicas.class_points.items()},
        "predicted_class_band_points": {c: round(100 * w, 1) for c, w in predicted.items()},
        "predicted_over_replicas_median": round(float(sorted(ratio.values())[len(ratio) // 2]), 2)
        if ratio
        else None,
    }


def _after_runs(step, *args):
    """A step that reads the finished runs back: its failure is printed and kept in the
    result, not allowed to throw away the hours of training before it."""
    try:
        return step(*args)
    except Exception as exc:  # noqa: BLE001 - reported, and the benchmark goes on
        print(f"{step.__name__} failed: {exc!r}", file=sys.stderr)
        return {"error": repr(exc)}


def _draw_curve(store, summary: dict, label: str) -> None:
    """The report's learning-curve figure of a run, kept in benchmarks/results/ (the docs show
    one)."""
    from compare_models.report.learning_curve import plot_learning_curves
    from compare_models.runs.stored import read_record

    record = read_record(store, summary["run_id"])
    name = "growing_data_curve_" + "".join(c if c.isalnum() else "_" for c in label) + ".png"
    plot_learning_curves(
        record.gate, {m: record.metrics[m].accuracy for m in record.metrics}, RESULTS / name
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nights", type=int, default=6, help="normal nights")
    ap.add_argument("--per-night", type=int, default=2_000, help="images added each night")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument(
        "--replicas", type=int, default=3, help="seed replicas at the last night's size"
    )
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--no-broken", action="store_true", help="no broken recipes after the nights")
    ap.add_argument("--no-cold", action="store_true", help="skip the cold snapshots' timing")
    args = ap.parse_args()

    from compare_models.config import NoisePolicy
    from compare_models.data.dataset import folder_name
    from compare_models.data.folders import folder_source
    from compare_models.data.versions import read_version
    from compare_models.training.drills import Drills

    per_class = args.per_night // 10
    total = args.nights + (0 if args.no_broken else 1)
    images = _training_images(require_archive(), per_class * total)
    track = f"grow-{secrets.token_hex(3)}"
    lr = ["--learning-rate", str(args.learning_rate)]
    nights, versions, replicas, broken = [], [], None, []
    with scratch_bucket() as store:
        prefix = f"team-data/images-{secrets.token_hex(3)}/"
        data = store.uri(prefix)
        source = folder_source(data)
        for night in range(total):
            new = [
                (f"{c}/{name}", payload)
                for c, files in images.items()
                for name, payload in files[night * per_class : (night + 1) * per_class]
            ]
            upload_s = _upload(store, prefix, new)
            cold, cold_s = None, None
            if not args.no_cold:
                # cold: the same prefix into a fresh bucket of versions (no earlier version)
                with scratch_bucket() as cold_store:
                    os.environ["COMPARE_MODELS_BUCKET"] = store.bucket  # restored below
                    cold, cold_s = _snapshot_seconds(source, cold_store, folder_name(data))
            os.environ["COMPARE_MODELS_BUCKET"] = store.bucket
            incremental, incremental_s = _snapshot_seconds(source, store, folder_name(data))
            assert cold is None or incremental.version.version_id == cold.version.version_id
            timing = {
                "night": night + 1,
                "images": incremental.version.summary.images,
                "added": len(new),
                "upload_seconds": round(upload_s, 1),
                "snapshot_cold_seconds": round(cold_s, 2) if cold_s else None,
                "snapshot_incremental_seconds": round(incremental_s, 2),
                "snapshot_incremental_read": incremental.downloaded,
            }
            if night < args.nights:
                summary = _run(data, track, args.epochs, *lr)
                versions.append(read_version(store, summary["data"]["version_id"]))
                nights.append({**timing, "version_id": summary["data"]["version_id"][:12],
                               **_gate_row(store, summary)})  # fmt: skip
                print(json.dumps(nights[-1]), file=sys.stderr)
                if night == args.nights - 1 and args.replicas >= 2:
                    # seed replicas at this size, on a track of their own: not the band they measure
                    own = _run(data, f"{track}-replicas", args.epochs, *lr,
                               "--train.replicas", str(args.replicas), "--seed", "1000")  # fmt: skip
                    replicas = _after_runs(_replica_bands, store, own, NoisePolicy().coverage)
                    print(json.dumps(replicas), file=sys.stderr)
                continue
            for label, extra, env in (
                ("a third of the labels shuffled", lr, Drills(shuffle_labels=1 / 3).environment()),
                ("learning rate / 10", ["--learning-rate", str(args.learning_rate / 10)], None),
            ):
                summary = _run(data, track, args.epochs, *extra, env=env)
                broken.append({**timing, "recipe": label, **_gate_row(store, summary)})
                print(json.dumps(broken[-1]), file=sys.stderr)
                _after_runs(_draw_curve, store, summary, label)
    normal = nights[1:]
    last = nights[-1]
    emit(
        "growing_data",
        {
            "data": "cifar10-jpeg.tar.gz training images as class folders in S3",
            "per_night": args.per_night,
            "epochs": args.epochs,
            "learning_rate": args.learning_rate,
            "nights": nights,
            "replicas": replicas,
            "broken": broken,
            "leaks": _leaks(versions),
            "summary": {
                "normal_regressions": sum(r["decision"] == "regression" for r in normal),
                "normal_compared": len(normal),
                "broken_regressions": sum(r["decision"] == "regression" for r in broken),
                "broken_runs": len(broken),
                "last_night_band_points": last["band_points"],
                "last_night_band_source": last["band_source"],
                "replica_band_points": (replicas or {}).get("band_points"),
                "last_over_replicas": round(last["band_points"] / replicas["band_points"], 2)
                if replicas and replicas.get("band_points") and last["band_points"]
                else None,
            },
            "targets": {
                "normal_regressions": 0,
                "broken_regressions": "all",
                "last_over_replicas": "<= 2",
                "leaked": 0,
            },
        },
    )


if __name__ == "__main__":
    main()
