"""The gate on data that grows: the band from the runs' scatter around their learning curve, on
made-up histories with a known curve and a known noise sigma, and the class bands estimated
from one run's predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t

from compare_models.config import GatePolicy, NoisePolicy
from compare_models.gate import champions, noise_band
from compare_models.runs.decision import PROMOTED, REGRESSION
from compare_models.runs.record import RunRecord
from compare_models.runs.track_history import rows
from compare_models.statistics.class_noise import bias_spread, class_recall_bands
from compare_models.statistics.learning_curve import CurvePoint, fit_curve
from compare_models.statistics.paired import compare_pair
from tests.unit.test_noise_band import _record

VERSION = "ab" * 32
SIGMA = 0.015
PER_NIGHT = 3000
_BASE = _record()  # parsed once: hundreds of made-up runs are copies of it


def _metrics(accuracy: float, recalls: list[float] | None = None):
    return _BASE.metrics["cnn"].model_copy(
        update={"accuracy": accuracy, "recall_per_class": recalls}
    )


def _truth(n, a=0.75, b=0.55, c=0.45):
    return a - b * np.power(np.asarray(n, dtype=float) / 1000, -c)


def _grown(run_id: str, train: int, accuracy: float, recalls=None, **train_changes) -> RunRecord:
    """A run of `cnn` on a version of the folder `team` with `train` training images."""
    record = _BASE.model_copy(update={"run_id": run_id})
    dataset = record.dataset.model_copy(
        update={
            "name": "folder-team",
            "version_id": VERSION,
            "sizes": {"train": train, "val": train // 7, "test": 2 * train // 7},
        }
    )
    params = record.params
    if train_changes:
        params = params.model_copy(update={"train": params.train.model_copy(update=train_changes)})
    return record.model_copy(
        update={
            "dataset": dataset,
            "params": params,
            "metrics": {**record.metrics, "cnn": _metrics(accuracy, recalls)},
        }
    )


def _observed(sizes, noise, rng) -> np.ndarray:
    """Accuracies of runs at `sizes` whose own noise is `noise`, each scored on its version's
    test images (2/7 of the training images, as `_grown` records): their binomial sampling."""
    tests = 2 * np.asarray(sizes) // 7
    return rng.binomial(tests, _truth(sizes) + noise) / tests


def _nights(accuracies, sizes) -> list[RunRecord]:
    """Earlier runs, newest first (as the store lists them)."""
    runs = [
        _grown(f"night-{i}", n, a) for i, (n, a) in enumerate(zip(sizes, accuracies, strict=True))
    ]
    return runs[::-1]


def test_sigma_from_the_residuals_is_recovered_on_average_whether_the_data_grows_or_not():
    rng = np.random.default_rng(20261205)
    grown, fixed = [], []
    quantile = t.ppf(0.975, 7)
    for _ in range(200):
        # on data that grows, each run is scored on its own version's test images, whose
        # sampling (about 1 point here) the curve separates from the runs' own SIGMA
        sizes = PER_NIGHT * np.arange(1, 9)
        history = _nights(_observed(sizes, rng.normal(0, SIGMA, 8), rng), sizes)
        band = noise_band.band_for(_grown("tonight", PER_NIGHT * 9, 0.5), "cnn", history)
        assert band.source == "curve" and band.curve.fit.form == "power-law"
        grown.append(band.curve.fit.sigma / SIGMA)

        # on one version every run is scored on the same test images: no sampling between them
        same = np.full(8, 6000)
        history = _nights(_truth(same) + rng.normal(0, SIGMA, 8), same)
        band = noise_band.band_for(_grown("tonight", 6000, 0.5), "cnn", history)
        assert band.source == "history" and band.curve is None
        fixed.append(band.points / (quantile * math.sqrt(2)) / SIGMA)
    # sqrt of an unbiased variance is a little low on average (c4: 0.95 with 5 degrees of
    # freedom, 0.96 with 7), and the curve's estimate is cut at 0; both stay within 10%
    assert np.mean(grown) == pytest.approx(1.0, abs=0.10)
    assert np.mean(fixed) == pytest.approx(1.0, abs=0.10)


def test_the_band_does_not_widen_as_the_curve_rises():
    noise = np.random.default_rng(7).normal(0, SIGMA, 8)
    sizes = PER_NIGHT * np.arange(1, 9)
    curve_bands, spread_bands = [], []
    for steepness in (0.25, 0.5, 1.0, 2.0):
        values = _truth(sizes, b=0.55 * steepness) + noise
        band = noise_band.band_for(_grown("tonight", 27000, 0.5), "cnn", _nights(values, sizes))
        curve_bands.append(band.points)
        spread_bands.append(noise_band.half_width(values, 0.95))
    assert max(curve_bands) / min(curve_bands) < 1.1
    # the spread of the accuracies themselves, today's history band, grows with the rise
    assert spread_bands[-1] / spread_bands[0] > 4
    assert all(c < s for c, s in zip(curve_bands, spread_bands, strict=True))


def _pair(accuracy_champion: float, accuracy_challenger: float, n: int = 4000):
    """A paired comparison on `n` test images whose accuracies are exactly the given ones."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 10, n)
    champion, challenger = np.full((n, 10), 0.01), np.full((n, 10), 0.01)
    wrong = (y + 1) % 10
    a, b = round(accuracy_champion * n), round(accuracy_challenger * n)
    champion[np.arange(n), np.where(np.arange(n) < a, y, wrong)] = 0.91
    challenger[np.arange(n), np.where(np.arange(n) < b, y, wrong)] = 0.91
    names = [f"synthetic-{c}" for c in range(10)]
    return compare_pair(y, champion, challenger, name_a="champion", name_b="challenger",
                        class_names=names, n_resamples=1000, seed=0)  # fmt: skip


