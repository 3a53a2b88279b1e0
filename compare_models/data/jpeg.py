"""The fast path for plain JPEG files: libjpeg-turbo's TurboJPEG through simplejpeg.

Pillow decodes JPEG with libjpeg-turbo too, but opening a small file costs several times the
decoding itself (its plugins, its parsing of the markers, the image object). For a CIFAR-sized
JPEG, Pillow took about 90 us and simplejpeg about 13 us (docs/benchmarks.md).

`decode` returns the pixels only where they are the ones Pillow would give: a colour JPEG
(YCbCr, or RGB stored as is), decoded at full size with the same IDCT (the accurate integer one)
and the same ("fancy") chroma upsampling, strictly: any warning from libjpeg (corrupt or
truncated data) sends the file back to Pillow, which accepts or refuses it as before. Anything
else (greyscale, CMYK, a size over `max_pixels`, a file Pillow would decode at a reduced DCT
scale) returns None, and the caller decodes it with Pillow. The tests compare both paths.
"""

from __future__ import annotations

import numpy as np

#: What a JPEG file starts with (Pillow's own test).
MAGIC = b"\xff\xd8\xff"

#: Colour spaces whose RGB conversion is the same in both libraries.
_COLOUR = frozenset({"YCbCr", "RGB"})


def header(payload: bytes) -> tuple[int, int, str] | None:
    """(width, height, colour space) of a JPEG that the fast path can read, or None."""
    if not payload.startswith(MAGIC):
        return None
    import simplejpeg

    try:
        height, width, colourspace, _ = simplejpeg.decode_jpeg_header(payload)
    except ValueError:
        return None
    return width, height, colourspace


def decode(payload: bytes, max_pixels: int, *, draft_to: tuple[int, int] | None = None):
    """RGB uint8 pixels at the file's own size, or None: decode it with Pillow instead.

    `draft_to` (width, height): the size Pillow's `draft` would be asked for; a file Pillow
    would decode at a reduced scale for it is left to Pillow."""
    found = header(payload)
    if found is None:
        return None
    width, height, colourspace = found
    if colourspace not in _COLOUR or width * height > max_pixels:
        return None
    if draft_to is not None and min(width // draft_to[0], height // draft_to[1]) >= 2:
        return None
    import simplejpeg

    try:
        pixels = simplejpeg.decode_jpeg(payload, colorspace="RGB", strict=True)
    except ValueError:
        return None
    return np.asarray(pixels, dtype=np.uint8)
