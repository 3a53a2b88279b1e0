"""The gate's policy on hand-built predictions with known answers (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from compare_models.config import GatePolicy
from compare_models.gate import champions
from compare_models.runs.champion_record import (
    SCHEMA_VERSION,
    ChampionData,
    ChampionEntry,
    ChampionRecord,
)
from compare_models.statistics.paired import compare_pair

CLASSES = [f"c{i}" for i in range(10)]


def probs_for(y_pred: np.ndarray) -> np.ndarray:
    p = np.full((len(y_pred), 10), 0.01)
    p[np.arange(len(y_pred)), y_pred] = 0.91
    return p


def predictions(y: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """The true labels, except at the `wrong` positions (shifted by one class)."""
    pred = y.copy()
    pred[wrong] = (y[wrong] + 1) % 10
    return probs_for(pred)


Y = np.arange(2000) % 10
RNG = np.random.default_rng(0)


def judged(champion_wrong, challenger_wrong, policy=GatePolicy()):
    pair = compare_pair(
        Y,
        predictions(Y, champion_wrong),
        predictions(Y, challenger_wrong),
        name_a="champion",
        name_b="challenger",
        class_names=CLASSES,
        n_resamples=1000,
        alpha=policy.alpha,
    )
    return champions.decide(pair, policy)


def test_identical_models_keep_the_champion():
    wrong = RNG.choice(2000, 600, replace=False)
    decision, reason = judged(wrong, wrong)
    assert (
        decision == champions.NO_CHANGE and "no significant change" in reason and "p = 1" in reason
    )


def test_a_clearly_better_challenger_is_promoted():
    decision, reason = judged(
        np.arange(0, 2000, 3), np.arange(0, 2000, 9)
    )  # 33% wrong -> 11% wrong
    assert decision == champions.PROMOTED and "significantly better" in reason


def test_a_clearly_worse_challenger_is_a_regression():
    decision, reason = judged(np.arange(0, 2000, 9), np.arange(0, 2000, 3))
    assert (
        decision == champions.REGRESSION
        and "significantly worse than the champion: accuracy -" in reason
    )


def test_a_class_that_gets_much_worse_is_a_regression_even_if_overall_is_not():
    # The challenger fixes 150 mistakes spread over classes 1-9 but breaks class 0 (150 images).
    champion_wrong = np.flatnonzero(Y != 0)[:150]
    challenger_wrong = np.flatnonzero(Y == 0)[:150]
    decision, reason = judged(champion_wrong, challenger_wrong)
    assert decision == champions.REGRESSION and "in 1 class(es)" in reason and "c0" in reason
    assert (
        judged(champion_wrong, challenger_wrong, GatePolicy(class_regressions=False))[0]
        == champions.NO_CHANGE
    )


def test_a_significant_gain_below_the_minimum_does_not_promote():
    champion_wrong = RNG.choice(2000, 600, replace=False)
    challenger_wrong = champion_wrong[:450]  # right wherever the champion is, and on 150 more
    assert judged(champion_wrong, challenger_wrong)[0] == champions.PROMOTED
    decision, reason = judged(champion_wrong, challenger_wrong, GatePolicy(min_improvement=0.5))
    assert (
        decision == champions.NO_CHANGE
        and "less than the policy's minimum of 50.00 points" in reason
    )


def test_comparable_means_the_same_test_images_else_a_rescore_of_the_same_classes():
    champion = ChampionEntry(
        run_id="r1",
        model="m",
        model_key="runs/r1/models/m.keras",
        predictions_key="runs/r1/training/m/predictions.npz",
        dataset={"name": "d", "archive_sha256": "a", "test_indices_sha256": "t"},
        metrics={"accuracy": 0.5, "f1_macro": 0.5},
        promoted_at="2026-12-05T00:00:00+00:00",
        reason="",
        by="test",
    )
    same = {"name": "d", "archive_sha256": "a", "test_indices_sha256": "t"}
    assert champions.comparable(champion, ChampionData(**same)) == (champions.SAME_IMAGES, "")
    how, why = champions.comparable(champion, ChampionData(**{**same, "archive_sha256": "b"}))
    assert how == champions.RESCORE and "other images (d, archive a)" in why
    how, why = champions.comparable(champion, ChampionData(**{**same, "test_indices_sha256": "u"}))
    assert how == champions.RESCORE and "tested on other images" in why
    # an entry written before class names were recorded was CIFAR-10
    how, why = champions.comparable(
        champion, ChampionData(**{**same, "class_names": ["cat", "dog"]})
    )
    assert how == champions.INCOMPARABLE and "other classes (airplane" in why
    versioned = champion.model_copy(
        update={"dataset": champion.dataset.model_copy(update={"version_id": "f" * 64})}
    )
    how, why = champions.comparable(
        versioned, ChampionData(**{**same, "version_id": "e" * 64, "test_indices_sha256": "v"})
    )
    assert how == champions.RESCORE and "version ffffffffffff" in why


def test_policy_values_are_checked():
    with pytest.raises(ValueError, match="track"):
        GatePolicy(track="../x")
    with pytest.raises(ValueError, match="alpha"):
        GatePolicy(alpha=0)


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def test_a_champion_record_written_before_the_schema_still_reads():
    """`champion-131c45d.json` was written by the gate's code at 131c45d (no schema_version):
    a champion promoted over an earlier one. It reads, and is written back the same but for
    its version."""
    stored = json.loads((FIXTURES / "champion-131c45d.json").read_text())
    record = ChampionRecord.model_validate(stored)
    assert record.schema_version == SCHEMA_VERSION and record.model == "cnn"
    assert record.current.run_id == "fixture-replay" and record.current.by == "ops"
    assert record.current.metrics.accuracy == 0.1
    assert record.current.accuracy_interval.ci_high == 0.2
    assert record.current.dataset.class_names[0] == "synthetic-0"
    [former] = record.history
    assert former.run_id == "fixture-first" and former.replaced_by == "fixture-replay"
    assert former.replaced_at == record.current.promoted_at
    assert record.model_dump(mode="json", exclude={"schema_version"}) == stored


def test_promotion_moves_the_champion_to_the_history_and_a_newer_record_is_refused():
    stored = ChampionRecord.model_validate(
        json.loads((FIXTURES / "champion-131c45d.json").read_text())
    )
    entry = stored.current.model_copy(
        update={"run_id": "r3", "promoted_at": "2026-12-06T00:00:00+00:00", "reason": "better"}
    )
    promoted = champions.promote(stored, entry)
    assert promoted.current == entry
    assert [h.run_id for h in promoted.history] == ["fixture-replay", "fixture-first"]
    assert promoted.history[0].replaced_by == "r3"
    assert ChampionRecord.model_validate_json(promoted.model_dump_json()) == promoted
    with pytest.raises(ValueError, match="upgrade compare-models"):
        ChampionRecord.model_validate({**promoted.model_dump(), "schema_version": 99})