def test_with_eight_runs_a_point_five_sigma_below_the_curve_is_a_regression_one_sigma_is_not():
    # 8 runs and the power law's 3 parameters leave 5 degrees of freedom. The interval for
    # tonight's residual is for the variance tau^2 + p(1-p)/m + Var f(n), with tau's uncertainty
    # from chi2(5) (without the sampling part exactly t(0.975, 5) = 2.571 standard deviations);
    # sigma here is tonight's whole standard deviation, the run's own and its test sampling's
    sizes = PER_NIGHT * np.arange(1, 9)
    rng = np.random.default_rng(11)
    history = _nights(_observed(sizes, rng.normal(0, SIGMA, 8), rng), sizes)
    tonight = PER_NIGHT * 9
    band = noise_band.band_for(_grown("tonight", tonight, 0.5), "cnn", history)
    fit = band.curve.fit
    assert (
        fit.form == "power-law" and fit.dof == 5 and fit.quantile == pytest.approx(2.571, abs=1e-3)
    )
    assert fit.sampling
    expected = float(_truth(tonight))
    sigma = math.sqrt(SIGMA**2 + expected * (1 - expected) / band.curve.test_images)
    assert band.curve.predicted == pytest.approx(expected, abs=2 * sigma)
    assert sigma < band.curve.residual_points < 5 * sigma
    policy = GatePolicy()
    # 5 sigma below the curve, yet 5 points better than a champion trained on less data
    low = expected - 5 * sigma
    decision, reason = champions.decide(_pair(low - 0.05, low), policy, band)
    assert decision == REGRESSION and "below the learning curve" in reason
    assert f"{100 * band.curve.predicted:.2f}%" in reason and "power-law" in reason
    # 1 sigma below the curve and well above the champion: promoted
    near = expected - sigma
    decision, reason = champions.decide(_pair(near - 0.05, near), policy, band)
    assert decision == PROMOTED, reason


def test_the_sources_in_order_replicas_then_curve_then_history_then_tolerance():
    sizes = PER_NIGHT * np.arange(1, 6)
    history = _nights(_truth(sizes), sizes)
    tonight = _grown("tonight", 18000, 0.5)
    assert noise_band.band_for(tonight, "cnn", history).source == "curve"
    replicas = tonight.model_copy(
        update={"replica_metrics": {"cnn": [_metrics(0.5), _metrics(0.52)]}}
    )
    assert noise_band.band_for(replicas, "cnn", history).source == "replicas"
    # grew, but only 3 runs: the tolerance, not the spread of accuracies that rise with the data
    short = noise_band.band_for(tonight, "cnn", history[:3])
    assert short.source == "tolerance" and "the folder grew" in short.detail
    # the curve is off: today's history band
    no_curve = tonight.params.gate.model_copy(update={"noise": NoisePolicy(curve=False)})
    off = tonight.model_copy(
        update={"params": tonight.params.model_copy(update={"gate": no_curve})}
    )
    assert noise_band.band_for(off, "cnn", history).source == "history"


