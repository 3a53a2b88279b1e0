"""What every figure test checks of a PNG the report's figure modules wrote."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image


def assert_png(
    path: Path,
    min_width: int,
    min_height: int,
    *,
    max_side: int | None = None,
    white_background: bool = False,
) -> tuple[int, int]:
    """A valid PNG of at least `min_width` x `min_height` pixels (at most `max_side` either way),
    not a blank canvas (on white when `white_background`), with nothing left open in pyplot.
    Returns its size."""
    assert path.exists()
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.verify()
    with Image.open(path) as img:
        assert img.width >= min_width and img.height >= min_height
        if max_side is not None:
            assert img.width <= max_side and img.height <= max_side
        grey = img.convert("L")
        assert len(set(grey.getdata())) > 2  # not a blank canvas
        if white_background:
            assert grey.getpixel((0, 0)) == 255  # white background
        size = img.size
    assert plt.get_fignums() == []  # nothing left open in pyplot
    return size
