"""The gate against retraining noise, on real CIFAR-10: N runs of one recipe that differ only in
their training seed, on a track of their own (the first becomes the champion), then broken
recipes judged against the same champion: a third of the training labels shuffled (the
`shuffle_labels` drill, `compare_models.training.drills`), and a tenth of the learning rate.
With the default policy the seed runs should raise no regression alert, and every broken run
should be one.

    python -m benchmarks.studies.gate_noise [--runs 6] [--epochs 5] [--broken-trials 2]

Each run is `compare-models run --preset smoke --models cnn --epochs E --seed S --track T`
(2,000 training images, the same 1,000 test images). Prints one JSON document: per run its
seed, accuracy, decision, the difference against the champion, McNemar's p, the noise band
and its source; then the counts of alerts and promotions.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from benchmarks.common import emit, require_archive, run_cli, scratch_bucket
from compare_models.training.drills import Drills


def _run(args, track: str, seed: int, *extra: str, env: dict[str, str] | None = None) -> dict:
    from compare_models.runs.record import RunSummary

    stdout, seconds = run_cli(
        "run", "--preset", "smoke", "--data", str(require_archive()), "--models", "cnn",
        "--epochs", str(args.epochs), "--seed", str(seed), "--track", track, "--json", *extra,
        env=env, timeout=3600,
    )  # fmt: skip
    summary = RunSummary.model_validate_json(stdout)
    decision = summary.gate["cnn"]
    pair, band = decision.comparison, decision.band
    return {
        "seed": seed,
        "run_id": summary.run_id,
        "seconds": seconds,
        "accuracy": round(summary.metrics["cnn"].accuracy, 4),
        "decision": decision.decision,
        "difference_points": round(100 * pair.difference.accuracy.estimate, 2) if pair else None,
        "mcnemar_p": pair.mcnemar.pvalue if pair else None,
        "band_points": round(100 * band.points, 2) if band else None,
        "band_source": band.source if band else None,
        "reason": decision.reason,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=6, help="runs of the recipe (N >= 6)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--learning-rate", type=float, default=1e-3)
    ap.add_argument("--broken-trials", type=int, default=2, help="trials of each broken recipe")
    args = ap.parse_args()

    track = f"noise-{secrets.token_hex(3)}"
    lr = ["--learning-rate", str(args.learning_rate)]
    seeds, broken = [], []
    with scratch_bucket():
        for seed in range(1, args.runs + 1):
            seeds.append(_run(args, track, seed, *lr))
            print(json.dumps(seeds[-1]), file=sys.stderr)
        for trial in range(args.broken_trials):
            seed = 100 + trial
            for label, extra, env in (
                ("labels: a third shuffled", lr, Drills(shuffle_labels=0.3333).environment()),
                ("learning rate / 10", ["--learning-rate", str(args.learning_rate / 10)], None),
            ):
                broken.append({"recipe": label, **_run(args, track, seed, *extra, env=env)})
                print(json.dumps(broken[-1]), file=sys.stderr)
    challengers = seeds[1:]
    emit(
        "gate_noise",
        {
            "settings": {
                "preset": "smoke",
                "model": "cnn",
                "epochs": args.epochs,
                "learning_rate": args.learning_rate,
                "runs": args.runs,
                "broken_trials": args.broken_trials,
                "data": "cifar10-jpeg",
                "track": track,
                "policy": "default",
            },
            "seed_runs": seeds,
            "broken_runs": broken,
            "summary": {
                "seed_regression_alerts": sum(r["decision"] == "regression" for r in challengers),
                "seed_promotions": sum(r["decision"] == "promoted" for r in challengers),
                "seed_within_noise": sum(r["decision"] == "within-noise" for r in challengers),
                "seed_challengers": len(challengers),
                "broken_regressions": sum(r["decision"] == "regression" for r in broken),
                "broken_runs": len(broken),
            },
        },
    )


if __name__ == "__main__":
    main()
