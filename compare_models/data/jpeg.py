"""The fast path for plain JPEG files: their pixels decoded by libjpeg-turbo's TurboJPEG API
through simplejpeg, instead of by Pillow's decoder.

Pillow decodes JPEG with libjpeg-turbo too, but its decoding of a small file costs several
times TurboJPEG's (docs/benchmarks.md, "Batch prediction with the champion"). The file is
still opened by Pillow first (`Image.open`: its parsing of the markers, its format allowlist and
decompression-bomb checks, the caller's pixel-count check), so the fast path refuses whatever
Pillow refuses; only the decoding of the pixels changes.

`decode` returns the pixels only where they are the ones Pillow's decoder would give: a colour
JPEG (Pillow's mode RGB: YCbCr, or RGB stored as is), decoded at full size with the same IDCT
(the accurate integer one) and the same ("fancy") chroma upsampling, both libraries' defaults;
decoded strictly, so that any warning from libjpeg (corrupt or truncated data) or any error
leaves the file to Pillow's decoder, which accepts or refuses it as before. Anything else
(greyscale, CMYK, a multi-picture file, a file Pillow would decode at a reduced DCT scale)
returns None, and the caller decodes it with Pillow. The tests compare both paths.
"""

from __future__ import annotations

import numpy as np


def decode(payload: bytes, image, *, draft_to: tuple[int, int] | None = None):
    """RGB uint8 pixels of `payload` at its own size, or None: let Pillow decode it.

    `image`: `payload` opened by Pillow (not yet loaded). `draft_to` (width, height): the size
    Pillow's `draft` would be asked for; a file Pillow would decode at a reduced scale for it is
    left to Pillow (its `draft` picks the largest of 1/2, 1/4, 1/8 that keeps the size)."""
    if image.format != "JPEG" or image.mode != "RGB":
        return None
    width, height = image.size
    if draft_to is not None and min(width // draft_to[0], height // draft_to[1]) >= 2:
        return None
    import simplejpeg

    try:
        pixels = simplejpeg.decode_jpeg(payload, colorspace="RGB", strict=True)
    except Exception:  # noqa: BLE001 - whatever it is, Pillow's decoder decides
        return None
    if pixels.shape != (height, width, 3):
        return None
    return np.asarray(pixels, dtype=np.uint8)
