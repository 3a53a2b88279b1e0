"""One image file of any size to a dataset's image size (`FolderPolicy.image_size`, 32 by
default): square RGB, uint8.

Pillow opens only the allowlisted formats (`decoding.IMAGE_FORMATS`), the pixel count is
checked from the header before any pixel is decoded, and the image is converted to RGB and
resized to the input size without keeping its aspect ratio (as CIFAR-10's images were made):
by area averaging (Pillow's BOX filter) when shrinking, bicubic when enlarging. A colour JPEG
that needs no reduced-scale decoding has its pixels decoded by libjpeg-turbo through simplejpeg
once Pillow has opened it (`compare_models.data.jpeg`: the same pixels, several times faster).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from compare_models.config import IMAGE_SIZE
from compare_models.data import jpeg
from compare_models.data.decoding import IMAGE_FORMATS
from compare_models.data.errors import DataError, short

#: The most pixels an image may declare (a 12-megapixel photo is about 12 million).
MAX_PIXELS = 64_000_000


def resize_method(size: int = IMAGE_SIZE) -> str:
    """How an image becomes `size` x `size` pixels, in words: recorded in each dataset version
    (and hashed into its id), so a version says how its pixels were made."""
    return (
        f"resized to {size}x{size} without keeping the aspect ratio: area averaging (Pillow BOX) "
        f"when shrinking (JPEG first decoded at the smallest DCT scale of at least "
        f"{2 * size}x{2 * size}), bicubic when enlarging; converted to RGB"
    )


def _resized(rgb, size: tuple[int, int]) -> np.ndarray:
    """An RGB Pillow image at `size` (height, width): area averaging when shrinking, bicubic
    when enlarging."""
    from PIL import Image

    target = (size[1], size[0])
    if rgb.size != target:
        shrinking = rgb.size[0] >= target[0] and rgb.size[1] >= target[1]
        rgb = rgb.resize(target, Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC)
    return np.asarray(rgb, dtype=np.uint8)


#: The resizing of CIFAR-10-sized (32 x 32) versions, what every version before image sizes used.
RESIZE = resize_method()


def to_input(
    payload: bytes, size: tuple[int, int] = (IMAGE_SIZE, IMAGE_SIZE)
) -> tuple[np.ndarray, tuple[int, int]]:
    """(pixels of shape size+(3,), the image's own (width, height)); a `DataError` names why not."""
    from PIL import Image

    draft = (size[1] * 2, size[0] * 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS) as image:
                width, height = image.size  # from the header, before any pixel is decoded
                if width * height > MAX_PIXELS:
                    raise DataError(
                        f"it declares {width}x{height} pixels, more than {MAX_PIXELS:,}"
                    )
                fast = jpeg.decode(payload, image, draft_to=draft)
                if fast is not None:
                    if fast.shape[:2] == tuple(size):
                        return fast, (width, height)
                    return _resized(Image.fromarray(fast), size), (width, height)
                if image.format == "JPEG":
                    image.draft("RGB", draft)  # decode at a reduced scale
                return _resized(image.convert("RGB"), size), (width, height)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DataError("it declares an enormous size (a decompression bomb)") from None
    except Exception as exc:
        raise DataError(
            f"it is corrupt or not an image ({short(exc)}); accepted formats are {', '.join(IMAGE_FORMATS)}"
        ) from None
