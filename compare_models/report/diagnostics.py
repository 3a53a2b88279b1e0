"""Where the models disagree: figures for the comparison report.

* :func:`disagreement_gallery`: test images on which the models' predictions differ.
* :func:`confident_mistakes`: each model's most confident wrong predictions.
* :func:`reliability_diagram`: top-label calibration per model, with the expected calibration
  error (:func:`expected_calibration_error`) in the legend.

Each function writes one PNG (creating its folder) and returns its path.

Figures are built with matplotlib's object-oriented API (``matplotlib.figure.Figure`` rendered
by the Agg canvas) instead of ``pyplot``: nothing is registered in pyplot's global figure list,
so no figure can be left open, nothing depends on the process-wide backend (the module does not
call ``matplotlib.use``, which would change the backend of whoever imports it), and drawing is
safe from worker threads such as Prefect's task runners. This is the approach matplotlib
documents for servers ("Embedding in a web application server").

Images may be ``uint8`` in ``0..255`` or floats in ``[0, 1]``, shaped ``(n, H, W, 3)``,
``(n, H, W, 1)`` or ``(n, H, W)``; they are shown with nearest-neighbour upscaling so 32x32
CIFAR-10 pixels stay sharp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from matplotlib.figure import Figure

from compare_models.evaluation.calibration import (
    calibration_bins,
    check_bins,
)
from compare_models.evaluation.validation import (
    check_class_names,
    check_predictions,
)
from compare_models.report import figures

RIGHT = "#1a7f37"  # green
WRONG = "#cf222e"  # red
TILE_IN = 1.2  # inches per image tile: a 32x32 image at ~3.75 screen pixels per pixel
_COL_IN = 1.55  # tile plus room for "resnet50: airplane 0.99" at 7 pt
_LINE_IN = 0.15  # one 7 pt caption line
_FONT = 7


def reliability_diagram(
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    path: str | Path,
    *,
    n_bins: int = 15,
) -> tuple[Path, dict[str, float]]:
    """Reliability diagram (top-label calibration) of every model, with ECE in the legend.

    The upper panel plots each model's per-bin accuracy against mean confidence
    (``calibration_curve``, uniform bins) and the diagonal of perfect calibration; the lower
    panel shows how many images fall in each confidence bin.

    Args:
        y_true: True labels, shape ``(n,)``, integers ``0..k-1``.
        probs: Model name -> predicted probabilities ``(n, k)`` in ``[0, 1]``.
        path: Where to write the PNG.
        n_bins: Number of equal-width confidence bins.

    Returns:
        ``(path, {model name: ECE})``.

    Raises:
        ValueError: On invalid inputs (see :func:`expected_calibration_error`).
    """
    check_bins(n_bins)
    k = _n_classes(probs)
    labels, clean = check_predictions(y_true, probs, k, unit_interval=True)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    fig = figures.figure(6.0, 6.4)
    top = fig.add_axes((0.12, 0.36, 0.84, 0.58))
    bottom = fig.add_axes((0.12, 0.08, 0.84, 0.2), sharex=top)
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfectly calibrated")
    eces: dict[str, float] = {}
    for name, p in clean.items():
        confidence = p.max(axis=1)
        correct = p.argmax(axis=1) == labels
        accuracy, mean_conf, counts, ece = calibration_bins(correct, confidence, n_bins)
        eces[name] = ece
        label = f"{name} (ECE {ece:.3f})"
        (line,) = top.plot(mean_conf, accuracy, marker="o", markersize=4, label=label)
        bottom.stairs(counts, edges, color=line.get_color(), linewidth=1.2)
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    top.set_title(f"Reliability (top-label confidence, {n_bins} uniform bins)", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.3)
    top.tick_params(labelbottom=False)
    bottom.set(xlabel="confidence (largest predicted probability)", ylabel="images")
    bottom.set_yscale("log")
    bottom.grid(alpha=0.3)
    return figures.save(fig, path), eces


# --------------------------------------------------------------------------------------------
# Image galleries
# --------------------------------------------------------------------------------------------


def disagreement_gallery(
    images: np.ndarray | ImageReader,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str | Path,
    *,
    max_images: int = 24,
    seed: int = 0,
) -> Path:
    """Gallery of test images on which the models' predictions differ (any two models).

    Each tile shows the image, its true label and every model's prediction with its
    confidence (``"cnn: cat 0.81"``), green when right and red when wrong. With more
    disagreements than ``max_images``, a uniform random sample drawn with
    ``numpy.random.default_rng(seed)`` is shown (in test-set order), so the gallery is
    representative of the disagreements rather than only the extreme ones (those are in
    :func:`confident_mistakes`). With no disagreement the figure says so.

    Args:
        images: Test images ``(n, H, W[, C])``, ``uint8`` or floats in ``[0, 1]``, or an
            `ImageReader` of uint8 images (only the drawn ones are read).
        y_true: True labels, shape ``(n,)``.
        probs: Model name -> predicted probabilities ``(n, k)``; at least two models.
        class_names: Names of the k classes.
        path: Where to write the PNG.
        max_images: Most tiles to draw.
        seed: Seed of the sample when there are more disagreements than ``max_images``.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On invalid inputs, fewer than two models or ``max_images < 1``.
    """
    names = check_class_names(class_names)
    labels, clean = check_predictions(y_true, probs, len(names), min_models=2)
    imgs = _validate_images(images, labels.size)
    _check_positive(max_images, "max_images")
    preds = np.stack([p.argmax(axis=1) for p in clean.values()])
    disagree = np.flatnonzero((preds != preds[0]).any(axis=0))
    total = disagree.size
    if total > max_images:
        chosen = np.sort(np.random.default_rng(seed).choice(disagree, max_images, replace=False))
        how = f"showing a random {max_images} (seed {seed})"
    else:
        chosen = disagree
        how = "showing all"
    title = f"Models disagree on {total} of {labels.size} test images"
    if total == 0:
        return figures.save(
            figures.message_figure(
                f"{title}:\nevery model predicts the same class on every image."
            ),
            path,
        )

    models = list(clean)
    ncols = min(8, chosen.size)
    nrows = -(-chosen.size // ncols)
    lines = 1 + len(models)
    fig, tiles = _tile_grid(nrows, ncols, lines, f"{title} ({how})")
    for tile, i in zip(tiles, chosen, strict=False):
        tile.show(_image(imgs, i))
        caption = [(f"true: {names[labels[i]]}", "black")]
        for m, name in enumerate(models):
            pred = preds[m, i]
            confidence = clean[name][i, pred]
            colour = RIGHT if pred == labels[i] else WRONG
            caption.append((f"{name}: {names[pred]} {confidence:.2f}", colour))
        tile.caption(caption)
    return figures.save(fig, path)


def confident_mistakes(
    images: np.ndarray | ImageReader,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: Sequence[str],
    path: str | Path,
    *,
    per_model: int = 8,
) -> Path:
    """One row per model with its most confident wrong predictions.

    Tiles are ordered by the model's confidence in its wrong class, highest first (ties by
    test-set order), captioned ``"true: X"`` and ``"pred: Y 0.99"``.

    Args:
        images: Test images ``(n, H, W[, C])``, ``uint8`` or floats in ``[0, 1]``, or an
            `ImageReader` of uint8 images (only the drawn ones are read).
        y_true: True labels, shape ``(n,)``.
        probs: Model name -> predicted probabilities ``(n, k)``.
        class_names: Names of the k classes.
        path: Where to write the PNG.
        per_model: Mistakes shown per model.

    Returns:
        The path of the PNG.

    Raises:
        ValueError: On invalid inputs or ``per_model < 1``.
    """
    names = check_class_names(class_names)
    labels, clean = check_predictions(y_true, probs, len(names))
    imgs = _validate_images(images, labels.size)
    _check_positive(per_model, "per_model")
    fig, tiles = _tile_grid(
        len(clean), per_model, 2, "Most confident mistakes per model", row_labels=list(clean)
    )
    for row, (name, p) in enumerate(clean.items()):
        pred = p.argmax(axis=1)
        confidence = p[np.arange(labels.size), pred]
        wrong = np.flatnonzero(pred != labels)
        order = wrong[np.argsort(-confidence[wrong], kind="stable")][:per_model]
        row_tiles = tiles[row * per_model : (row + 1) * per_model]
        for tile, i in zip(row_tiles, order, strict=False):
            tile.show(_image(imgs, i))
            tile.caption(
                [
                    (f"true: {names[labels[i]]}", "black"),
                    (f"pred: {names[pred[i]]} {confidence[i]:.2f}", WRONG),
                ],
            )
        if order.size == 0:
            row_tiles[0].note(f"{name} makes no mistakes")
    return figures.save(fig, path)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _n_classes(probs: Mapping[str, np.ndarray]) -> int:
    if not isinstance(probs, Mapping) or not probs:
        raise ValueError("probs must be a non-empty mapping of model name -> (n, k) probabilities")
    first = np.asarray(next(iter(probs.values())))
    if first.ndim != 2:
        raise ValueError(f"probabilities must have shape (n, k), got shape {first.shape}")
    return first.shape[1]


def _check_positive(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class ImageReader(Protocol):
    """Images read by index (`compare_models.data.shards.ShardReader`): a split too large to
    hold, of which a gallery reads only the images it draws."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def pixels(self, indices) -> np.ndarray: ...


