"""How many epochs a broken recipe needs before its drop stands clear of seed noise, measured
before the `growing_data` benchmark picks its epochs.

Runs of the CNN on the JPEG archive at one size (`--train` / `--val` / `--test` images, split
`sizes`), `--epochs` each: `--seeds` runs of the recipe that differ only in their seed, then one
run of each broken recipe (a third of the training labels shuffled by the `shuffle_labels`
drill; a tenth of the learning rate). Every run records its validation accuracy after each
epoch (the same validation images for all), so one run per recipe gives the whole curve: for
each epoch it prints the seeds' mean and standard deviation, each broken recipe's drop from the
seeds' mean, and that drop in standard deviations of the difference of two runs (sqrt(2) x the
seeds' standard deviation). The test accuracy after the last epoch is printed too.

    python -m benchmarks.studies.broken_recipe_epochs [--train 8400] [--epochs 12] [--seeds 3]

Needs the local stack (`compare-models up`); everything goes to a scratch bucket, removed after.
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
import sys

import numpy as np

from benchmarks.common import emit, require_archive, run_cli, scratch_bucket
from compare_models.training.drills import Drills


def _run(args, track: str, seed: int, *extra: str, env: dict[str, str] | None = None) -> dict:
    from compare_models.runs.record import RunSummary

    stdout, seconds = run_cli(
        "run", "--preset", "smoke", "--data", str(require_archive()), "--models", "cnn",
        "--epochs", str(args.epochs), "--split.train", str(args.train), "--split.val",
        str(args.val), "--split.test", str(args.test), "--seed", str(seed), "--track", track,
        "--json", *extra, env=env,
    )  # fmt: skip
    return {"summary": RunSummary.model_validate_json(stdout), "seconds": seconds}


def _curve(store, run_id: str) -> list[float]:
    from compare_models.runs.stored import read_record

    return list(read_record(store, run_id).models["cnn"].history["val_accuracy"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=8400)
    ap.add_argument("--val", type=int, default=1200)
    ap.add_argument("--test", type=int, default=2400)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    args = ap.parse_args()

    lr = ["--learning-rate", str(args.learning_rate)]
    recipes = [(f"seed {s}", s, lr, None) for s in range(1, args.seeds + 1)] + [
        ("a third of the labels shuffled", 100, lr, Drills(shuffle_labels=1 / 3).environment()),
        ("learning rate / 10", 100, ["--learning-rate", str(args.learning_rate / 10)], None),
    ]
    runs = []
    with scratch_bucket() as store:
        for name, seed, extra, env in recipes:
            # a track per run: no run becomes another's champion or band here
            out = _run(args, f"epochs-{secrets.token_hex(3)}", seed, *extra, env=env)
            summary = out["summary"]
            runs.append(
                {
                    "recipe": name,
                    "seed": seed,
                    "seconds": out["seconds"],
                    "test_accuracy": round(summary.metrics["cnn"].accuracy, 4),
                    "val_accuracy": [round(v, 4) for v in _curve(store, summary.run_id)],
                }
            )
            print(json.dumps(runs[-1]), file=sys.stderr)

    seeds = np.asarray([r["val_accuracy"] for r in runs[: args.seeds]])
    per_epoch = []
    for epoch in range(seeds.shape[1]):
        mean, sd = float(seeds[:, epoch].mean()), float(seeds[:, epoch].std(ddof=1))
        row = {"epoch": epoch + 1, "seeds_mean": round(mean, 4), "seeds_sd": round(sd, 4)}
        for broken in runs[args.seeds :]:
            drop = mean - broken["val_accuracy"][epoch]
            row[broken["recipe"]] = {
                "drop_points": round(100 * drop, 2),
                "difference_sds": round(drop / (math.sqrt(2) * sd), 2) if sd > 0 else None,
            }
        per_epoch.append(row)
    emit(
        "broken_recipe_epochs",
        {
            "data": "cifar10-jpeg.tar.gz, split sizes",
            "sizes": {"train": args.train, "val": args.val, "test": args.test},
            "epochs": args.epochs,
            "runs": runs,
            "per_epoch": per_epoch,
        },
    )


if __name__ == "__main__":
    main()
