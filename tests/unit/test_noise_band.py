"""The gate's noise band on hand-built records and predictions with known answers: where the
band comes from (replicas, history, tolerance), and how it turns significant differences into
regressions, within-noise decisions, promotions or no change."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t

from compare_models.config import GatePolicy, NoisePolicy
from compare_models.evaluation.records import ModelMetrics
from compare_models.gate import champions, noise_band
from compare_models.runs.decision import NoiseBand
from compare_models.runs.record import RunRecord
from compare_models.runs.stored import parse_record
from compare_models.statistics.paired import compare_pair
from compare_models.statistics.recipes import compare_recipes
from compare_models.statistics.records import PairComparison

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "manifest-v0-first-champion.json"


def _width(values: list[float], coverage: float = 0.95) -> float:
    """The prediction interval's half-width for the difference of two runs, by hand."""
    return t.ppf(0.5 + coverage / 2, len(values) - 1) * math.sqrt(2) * np.std(values, ddof=1)


def _record(run_id: str = "current", **changes) -> RunRecord:
    record = parse_record(FIXTURE.read_bytes(), "fixture")
    return record.model_copy(update={"run_id": run_id, **changes})


def _metrics(accuracy: float, recalls: list[float] | None = None) -> ModelMetrics:
    base = _record().metrics["cnn"]
    return base.model_copy(update={"accuracy": accuracy, "recall_per_class": recalls})


def _history(accuracies: list[float]) -> list[RunRecord]:
    runs = []
    for i, accuracy in enumerate(accuracies):
        record = _record(f"old-{i}")
        runs.append(
            record.model_copy(update={"metrics": {**record.metrics, "cnn": _metrics(accuracy)}})
        )
    return runs


def test_the_band_comes_from_the_tracks_comparable_history():
    history = _history([0.60, 0.62, 0.58, 0.61, 0.64])
    band = noise_band.band_for(_record(), "cnn", history)
    assert band.source == "history" and band.runs == 5
    assert band.points == pytest.approx(_width([0.60, 0.62, 0.58, 0.61, 0.64]))
    # three runs of a smaller spread still give a wider band (t with 2 degrees of freedom)
    three = noise_band.band_for(_record(), "cnn", history[:3])
    assert three.points == pytest.approx(_width([0.60, 0.62, 0.58])) and three.points > band.points


def test_runs_judged_a_regression_are_left_out_of_the_history():
    history = _history([0.60, 0.62, 0.58, 0.20])
    broken = history[3].gate["cnn"].model_copy(update={"decision": "regression"})
    history[3] = history[3].model_copy(update={"gate": {**history[3].gate, "cnn": broken}})
    band = noise_band.band_for(_record(), "cnn", history)
    assert band.runs == 3 and band.points == pytest.approx(_width([0.60, 0.62, 0.58]))


def test_runs_of_other_tracks_or_other_test_images_do_not_count():
    other_track = [r.model_copy(update={"params": r.params.model_copy(update={"gate": GatePolicy(track="other")})}) for r in _history([0.6, 0.7, 0.8])]  # fmt: skip
    dataset = _record().dataset.model_copy(update={"test_indices_sha256": "x" * 64})
    other_images = [r.model_copy(update={"dataset": dataset}) for r in _history([0.6, 0.7, 0.8])]
    band = noise_band.band_for(_record(), "cnn", other_track + other_images)
    assert (
        band.source == "tolerance"
        and band.points == pytest.approx(GatePolicy().noise.tolerance_points / 100)
        and "0 comparable earlier run" in band.detail
    )


def test_with_too_little_history_the_typed_tolerance_applies():
    policy = GatePolicy(
        noise=NoisePolicy(min_history=4, tolerance_points=3, class_tolerance_points=9)
    )
    current = _record(params=_record().params.model_copy(update={"gate": policy}))
    band = noise_band.band_for(current, "cnn", _history([0.6, 0.62, 0.61]))
    assert band.source == "tolerance" and band.points == pytest.approx(0.03)
    assert (
        band.class_points == dict.fromkeys(current.dataset.class_names, pytest.approx(0.09))
        and "fewer than the 4" in band.detail
    )


def test_the_runs_own_replicas_come_first_with_per_class_bands():
    names = _record().dataset.class_names
    replicas = [
        _metrics(0.60, [0.5] * 10),
        _metrics(0.64, [0.7] * 10),
        _metrics(0.62, [0.6] * 10),
    ]
    current = _record(replica_metrics={"cnn": replicas})
    band = noise_band.band_for(current, "cnn", _history([0.1, 0.9, 0.5, 0.3]))
    assert band.source == "replicas" and band.runs == 3
    assert band.points == pytest.approx(_width([0.60, 0.64, 0.62]))
    assert band.class_points == {c: pytest.approx(_width([0.5, 0.7, 0.6])) for c in names}


def test_identical_replicas_give_no_band_and_a_disabled_band_is_off():
    current = _record(replica_metrics={"cnn": [_metrics(0.6), _metrics(0.6)]})
    assert noise_band.band_for(current, "cnn", []).points == 0.0
    off = GatePolicy(noise=NoisePolicy(enabled=False))
    band = noise_band.band_for(
        _record(params=_record().params.model_copy(update={"gate": off})), "cnn", []
    )
    assert band.source == "off" and band.points == 0.0


# ── decisions with a band ─────────────────────────────────────────────────────────

CLASSES = [f"c{i}" for i in range(10)]
Y = np.arange(2000) % 10


