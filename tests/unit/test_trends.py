"""Unit tests for compare_models.report.trends: valid PNGs, edge cases, clear errors and no open pyplot figures."""

from __future__ import annotations

import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest

from compare_models.report import figures, recall_changes, trends
from compare_models.report.recall_changes import plot_recall_changes
from compare_models.report.trends import plot_accuracy_trend
from tests.support import pngs

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DECISION_CYCLE = ["first-champion", "no-change", "promoted", "regression", "not-comparable", None]


def accuracy(estimate: float, half_width: float = 0.01) -> dict:
    return {"estimate": estimate, "ci_low": estimate - half_width, "ci_high": estimate + half_width}


def run(i: int, models: dict) -> dict:
    day = 1 + i % 28
    month = 1 + i // 28
    return {
        "run_id": f"2026{month:02d}{day:02d}-020000-{i:08x}",
        "completed_at": f"2026-{month:02d}-{day:02d}T02:14:00+00:00",
        "models": models,
    }


def history(n: int) -> list[dict]:
    return [
        run(
            i,
            {
                "cnn": {
                    "accuracy": accuracy(0.6 + 0.002 * i),
                    "decision": DECISION_CYCLE[i % len(DECISION_CYCLE)],
                },
                "resnet50": {"accuracy": accuracy(0.8 - 0.001 * i, 0.008), "decision": "no-change"},
            },
        )
        for i in range(n)
    ]


def change(
    difference: list[float],
    significant: list[bool] | None = None,
    champion: str | None = "20261126-020000-ab12cd34",
) -> dict:
    return {
        "class_names": list(CLASSES),
        "difference": difference,
        "significant": significant if significant is not None else [False] * len(difference),
        "champion_run_id": champion,
    }


def assert_png(path, min_width: int = 400, min_height: int = 100) -> tuple[int, int]:
    return pngs.assert_png(path, min_width, min_height, max_side=2000, white_background=True)


# --------------------------------------------------------------------------------------------
# Accuracy trend
# --------------------------------------------------------------------------------------------


def test_accuracy_trend_png(tmp_path):
    out = tmp_path / "sub" / "trend.png"
    path = plot_accuracy_trend(history(8), out)
    assert path == out
    assert_png(path, min_width=600, min_height=400)


def test_accuracy_trend_accepts_str_path(tmp_path):
    path = plot_accuracy_trend(history(3), str(tmp_path / "trend.png"))
    assert path == tmp_path / "trend.png"
    assert_png(path)


def test_accuracy_trend_without_points_says_so(tmp_path):
    path = plot_accuracy_trend([], tmp_path / "empty.png")
    assert_png(path, min_height=100)


def test_accuracy_trend_one_point(tmp_path, monkeypatch):
    captured = {}
    original = trends._save

    def spy(fig, path):
        captured["ylim"] = fig.axes[0].get_ylim()
        return original(fig, path)

    monkeypatch.setattr(trends, "_save", spy)
    point = run(0, {"cnn": {"accuracy": accuracy(0.61), "decision": "first-champion"}})
    assert_png(plot_accuracy_trend([point], tmp_path / "one.png"), min_height=400)
    low, high = captured["ylim"]
    assert low < 0.60 and high > 0.62 and high - low >= trends.MIN_ACCURACY_SPAN - 1e-9


def test_accuracy_trend_model_missing_and_none_accuracy(tmp_path):
    points = history(5)
    del points[1]["models"]["resnet50"]  # missing from a run
    points[2]["models"]["cnn"]["accuracy"] = None  # run without accuracy: skipped
    points[3]["models"]["cnn"] = {"accuracy": None}  # no decision key either
    points[4]["models"]["vit"] = {"accuracy": accuracy(0.7), "decision": None}  # appears late
    points[0]["completed_at"] = None  # label falls back to the run id's date
    assert_png(plot_accuracy_trend(points, tmp_path / "gaps.png"), min_height=400)


def test_accuracy_trend_estimate_outside_its_bootstrap_interval_renders(tmp_path):
    point = run(
        0,
        {
            "cnn": {
                "accuracy": {"estimate": 0.61, "ci_low": 0.612, "ci_high": 0.63},
                "decision": None,
            }
        },
    )
    assert_png(plot_accuracy_trend([point], tmp_path / "outside.png"), min_height=400)