def _validate_images(images: np.ndarray | ImageReader, n: int) -> np.ndarray | ImageReader:
    if not isinstance(images, np.ndarray) and hasattr(images, "pixels"):
        if len(images) != n:
            raise ValueError(f"images hold {len(images)} images but y_true has {n} labels")
        return images  # uint8, read one by one as the tiles are drawn
    imgs = np.asarray(images)
    if imgs.ndim == 4 and imgs.shape[-1] == 1:
        imgs = imgs[..., 0]
    if not (imgs.ndim == 3 or (imgs.ndim == 4 and imgs.shape[-1] == 3)):
        raise ValueError(
            f"images must have shape (n, H, W, 3), (n, H, W, 1) or (n, H, W), got {imgs.shape}"
        )
    if imgs.shape[0] != n:
        raise ValueError(f"images hold {imgs.shape[0]} images but y_true has {n} labels")
    if imgs.dtype != np.uint8 and imgs.dtype.kind != "f":
        raise ValueError(
            f"images must be uint8 (0..255) or floats in [0, 1], got dtype {imgs.dtype}"
        )
    return imgs


def _image(images: np.ndarray | ImageReader, index: int) -> np.ndarray:
    return images[index] if isinstance(images, np.ndarray) else images.pixels([index])[0]


class _Tile:
    """One image slot of a tile grid: a ``TILE_IN`` square whose lower left corner is at
    (``x``, ``bottom``) inches on the grid's one canvas axes (data units are inches)."""

    def __init__(self, canvas, x: float, bottom: float):
        self.canvas, self.x, self.bottom = canvas, x, bottom

    def show(self, image: np.ndarray) -> None:
        """Draw one image upscaled with nearest neighbours: uint8 as is, floats checked in [0, 1]."""
        if image.dtype == np.uint8:
            vmax = 255
        else:
            if not np.isfinite(image).all() or image.min() < 0.0 or image.max() > 1.0:
                raise ValueError(
                    f"float images must lie in [0, 1], got range {np.nanmin(image):.3g}.."
                    f"{np.nanmax(image):.3g} (divide by 255 or pass uint8)"
                )
            vmax = 1
        # Square pixels, centred in the tile (a non-square image is letterboxed).
        height, width = image.shape[:2]
        scale = TILE_IN / max(height, width)
        left = self.x + (TILE_IN - width * scale) / 2
        bottom = self.bottom + (TILE_IN - height * scale) / 2
        # vmin/vmax keep grayscale images from being contrast-stretched (RGB ignores them).
        self.canvas.imshow(
            image,
            interpolation="nearest",
            cmap="gray",
            vmin=0,
            vmax=vmax,
            extent=(left, left + width * scale, bottom, bottom + height * scale),
            aspect="auto",
        )

    def caption(self, lines: list[tuple[str, str]]) -> None:
        """Lines of (text, colour) centred under the image."""
        for j, (text, colour) in enumerate(lines):
            self.canvas.text(
                self.x + TILE_IN / 2,
                self.bottom - 0.03 * TILE_IN - j * _LINE_IN,
                text,
                ha="center",
                va="top",
                fontsize=_FONT,
                color=colour,
            )

    def note(self, text: str) -> None:
        """A line of text in place of the image."""
        self.canvas.text(self.x, self.bottom + TILE_IN / 2, text, fontsize=9)


