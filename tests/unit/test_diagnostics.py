"""Unit tests for compare_models.report.diagnostics: valid PNGs, no open figures, known-answer ECE."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from compare_models.evaluation.calibration import expected_calibration_error
from compare_models.report.diagnostics import (
    confident_mistakes,
    disagreement_gallery,
    reliability_diagram,
)
from tests.support import pngs

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
N, K = 300, 10


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, K, N)
    images = rng.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)

    def model(accuracy: float, seed: int) -> np.ndarray:
        r = np.random.default_rng(seed)
        pred = np.where(r.random(N) < accuracy, y, (y + r.integers(1, K, N)) % K)
        logits = r.normal(size=(N, K))
        logits[np.arange(N), pred] += 3.0
        prob = np.exp(logits)
        return prob / prob.sum(axis=1, keepdims=True)

    return images, y, {"cnn": model(0.6, 1), "resnet50": model(0.8, 2)}


def assert_png(path, min_width=200, min_height=100):
    pngs.assert_png(path, min_width, min_height)


def test_disagreement_gallery_png(tmp_path, data):
    images, y, probs = data
    path = disagreement_gallery(
        images, y, probs, CLASSES, tmp_path / "sub" / "gallery.png", max_images=12
    )
    assert path == tmp_path / "sub" / "gallery.png"
    assert_png(path, min_width=8 * 100, min_height=2 * 120)


def test_disagreement_gallery_accepts_float_and_grayscale_images(tmp_path, data):
    images, y, probs = data
    assert_png(
        disagreement_gallery(images / 255.0, y, probs, CLASSES, tmp_path / "f.png", max_images=4)
    )
    gray = images[..., :1]
    assert_png(disagreement_gallery(gray, y, probs, CLASSES, tmp_path / "g.png", max_images=4))


def test_disagreement_gallery_is_deterministic(tmp_path, data):
    images, y, probs = data
    a = disagreement_gallery(images, y, probs, CLASSES, tmp_path / "a.png", max_images=6, seed=3)
    b = disagreement_gallery(images, y, probs, CLASSES, tmp_path / "b.png", max_images=6, seed=3)
    assert a.read_bytes() == b.read_bytes()


class _Reader:
    """Images read by index, as a split's shards are (`ShardReader.pixels`), counting reads."""

    def __init__(self, images):
        self.images, self.shape, self.read = images, images.shape[1:], []

    def __len__(self):
        return len(self.images)

    def pixels(self, indices):
        self.read.extend(int(i) for i in indices)
        return self.images[np.asarray(indices, dtype=int)]


def test_galleries_read_only_the_images_they_draw_from_a_reader(tmp_path, data):
    """From a reader of a split too large to hold, only the drawn tiles are read, and the
    figures are the ones the same images in memory give."""
    images, y, probs = data
    reader = _Reader(images)
    drawn = disagreement_gallery(
        reader, y, probs, CLASSES, tmp_path / "r.png", max_images=6, seed=3
    )
    held = disagreement_gallery(images, y, probs, CLASSES, tmp_path / "m.png", max_images=6, seed=3)
    assert len(reader.read) == 6 < len(images) and drawn.read_bytes() == held.read_bytes()
    reader.read.clear()
    confident_mistakes(reader, y, probs, CLASSES, tmp_path / "c.png", per_model=4)
    assert 0 < len(reader.read) <= 4 * len(probs)
    with pytest.raises(ValueError, match="images hold"):
        confident_mistakes(_Reader(images[:-1]), y, probs, CLASSES, tmp_path / "x.png")


def test_no_disagreement_still_draws_a_figure(tmp_path, data):
    images, y, probs = data
    same = {"cnn": probs["cnn"], "copy": probs["cnn"].copy()}
    assert_png(disagreement_gallery(images, y, same, CLASSES, tmp_path / "none.png"), min_width=300)


def test_confident_mistakes_png(tmp_path, data):
    images, y, probs = data
    path = confident_mistakes(images, y, probs, CLASSES, tmp_path / "mistakes.png", per_model=5)
    assert_png(path, min_width=5 * 100, min_height=2 * 100)


def test_confident_mistakes_of_a_perfect_model(tmp_path, data):
    images, y, _ = data
    perfect = np.eye(K)[y] * 0.9 + 0.01
    assert_png(confident_mistakes(images, y, {"oracle": perfect}, CLASSES, tmp_path / "p.png"))


def test_reliability_diagram_png_and_ece(tmp_path, data):
    _, y, probs = data
    path, eces = reliability_diagram(y, probs, tmp_path / "reliability.png", n_bins=10)
    assert_png(path, min_width=400, min_height=400)
    assert set(eces) == {"cnn", "resnet50"}
    for name, p in probs.items():
        assert eces[name] == pytest.approx(expected_calibration_error(y, p, n_bins=10), abs=1e-15)
        assert 0.0 <= eces[name] <= 1.0


def _calibrated(n: int, seed: int, overconfident: bool) -> tuple[np.ndarray, np.ndarray]:
    """Binary predictions right with probability equal to their confidence (or not)."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    right = rng.random(n) < confidence
    y = rng.integers(0, 2, n)
    pred = np.where(right, y, 1 - y)
    shown = np.minimum(1.0, confidence + 0.3) if overconfident else confidence
    prob = np.empty((n, 2))
    prob[np.arange(n), pred] = shown
    prob[np.arange(n), 1 - pred] = 1.0 - shown
    return y, prob


def test_ece_small_when_calibrated_and_larger_when_overconfident():
    y, calibrated = _calibrated(20_000, 0, overconfident=False)
    y2, overconfident = _calibrated(20_000, 0, overconfident=True)
    small = expected_calibration_error(y, calibrated)
    large = expected_calibration_error(y2, overconfident)
    assert small < 0.02
    assert large > 0.15


def test_ece_known_answer_with_confidences_on_bin_edges():
    # Two bins ([0, 0.5] and (0.5, 1] as calibration_curve assigns them). Confidence 0.5 lies on
    # the inner edge: np.histogram would count it in the upper bin, calibration_curve in the lower.
    y = np.array([0, 0, 0, 0])
    prob = np.array([[0.5, 0.5], [0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    # images 0,1: confidence 0.5, predicted class 0 (arg-max ties -> first), right.
    # lower bin: accuracy 1, confidence 0.5 -> |1 - 0.5| * 2/4 = 0.25
    # upper bin: image 2 right (conf 1), image 3 wrong (conf 1): accuracy 0.5 -> |0.5 - 1| * 2/4
    assert expected_calibration_error(y, prob, n_bins=2) == pytest.approx(0.5, abs=1e-12)


def test_bad_inputs_raise(tmp_path, data):
    images, y, probs = data
    with pytest.raises(ValueError, match="at least 2 model"):
        disagreement_gallery(images, y, {"cnn": probs["cnn"]}, CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="images hold 299 images but y_true has 300"):
        confident_mistakes(images[:-1], y, probs, CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        confident_mistakes(images.astype(float), y, probs, CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match="images must have shape"):
        confident_mistakes(images[..., :2], y, probs, CLASSES, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\].*logits"):
        reliability_diagram(y, {"logits": np.log(probs["cnn"])}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        expected_calibration_error(y, np.full((N, K), np.nan))
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(y, probs["cnn"], n_bins=0)
    with pytest.raises(ValueError, match="max_images"):
        disagreement_gallery(images, y, probs, CLASSES, tmp_path / "x.png", max_images=0)
    assert plt.get_fignums() == []