def test_accuracy_trend_all_accuracies_none_still_renders(tmp_path):
    points = [run(i, {"cnn": {"accuracy": None, "decision": None}}) for i in range(3)]
    assert_png(plot_accuracy_trend(points, tmp_path / "none.png"), min_height=400)


def _legend_of_the_saved_figure(monkeypatch) -> dict:
    """What the next figure `trends` saves shows in its legend: ``captured["legend"]``."""
    captured = {}
    original = trends._save

    def spy(fig, path):
        captured["legend"] = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        return original(fig, path)

    monkeypatch.setattr(trends, "_save", spy)
    return captured


def test_accuracy_trend_marks_decisions_in_legend(tmp_path, monkeypatch):
    captured = _legend_of_the_saved_figure(monkeypatch)
    plot_accuracy_trend(history(6), tmp_path / "legend.png")
    assert captured["legend"] == [
        "cnn",
        "resnet50",
        "promoted",
        "regression",
        "first champion",
        "not comparable",
    ]


def test_accuracy_trend_many_runs_thins_labels(tmp_path, monkeypatch):
    captured = {}
    original = trends._save

    def spy(fig, path):
        ax = fig.axes[0]
        captured["ticks"] = list(ax.get_xticks())
        captured["labels"] = [t.get_text() for t in ax.get_xticklabels()]
        return original(fig, path)

    monkeypatch.setattr(trends, "_save", spy)
    points = history(60)
    width, _ = assert_png(
        plot_accuracy_trend(points, tmp_path / "many.png"), min_width=1000, min_height=400
    )
    ticks = captured["ticks"]
    assert len(ticks) <= trends.MAX_RUN_LABELS
    assert ticks[-1] == 59  # the newest run is always labelled
    assert len(set(np.diff(ticks))) == 1  # evenly spaced
    assert captured["labels"][-1] == f"2026-03-04 {59:08x}"
    assert width <= 16 * figures.DPI