def _probs(wrong: np.ndarray) -> np.ndarray:
    pred = Y.copy()
    pred[wrong] = (Y[wrong] + 1) % 10
    p = np.full((len(Y), 10), 0.01)
    p[np.arange(len(Y)), pred] = 0.91
    return p


def _pair(champion_wrong: int, challenger_wrong: int, *, only_class: int | None = None):
    """Champion and challenger wrong on the first N images (of one class, if given)."""
    pool = np.flatnonzero(Y == only_class) if only_class is not None else np.arange(len(Y))
    return compare_pair(
        Y,
        _probs(pool[:champion_wrong]),
        _probs(pool[:challenger_wrong]),
        name_a="champion",
        name_b="challenger",
        class_names=CLASSES,
        n_resamples=1000,
    )


def _band(points: float, class_points: float = 1.0) -> NoiseBand:
    return NoiseBand(
        points=points,
        class_points=dict.fromkeys(CLASSES, class_points),
        source="history",
        runs=6,
        detail="test",
    )


def test_significantly_worse_within_the_band_is_within_noise_and_beyond_it_a_regression():
    pair = _pair(200, 300)  # 5 points worse, McNemar p << 0.05
    decision, reason = champions.decide(pair, GatePolicy(), _band(0.06))
    assert decision == champions.WITHIN_NOISE and "within the noise band" in reason
    assert "-5.00 points" in reason and "noise band ±6.00 points (history: test)" in reason
    decision, reason = champions.decide(pair, GatePolicy(), _band(0.04))
    assert decision == champions.REGRESSION and "noise band ±4.00 points" in reason
    assert champions.decide(pair, GatePolicy())[0] == champions.REGRESSION  # no band: as before


def test_a_gain_must_leave_the_band_to_promote():
    pair = _pair(300, 200)  # 5 points better
    decision, reason = champions.decide(pair, GatePolicy(), _band(0.06))
    assert decision == champions.NO_CHANGE and "better, but within the noise band" in reason
    assert champions.decide(pair, GatePolicy(), _band(0.04))[0] == champions.PROMOTED


def test_each_class_is_judged_against_its_own_band():
    pair = _pair(0, 60, only_class=3)  # class c3 loses 30 recall points, overall 3 points
    within, reason = champions.decide(pair, GatePolicy(), _band(0.05, class_points=0.40))
    assert (
        within == champions.WITHIN_NOISE and "c3" in reason and "within their noise bands" in reason
    )
    beyond, reason = champions.decide(pair, GatePolicy(), _band(0.05, class_points=0.20))
    assert beyond == champions.REGRESSION and "beyond their noise bands (c3)" in reason


def test_a_gain_beyond_the_band_promotes_though_a_class_moved_within_its_own():
    others, c3 = np.flatnonzero(Y != 3), np.flatnonzero(Y == 3)
    pair = compare_pair(
        Y,
        _probs(others[:400]),
        _probs(c3[:60]),
        name_a="champion",
        name_b="challenger",
        class_names=CLASSES,
        n_resamples=1000,
    )  # fmt: skip  (17 points better overall; c3 loses 30 recall points)
    assert "c3" in PairComparison.model_validate(pair).worse_classes
    decision, reason = champions.decide(pair, GatePolicy(), _band(0.05, class_points=0.40))
    assert (
        decision == champions.PROMOTED and "c3" in reason and "within their noise bands" in reason
    )
    assert champions.decide(pair, GatePolicy(), _band(0.05, class_points=0.20))[0] == (
        champions.REGRESSION
    )


def test_within_noise_sends_no_event():
    from tasks.gate import alert

    pair = _pair(200, 300)
    decision = champions.GateDecision(
        model="cnn", track="t", decision=champions.WITHIN_NOISE, reason="r",
        champion_run_id="c", comparison=pair, band=_band(0.06),
    )  # fmt: skip
    record = _record(gate={"cnn": decision})
    assert alert.fn(record, "s3://bucket/runs/current/manifest.json") == []


# ── recipes over seeds ────────────────────────────────────────────────────────────


def test_recipes_compared_over_seeds_give_known_answers():
    apart = compare_recipes(
        {"cnn": ([1, 2, 3], [0.60, 0.61, 0.62]), "resnet50": ([1, 2, 3], [0.70, 0.71, 0.69])},
        confidence=0.95,
        alpha=0.05,
    )
    pair = apart.pairs[0]
    assert (
        pair.better == "resnet50"
        and pair.significant
        and "exceeds the seed variance" in pair.verdict
    )
    assert pair.difference.estimate == pytest.approx(0.09) and pair.difference.ci_low > 0
    assert apart.models["cnn"].mean == pytest.approx(0.61) and apart.models[
        "cnn"
    ].std == pytest.approx(0.01)
    overlapping = compare_recipes(
        {"cnn": ([1, 2, 3], [0.60, 0.65, 0.62]), "resnet50": ([1, 2, 3], [0.61, 0.64, 0.63])},
        confidence=0.95,
        alpha=0.05,
    ).pairs[0]
    assert overlapping.better is None and "does not exceed the seed variance" in overlapping.verdict
    identical = compare_recipes(
        {"cnn": ([1, 2], [0.6, 0.6]), "resnet50": ([1, 2], [0.6, 0.6])}, confidence=0.9, alpha=0.05
    ).pairs[0]
    assert identical.pvalue == 1.0 and identical.better is None and "90% CI" in identical.verdict
    single = compare_recipes(
        {"cnn": ([1], [0.6]), "resnet50": ([1, 2], [0.6, 0.7])}, confidence=0.95, alpha=0.05
    )
    assert single.pairs == [] and single.models["cnn"].std == 0.0  # one seed: nothing to test
