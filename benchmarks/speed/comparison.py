"""Cost of the paired statistics and the diagnostic figures added to a run.

Builds synthetic labels, two models' probabilities (about 75% and 80% accurate) and 32x32x3
uint8 images for n test images, then times, separately, ``compare_all`` (paired bootstrap,
McNemar, Holm) and each figure function, reporting the median of ``--reps`` repetitions.
``import_s`` is the one-off cost of importing both modules in this process (mostly
scikit-learn, which a pipeline run has usually imported already). Target: statistics plus
figures add at most 3 s to a run, with ``compare_all`` well under 2 s.

    python -m benchmarks.speed.comparison [--n 10000] [--resamples 2000] [--reps 3]

Prints one JSON line and writes it to benchmarks/results/comparison.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import emit

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, dict, np.ndarray]:
    """Labels, two models' softmax probabilities and uint8 images."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    probs = {}
    for name, accuracy in (("cnn", 0.75), ("resnet50", 0.80)):
        pred = np.where(rng.random(n) < accuracy, y, (y + rng.integers(1, k, n)) % k)
        logits = rng.normal(size=(n, k))
        logits[np.arange(n), pred] += 3.0
        prob = np.exp(logits)
        probs[name] = prob / prob.sum(axis=1, keepdims=True)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return y, probs, images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="test images")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    args = ap.parse_args()

    start = time.perf_counter()
    from compare_models.report.diagnostics import (
        confident_mistakes,
        disagreement_gallery,
        reliability_diagram,
    )
    from compare_models.statistics.paired import compare_all

    import_s = time.perf_counter() - start

    y, probs, images = synthetic(args.n, len(CLASSES))
    samples: dict[str, list[float]] = {
        "compare_all": [],
        "disagreement_gallery": [],
        "confident_mistakes": [],
        "reliability_diagram": [],
    }
    verdicts: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        parts = {
            "compare_all": lambda: compare_all(
                y, probs, class_names=CLASSES, n_resamples=args.resamples
            ),
            "disagreement_gallery": lambda: disagreement_gallery(
                images, y, probs, CLASSES, out / "gallery.png"
            ),
            "confident_mistakes": lambda: confident_mistakes(
                images, y, probs, CLASSES, out / "mistakes.png"
            ),
            "reliability_diagram": lambda: reliability_diagram(y, probs, out / "reliability.png"),
        }
        for _ in range(args.reps):
            for name, part in parts.items():
                t0 = time.perf_counter()
                result = part()
                samples[name].append(time.perf_counter() - t0)
                if name == "compare_all":
                    verdicts = result.verdicts

    seconds = {name: round(statistics.median(s), 4) for name, s in samples.items()}
    emit(
        "comparison",
        {
            "settings": {
                "n": args.n,
                "classes": len(CLASSES),
                "models": len(probs),
                "resamples": args.resamples,
                "reps": args.reps,
                "statistic": "median",
            },
            "import_s": round(import_s, 4),
            "seconds": seconds,
            "total_s": round(sum(seconds.values()), 4),
            "samples_s": {name: [round(v, 4) for v in s] for name, s in samples.items()},
            "verdict": verdicts[0] if verdicts else None,
        },
    )


if __name__ == "__main__":
    main()