def test_only_runs_of_the_same_recipe_make_the_curve():
    sizes = PER_NIGHT * np.arange(1, 7)
    history = _nights(_truth(sizes), sizes)
    other = [_grown(f"lr-{i}", int(n), 0.2, learning_rate=1e-4) for i, n in enumerate(sizes)]
    band = noise_band.band_for(_grown("tonight", 21000, 0.5), "cnn", other + history)
    assert band.source == "curve" and band.runs == 6
    assert {p.run_id for p in band.curve.fit.points} == {r.run_id for r in history}
    # too few runs of tonight's recipe: the recipe of the track's newest run makes it
    changed = _grown("tonight", 21000, 0.2, learning_rate=1e-4)
    band = noise_band.band_for(changed, "cnn", history + other[:2])
    assert band.source == "curve" and {p.run_id for p in band.curve.fit.points} == {
        r.run_id for r in history
    }
    # only 3 runs of the newest run's recipe: too few for the curve
    band = noise_band.band_for(_grown("tonight", 21000, 0.5), "cnn", other[:3] + history[:2])
    assert band.source == "tolerance"
    # the seed is not part of the recipe
    seeded = [r.model_copy(update={"params": r.params.model_copy(update={"train": r.params.train.model_copy(update={"seed": r.params.train.seed + 1})})}) for r in history]  # fmt: skip
    assert all(
        s.params.train.seed != r.params.train.seed for s, r in zip(seeded, history, strict=True)
    )
    assert noise_band.band_for(_grown("tonight", 21000, 0.5), "cnn", seeded).source == "curve"


def test_class_bands_follow_each_classs_recall_curve():
    sizes = PER_NIGHT * np.arange(1, 7)
    rng = np.random.default_rng(5)
    runs = []
    for i, n in enumerate(sizes):
        recalls = [float(_truth(n)) + rng.normal(0, 0.01 if c < 5 else 0.08) for c in range(10)]
        runs.append(_grown(f"night-{i}", int(n), float(np.mean(recalls)), recalls))
    band = noise_band.band_for(_grown("tonight", 21000, 0.5), "cnn", runs[::-1])
    assert band.class_source == "curve"
    steady = [band.class_points[f"synthetic-{c}"] for c in range(5)]
    noisy = [band.class_points[f"synthetic-{c}"] for c in range(5, 10)]
    assert max(steady) < min(noisy)


def test_the_curve_is_monotone_and_falls_back_to_log_linear_with_few_runs():
    points = [CurvePoint(run_id=str(i), train_images=n, value=v) for i, (n, v) in enumerate(
        [(3000, 0.30), (6000, 0.36), (9000, 0.35), (12000, 0.41)])]  # fmt: skip
    fit = fit_curve(points, coverage=0.95)
    assert fit.form == "log-linear" and fit.dof == 2 and fit.parameters["b"] >= 0
    grid = np.linspace(1000, 50000, 50)
    assert np.all(np.diff(fit(grid)) >= 0)
    assert fit_curve(points[:2], coverage=0.95) is None
    same_size = [p.model_copy(update={"train_images": 3000}) for p in points]
    assert fit_curve(same_size, coverage=0.95) is None


def test_the_prediction_interval_is_wider_far_from_the_runs():
    sizes = PER_NIGHT * np.arange(1, 9)
    noise = np.random.default_rng(2).normal(0, SIGMA, 8)
    points = [CurvePoint(run_id=str(i), train_images=int(n), value=float(v)) for i, (n, v) in enumerate(zip(sizes, _truth(sizes) + noise, strict=True))]  # fmt: skip
    fit = fit_curve(points, coverage=0.95)
    near, far = fit.residual_half_width([27000, 200000])
    assert fit.quantile * fit.sigma < near < far
    assert fit.difference_half_width() == pytest.approx(fit.quantile * math.sqrt(2) * fit.sigma)


def _points(values, sizes, tests=None) -> list[CurvePoint]:
    return [
        CurvePoint(run_id=str(i), train_images=int(n), value=float(v),
                   test_images=None if tests is None else int(tests[i]))
        for i, (n, v) in enumerate(zip(sizes, values, strict=True))
    ]  # fmt: skip


def test_the_test_sets_sampling_is_separated_from_the_runs_own_noise():
    # small test sets: their sampling (4.0 to 1.6 points) outweighs the runs' own 1.5 points
    sizes = PER_NIGHT * np.arange(1, 9) // 3
    tests = sizes // 10
    rng = np.random.default_rng(4)
    separated, lumped = [], []
    for _ in range(100):
        values = rng.binomial(tests, _truth(sizes) + rng.normal(0, SIGMA, 8)) / tests
        fit = fit_curve(_points(values, sizes, tests), coverage=0.95)
        separated.append(fit.sigma / SIGMA)
        lumped.append(fit_curve(_points(values, sizes), coverage=0.95).sigma / SIGMA)
        assert fit.residual_sigma == pytest.approx(lumped[-1] * SIGMA, rel=0.15)
    # without the test counts (records written before they were kept) the sampling counts as
    # the runs' own noise; with them, tau comes back near the runs' own sigma
    assert np.mean(lumped) > 1.5
    assert np.mean(separated) == pytest.approx(1.0, abs=0.15)


