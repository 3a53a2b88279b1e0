"""The learning curve's bands refitted, by today's code, from a recorded `growing_data` result:
what a change to the curve's statistics does to the bands of nights that were trained already,
without training them again (the curve's inputs are each night's training images, test images
and accuracy, all in the result).

For each night from the first with `curve_min_runs` earlier normal nights, and for each broken
recipe of the night after them, it fits the curve to the earlier normal nights as the gate
does (accuracies as recorded, to 4 digits) and prints the band for the difference from the
champion, the interval for tonight's residual, and the last normal night's band over the seed
replicas' band.

    python -m benchmarks.studies.curve_refit [benchmarks/results/growing_data.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.common import RESULTS, emit
from compare_models.config import NoisePolicy
from compare_models.statistics.learning_curve import CurvePoint, LearningCurve, fit_curve


def _fit(earlier: list[dict], policy: NoisePolicy) -> LearningCurve | None:
    points = [
        CurvePoint(
            run_id=n["run_id"],
            train_images=n["train_images"],
            value=n["accuracy"],
            test_images=n["test_images"],
        )
        for n in earlier
    ]
    return fit_curve(points, coverage=policy.coverage, form=policy.curve_form)


def _row(label: str, night: dict, earlier: list[dict], policy: NoisePolicy) -> dict | None:
    fit = _fit(earlier, policy)
    if fit is None:
        return None
    predicted = fit.predict(night["train_images"])
    return {
        "night": label,
        "recorded_band_points": night.get("band_points"),
        "band_points": round(100 * fit.difference_half_width(), 2),
        "recorded_residual_band_points": night.get("residual_band_points"),
        "residual_band_points": round(
            100 * float(fit.residual_half_width(night["train_images"], night["test_images"])[0]),
            2,
        ),
        "residual_points": round(100 * (night["accuracy"] - predicted), 2),
        "curve": fit.describe(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", nargs="?", type=Path, default=RESULTS / "growing_data.json")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    policy = NoisePolicy()
    nights = result["nights"]
    rows = []
    for i, night in enumerate(nights):
        if i >= policy.curve_min_runs and (
            row := _row(str(night["night"]), night, nights[:i], policy)
        ):
            rows.append(row)  # fmt: skip
    for broken in result.get("broken", []):
        if row := _row(f"{broken['night']}: {broken['recipe']}", broken, nights, policy):
            rows.append(row)
    replicas = result["replicas"]["band_points"]
    last = next((r for r in reversed(rows) if r["night"] == str(nights[-1]["night"])), None)
    emit(
        "curve_refit",
        {
            "from": str(args.result),
            "recorded_at": result["at"],
            "rows": rows,
            "replica_band_points": replicas,
            "last_over_replicas": round(last["band_points"] / replicas, 2) if last else None,
        },
    )


if __name__ == "__main__":
    main()