def test_run_label_and_thinning():
    assert trends._run_label("20261126-020000-ab12cd34", None) == "2026-11-26 ab12cd34"
    assert trends._run_label("local-run", None) == "local-run"
    assert trends._thinned_ticks(5, 20) == [0, 1, 2, 3, 4]
    assert trends._thinned_ticks(60, 20) == list(range(2, 60, 3))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p[1].pop("run_id"), "run_id"),
        (lambda p: p[1].update(run_id=p[0]["run_id"]), "more than once"),
        (lambda p: p[1].update(completed_at="yesterday"), "completed_at"),
        (lambda p: p.reverse(), "oldest first"),
        (lambda p: p[0].update(models=[1, 2]), "models of run"),
        (lambda p: p[0]["models"]["cnn"].update(decision="promote"), "unknown decision"),
        (lambda p: p[0]["models"]["cnn"]["accuracy"].update(estimate=math.nan), "finite"),
        (lambda p: p[0]["models"]["cnn"]["accuracy"].update(estimate="0.6"), "must be a number"),
        (lambda p: p[0]["models"]["cnn"]["accuracy"].pop("ci_high"), "ci_high"),
        (lambda p: p[0]["models"]["cnn"].update(accuracy=accuracy(61.0)), "[0, 1]"),
        (lambda p: p[0]["models"]["cnn"]["accuracy"].update(ci_low=0.7), "ci_low <= ci_high"),
        (lambda p: p[0]["models"].update(cnn=0.6), "model 'cnn'"),
        (lambda p: p.__setitem__(0, "run"), "points[0]"),
    ],
)
def test_accuracy_trend_rejects_malformed_points(tmp_path, mutate, message):
    points = copy.deepcopy(history(3))
    mutate(points)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plot_accuracy_trend(points, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert plt.get_fignums() == []


def test_accuracy_trend_rejects_non_sequence(tmp_path):
    with pytest.raises(ValueError, match="sequence of run mappings"):
        plot_accuracy_trend({"run_id": "x"}, tmp_path / "bad.png")


# --------------------------------------------------------------------------------------------
# Recall changes
# --------------------------------------------------------------------------------------------


def test_recall_changes_png(tmp_path):
    rng = np.random.default_rng(0)
    changes = {
        "cnn": change(list(rng.normal(0, 0.03, 10)), [i % 3 == 0 for i in range(10)]),
        "resnet50": change(
            list(rng.normal(0, 0.01, 10)), list(np.zeros(10, dtype=bool)), champion=None
        ),
    }
    out = tmp_path / "sub" / "recall.png"
    path = plot_recall_changes(changes, out)
    assert path == out
    assert_png(path, min_width=600, min_height=200)


def test_recall_changes_annotations_and_limits(tmp_path, monkeypatch):
    captured = {}
    original = recall_changes._save

    def spy(fig, path):
        ax = fig.axes[0]
        captured["texts"] = {t.get_text(): t.get_fontweight() for t in ax.texts}
        captured["clim"] = ax.images[0].get_clim()
        captured["rows"] = [t.get_text() for t in ax.get_yticklabels()]
        captured["title"] = ax.get_title()
        return original(fig, path)

    monkeypatch.setattr(recall_changes, "_save", spy)
    difference = [0.031, -0.012, 0.0, -0.0001, 0, 0, 0, 0, 0, 0]
    significant = [True] + [False] * 9
    plot_recall_changes({"cnn": change(difference, significant)}, tmp_path / "r.png")
    assert captured["texts"]["+3.1*"] == "bold"
    assert captured["texts"]["-1.2"] == "normal"
    assert "0.0" in captured["texts"] and "-0.0" not in captured["texts"]
    assert captured["clim"] == pytest.approx((-0.05, 0.05))  # at least +-5 points
    assert captured["rows"] == ["cnn (vs 20261126-020000-ab12cd34)"]
    assert "* significant after Holm" in captured["title"]

    plot_recall_changes({"cnn": change([-0.2] + [0.0] * 9)}, tmp_path / "r2.png")
    assert captured["clim"] == pytest.approx((-0.2, 0.2))  # symmetric from the largest |difference|


def test_recall_changes_without_models_says_so(tmp_path):
    assert_png(plot_recall_changes({}, tmp_path / "empty.png"), min_height=100)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cnn": change([0.0] * 9)}, "equal lengths"),
        ({"cnn": change([0.0] * 10, [False] * 9)}, "equal lengths"),
        ({"cnn": change([0.0] * 9 + [math.inf])}, "finite"),
        ({"cnn": change([0.0] * 9 + [math.nan])}, "class 'truck'"),
        ({"cnn": change([0.0] * 9 + [3.0])}, r"\[-1, 1\]"),
        ({"cnn": change([0.0] * 10, [0] * 10)}, "must be a bool"),
        ({"cnn": {**change([0.0] * 10), "class_names": ["cat"] * 10}}, "unique"),
        ({"cnn": {**change([0.0] * 10), "difference": "0.1"}}, "must be a list"),
        ({"cnn": {**change([0.0] * 10), "champion_run_id": 5}}, "champion_run_id"),
        (
            {
                "cnn": change([0.0] * 10),
                "vit": {**change([0.0] * 10), "class_names": CLASSES[::-1]},
            },
            "same classes",
        ),
        ({"cnn": [0.0] * 10}, "must be a mapping"),
        ([("cnn", change([0.0] * 10))], "changes must be a mapping"),
    ],
)
def test_recall_changes_rejects_malformed_input(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        plot_recall_changes(changes, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()
    assert plt.get_fignums() == []


# --------------------------------------------------------------------------------------------
# Noise bands on the accuracy trend
# --------------------------------------------------------------------------------------------


def pixels(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_accuracy_trend_without_bands_is_unchanged(tmp_path):
    plain = pixels(plot_accuracy_trend(history(6), tmp_path / "plain.png"))
    for i, bands in enumerate((None, {})):
        same = pixels(plot_accuracy_trend(history(6), tmp_path / f"same{i}.png", bands=bands))
        assert same.shape == plain.shape and np.array_equal(same, plain)


def test_accuracy_trend_draws_noise_bands(tmp_path, monkeypatch):
    from matplotlib.colors import to_rgb

    captured = {}
    original = trends._save

    def spy(fig, path):
        ax = fig.axes[0]
        captured["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        captured["patches"] = [(p.get_facecolor(), p.get_label()) for p in ax.patches]
        captured["ylim"] = ax.get_ylim()
        return original(fig, path)

    plain = pixels(plot_accuracy_trend(history(6), tmp_path / "plain.png"))
    monkeypatch.setattr(trends, "_save", spy)
    banded = plot_accuracy_trend(
        history(6), tmp_path / "band.png", bands={"resnet50": (0.72, 0.76)}
    )
    assert_png(banded, min_width=600, min_height=400)
    image = pixels(banded)
    assert image.shape != plain.shape or not np.array_equal(image, plain)
    # Listed right below its model's line, before the decisions.
    assert captured["legend"][:3] == ["cnn", "resnet50", "resnet50 noise band"]
    [(colour, label)] = captured["patches"]
    assert label == "resnet50 noise band"
    assert colour[:3] == pytest.approx(to_rgb("C1"))  # the model's colour, lightly
    assert 0 < colour[3] < 0.3
    low, high = captured["ylim"]
    assert low <= 0.72 and high >= 0.76  # the band is in view


def test_accuracy_trend_marks_within_noise(tmp_path, monkeypatch):
    captured = _legend_of_the_saved_figure(monkeypatch)
    points = history(3)
    points[-1]["models"]["cnn"]["decision"] = "within-noise"
    points[-2]["models"]["resnet50"]["decision"] = "already-champion"  # accepted, unmarked
    assert_png(plot_accuracy_trend(points, tmp_path / "noise.png"), min_height=400)
    assert "within noise" in captured["legend"]


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ({"vit": (0.5, 0.6)}, "none of the points"),
        ({"cnn": (0.7, 0.6)}, "low <= high"),
        ({"cnn": (math.nan, 0.6)}, "finite"),
        ({"cnn": (0.5, math.inf)}, "finite"),
        ({"cnn": (-0.1, 0.6)}, r"\[0, 1\]"),
        ({"cnn": (0.5, 1.2)}, r"\[0, 1\]"),
        ({"cnn": (0.5,)}, "pair"),
        ({"cnn": "0.5-0.6"}, "pair"),
        ({"cnn": {"low": 0.5, "high": 0.6}}, "pair"),
        ({"cnn": ("0.5", 0.6)}, "must be a number"),
        ({"": (0.5, 0.6)}, "non-empty strings"),
        ([("cnn", (0.5, 0.6))], "bands must be a mapping"),
    ],
)
def test_accuracy_trend_rejects_malformed_bands(tmp_path, bands, message):
    with pytest.raises(ValueError, match=message):
        plot_accuracy_trend(history(3), tmp_path / "bad.png", bands=bands)
    assert not (tmp_path / "bad.png").exists()
    assert plt.get_fignums() == []


def test_noise_bands_from_the_gate():
    from compare_models.runs.decision import GateDecision, NoiseBand
    from compare_models.runs.track_history import noise_bands
    from compare_models.statistics.paired import compare_pair
    from compare_models.statistics.records import PairComparison

    y = np.arange(200) % 4
    right = np.eye(4)[y] * 0.9 + 0.025
    wrong = np.eye(4)[(y + 1) % 4] * 0.9 + 0.025
    champion, challenger = right.copy(), right.copy()
    champion[:20], challenger[:30] = wrong[:20], wrong[:30]  # champion 0.90, challenger 0.85
    pair = PairComparison.model_validate(
        compare_pair(
            y, champion, challenger, name_a="champion", name_b="challenger",
            class_names=["a", "b", "c", "d"], n_resamples=1000,
        )
    )  # fmt: skip

    def decision(model: str, band: NoiseBand | None, comparison=pair) -> GateDecision:
        return GateDecision(
            model=model, track="main", decision="within-noise", reason="r",
            champion_run_id="20261126-020000-ab12cd34", comparison=comparison, band=band,
        )  # fmt: skip

    def band(points: float, source: str = "replicas") -> NoiseBand:
        return NoiseBand(points=points, class_points={}, source=source, runs=3, detail="d")

    bands = noise_bands(
        {
            "cnn": decision("cnn", band(0.03)),
            "wide": decision("wide", band(0.2)),
            "off": decision("off", band(0.0, "off")),
            "none": decision("none", None),
            "first": decision("first", band(0.03), comparison=None),
        }
    )
    assert set(bands) == {"cnn", "wide"}
    assert bands["cnn"] == pytest.approx((0.87, 0.93))  # the champion's accuracy ± the band
    assert bands["wide"] == pytest.approx((0.70, 1.0))  # clipped to [0, 1]