def test_both_intervals_cover_what_they_claim_over_many_histories():
    # 8 runs, each scored on its own version's test images; tonight's run at 30,000 images and a
    # pair of new runs on one test set: each interval should hold 95% of them
    rng = np.random.default_rng(3)
    sizes, tonight = PER_NIGHT * np.arange(1, 9), 30000
    tests, tonight_tests = 2 * sizes // 7, 2 * tonight // 7
    residual, difference = [], []
    for _ in range(200):
        values = rng.binomial(tests, _truth(sizes) + rng.normal(0, SIGMA, 8)) / tests
        fit = fit_curve(_points(values, sizes, tests), coverage=0.95)
        new = rng.binomial(tonight_tests, _truth(tonight) + rng.normal(0, SIGMA)) / tonight_tests
        residual.append(abs(new - fit.predict(tonight)) <= fit.residual_half_width(tonight, tonight_tests)[0])  # fmt: skip
        difference.append(abs(rng.normal(0, SIGMA) - rng.normal(0, SIGMA)) <= fit.difference_half_width())  # fmt: skip
    # 200 draws: a true 95% lands within 0.92-0.98 about 97% of the time
    assert 0.92 <= np.mean(residual) <= 0.98
    assert 0.92 <= np.mean(difference) <= 0.98


def test_the_interval_without_sampling_is_students_t_and_never_collapses_with_few_runs():
    sizes = PER_NIGHT * np.arange(1, 6)
    noise = np.random.default_rng(8).normal(0, SIGMA, 5)
    truth = 0.3 + 0.1 * np.log(sizes / 1000)  # the log-linear form: no lack of fit
    values = truth + noise
    # test sets so large their sampling is nil: the pivot's interval is Student's t(2)
    huge = fit_curve(_points(values, sizes, [10**9] * 5), coverage=0.95)
    assert huge.sampling and huge.form == "log-linear" and huge.dof == 3
    plain = fit_curve(_points(values, sizes), coverage=0.95)
    assert huge.difference_half_width() == pytest.approx(plain.difference_half_width(), rel=0.01)
    assert huge.residual_half_width(18000)[0] == pytest.approx(
        plain.residual_half_width(18000)[0], rel=0.01
    )
    # a scatter that the sampling explains all but a little of: tau's estimate is near 0, yet
    # its uncertainty with 3 degrees of freedom keeps the band open
    tests = [1000] * 5
    small = fit_curve(_points(truth + 0.9 * noise, sizes, tests), coverage=0.95)
    if small.sampling:
        assert small.difference_half_width() > 0.01
    # far less scatter than the sampling alone would give: the test sets are not independent
    # draws, so nothing is separated and the residuals are all counted as the runs' noise
    tight = fit_curve(_points(truth + 0.05 * noise, sizes, tests), coverage=0.95)
    assert not tight.sampling and tight.sigma == pytest.approx(tight.residual_sigma)


def test_history_rows_give_training_images_and_the_residual_from_the_curve():
    sizes = PER_NIGHT * np.arange(1, 6)
    history = _nights(_truth(sizes), sizes)
    tonight = _grown("tonight", 18000, 0.40)
    band = noise_band.band_for(tonight, "cnn", history)
    decision = tonight.gate["cnn"].model_copy(update={"band": band})
    tonight = tonight.model_copy(update={"gate": {**tonight.gate, "cnn": decision}})
    row = next(r for r in rows([tonight, *history], model="cnn") if r.run_id == "tonight")
    assert row.train_images == 18000
    assert row.predicted == pytest.approx(band.curve.predicted)
    assert row.residual == pytest.approx(0.40 - band.curve.predicted)
    earlier = [r for r in rows(history, model="cnn")]
    assert [r.train_images for r in earlier] == [int(n) for n in sizes[::-1]]


# ── class bands from one run's predictions ─────────────────────────────────────