def _tile_grid(
    nrows: int, ncols: int, lines: int, title: str, *, row_labels: list[str] | None = None
) -> tuple[Figure, list[_Tile]]:
    """A figure of image tiles with ``lines`` caption lines under each; tiles in row order.

    Every tile is drawn on one axes that covers the figure in inches: an axes per tile (24 to
    48 in a two-model report) cost matplotlib tick and layout work (benchmarks/speed/comparison.py,
    10,000 images: disagreement gallery 0.38-0.57 s with them, 0.23-0.27 s without).
    """
    left = 0.35 if row_labels else 0.1
    header, footer = 0.45, 0.1
    row_h = TILE_IN + lines * _LINE_IN + 0.15
    width = left + ncols * _COL_IN + 0.1
    height = header + nrows * row_h + footer
    fig = figures.figure(width, height)
    canvas = fig.add_axes((0, 0, 1, 1))
    canvas.set_axis_off()
    canvas.set_autoscale_on(False)
    canvas.set_xlim(0, width)
    canvas.set_ylim(0, height)
    fig.text(0.5, 1 - 0.2 / height, title, ha="center", va="center", fontsize=10)
    tiles = []
    for r in range(nrows):
        bottom = height - header - r * row_h - TILE_IN
        for c in range(ncols):
            tiles.append(_Tile(canvas, left + c * _COL_IN + (_COL_IN - TILE_IN) / 2, bottom))
        if row_labels:
            fig.text(
                0.15 / width,
                (bottom + TILE_IN / 2) / height,
                row_labels[r],
                rotation=90,
                ha="center",
                va="center",
                fontsize=10,
                fontweight="bold",
            )
    return fig, tiles


def diagnostic_figures(
    images: np.ndarray | ImageReader,
    y_true: np.ndarray,
    probs: Mapping[str, np.ndarray],
    class_names: list[str],
    out_dir: Path,
) -> list[tuple[Path, str]]:
    """The report's "where the models disagree" figures with captions."""
    drawn: list[tuple[Path, str]] = []
    if len(probs) > 1:
        drawn.append(
            (
                disagreement_gallery(
                    images, y_true, probs, class_names, out_dir / "disagreements.png"
                ),
                "Test images on which the models disagree: true label, each model's prediction and confidence "
                "(green right, red wrong)",
            )
        )
    drawn.append(
        (
            confident_mistakes(
                images, y_true, probs, class_names, out_dir / "confident_mistakes.png"
            ),
            "Each model's most confident mistakes",
        )
    )
    path, _ = reliability_diagram(y_true, probs, out_dir / "reliability.png")
    drawn.append(
        (
            path,
            "Reliability diagram: accuracy against confidence, with the expected calibration error (ECE)",
        )
    )
    return drawn


__all__ = [
    "diagnostic_figures",
    "confident_mistakes",
    "disagreement_gallery",
    "reliability_diagram",
]