def _predictions(n_per_class, favour=None, strength=0.0, confidence=2.0, seed=0):
    """Made-up test probabilities: right-leaning logits, plus a bias towards `favour`."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    logits = rng.normal(0, 1, (len(y), len(n_per_class)))
    logits[np.arange(len(y)), y] += confidence
    if favour is not None:
        logits[:, favour] += strength
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True), y


NAMES = [f"c{i}" for i in range(10)]


def test_a_class_with_fewer_test_images_gets_a_wider_band():
    # a confident model that favours no class (tau small): what is left is each class's count
    probs, y = _predictions([400] * 9 + [40], confidence=4.0)
    assert bias_spread(probs, y) < 0.2
    widths = class_recall_bands(probs, y, NAMES, coverage=0.95).widths
    assert widths["c9"] > 1.8 * max(widths[f"c{i}"] for i in range(9))


def test_a_model_biased_towards_some_classes_gets_wider_class_bands():
    balanced, y = _predictions([200] * 10)
    biased, _ = _predictions([200] * 10, favour=[0, 1], strength=2.5)
    assert bias_spread(biased, y) > 3 * bias_spread(balanced, y)
    narrow = class_recall_bands(balanced, y, NAMES, coverage=0.95).widths
    wide = class_recall_bands(biased, y, NAMES, coverage=0.95).widths
    assert np.median(list(wide.values())) > 1.5 * np.median(list(narrow.values()))
    # the same inputs give the same bands
    assert class_recall_bands(biased, y, NAMES, coverage=0.95).widths == wide


def test_class_bands_come_from_the_predictions_while_the_history_is_short():
    probs, y = _predictions([4] * 10)
    record = _record()
    band = noise_band.band_for(record, "cnn", [], probs=probs, y_true=y)
    assert band.source == "tolerance" and band.class_source == "predictions"
    assert band.points == pytest.approx(NoisePolicy().tolerance_points / 100)
    assert set(band.class_points) == set(record.dataset.class_names)
    assert "test predictions" in band.detail
    tolerance = record.params.gate.model_copy(update={"noise": NoisePolicy(class_band="tolerance")})
    flat = record.model_copy(
        update={"params": record.params.model_copy(update={"gate": tolerance})}
    )
    band = noise_band.band_for(flat, "cnn", [], probs=probs, y_true=y)
    assert band.class_source == "tolerance"
    assert set(band.class_points.values()) == {NoisePolicy().class_tolerance_points / 100}


def test_mismatched_predictions_are_refused():
    probs, y = _predictions([10] * 10)
    with pytest.raises(ValueError, match="do not match"):
        class_recall_bands(probs, y[:-1], NAMES, coverage=0.95)


def test_the_report_draws_the_curve_its_band_and_tonights_point_from_the_record(tmp_path):
    from matplotlib.image import imread

    from compare_models.report import trends

    sizes = PER_NIGHT * np.arange(1, 7)
    history = _nights(_truth(sizes) + np.random.default_rng(1).normal(0, SIGMA, 6), sizes)
    tonight = _grown("tonight", 21000, 0.33)
    band = noise_band.band_for(tonight, "cnn", history)
    decision = tonight.gate["cnn"].model_copy(update={"band": band, "decision": REGRESSION})
    tonight = tonight.model_copy(update={"gate": {"cnn": decision}})
    figures = trends.champion_figures([], current=tonight, last=5, out_dir=tmp_path)
    path, caption = next((p, c) for p, c in figures if p.name == "learning_curve.png")
    assert imread(path).shape[1] >= 500
    assert "power-law" in caption and f"{100 * band.curve.predicted:.2f}%" in caption
    # a band from elsewhere draws no learning curve
    plain = tonight.model_copy(update={"gate": {"cnn": decision.model_copy(update={"band": None})}})
    names = [
        p.name
        for p, _ in trends.champion_figures([], current=plain, last=5, out_dir=tmp_path / "b")
    ]
    assert "learning_curve.png" not in names


def test_with_five_runs_and_mostly_sampling_noise_taus_uncertainty_keeps_the_coverage():
    # 5 runs (3 degrees of freedom) on small test sets (sampling about 2.3 points) around a
    # runs' own noise of 0.6 points: tau's estimate is often near 0, and an interval at that
    # estimate (Student's t x sqrt(2) x tau) would miss half the pairs; the pivot's does not
    rng = np.random.default_rng(5)
    sizes = PER_NIGHT * np.arange(1, 6)
    tests = 2 * sizes // 7 // 4
    pivot, at_estimate = [], []
    for _ in range(200):
        values = rng.binomial(tests, _truth(sizes) + rng.normal(0, 0.006, 5)) / tests
        fit = fit_curve(_points(values, sizes, tests), coverage=0.95)
        pair = abs(rng.normal(0, 0.006) - rng.normal(0, 0.006))
        pivot.append(pair <= fit.difference_half_width())
        at_estimate.append(pair <= fit.quantile * math.sqrt(2) * fit.sigma)
    assert np.mean(pivot) >= 0.92
    assert np.mean(at_estimate) < 0.8
