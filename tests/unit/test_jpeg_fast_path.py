"""The JPEG fast path (simplejpeg) gives exactly Pillow's pixels, and leaves to Pillow every file
it cannot read the same way."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from compare_models.data import images, jpeg
from compare_models.data.decoding import _decode_image
from compare_models.data.errors import DataError
from compare_models.data.images import to_input


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth image with edges (what JPEG's chroma subsampling and IDCT are sensitive to)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack(
        [np.sin(x / (3 + c)) * 80 + np.cos(y / (5 + c)) * 60 + 128 for c in range(3)], axis=-1
    )
    noisy = base + rng.normal(0, 20, base.shape)
    noisy[height // 3 : height // 2, :] = [250, 10, 30]
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def _fast(payload: bytes, size: tuple[int, int] | None = None):
    """The fast path's pixels for `payload` (None: left to Pillow), as `to_input` asks."""
    with Image.open(io.BytesIO(payload)) as image:
        draft = (size[1] * 2, size[0] * 2) if size else None
        return jpeg.decode(payload, image, draft_to=draft)


def _by_pillow(monkeypatch, payload: bytes, size: tuple[int, int]):
    with monkeypatch.context() as patched:
        patched.setattr(jpeg, "decode", lambda *args, **kwargs: None)
        return to_input(payload, size)


# (width, height, save options, the size asked for)
FAST = [
    (32, 32, {"quality": 75}, (32, 32)),
    (32, 32, {"quality": 95, "subsampling": 0}, (32, 32)),  # 4:4:4
    (32, 32, {"quality": 90, "subsampling": 1}, (32, 32)),  # 4:2:2
    (33, 17, {"quality": 60, "subsampling": 2}, (32, 32)),  # odd sizes, 4:2:0, enlarged
    (100, 60, {"quality": 80, "progressive": True}, (64, 64)),  # shrunk by BOX
    (120, 90, {"quality": 85, "optimize": True}, (32, 32)),  # Pillow would not draft: 120//64 == 1
    (64, 64, {"quality": 50, "restart_marker_blocks": 1}, (64, 64)),
]


@pytest.mark.parametrize(("width", "height", "options", "size"), FAST)
def test_the_fast_path_gives_pillows_pixels(monkeypatch, width, height, options, size):
    payload = _jpeg(_photo(width, height), **options)
    assert _fast(payload, size) is not None
    fast, fast_size = to_input(payload, size)
    slow, slow_size = _by_pillow(monkeypatch, payload, size)
    assert fast_size == slow_size == (width, height)
    assert fast.dtype == slow.dtype == np.uint8 and fast.shape == (*size, 3)
    np.testing.assert_array_equal(fast, slow)


def test_what_the_fast_path_leaves_to_pillow(monkeypatch):
    grey = _jpeg(_photo(32, 32).convert("L"))
    cmyk = _jpeg(_photo(32, 32).convert("CMYK"))
    large = _jpeg(_photo(256, 200))  # Pillow decodes it at half scale for 64x64 (draft)
    png = io.BytesIO()
    _photo(32, 32).save(png, "PNG")
    for payload, size in ((grey, (32, 32)), (cmyk, (32, 32)), (large, (32, 32))):
        assert _fast(payload, size) is None
        np.testing.assert_array_equal(
            to_input(payload, size)[0], _by_pillow(monkeypatch, payload, size)[0]
        )
    assert _fast(png.getvalue()) is None
    # the pixel limit is checked from the header, before either decoder runs
    monkeypatch.setattr(images, "MAX_PIXELS", 40 * 40 - 1)
    with pytest.raises(DataError, match="more than"):
        to_input(_jpeg(_photo(40, 40)), (32, 32))


def test_a_header_pillow_refuses_is_refused_though_libjpeg_would_decode_it():
    """Pillow parses the markers itself and refuses some that libjpeg only notes (a JFIF
    segment too short to hold its version, the TEM marker): the file is opened by Pillow
    first, so the fast path cannot let them through."""
    payload = _jpeg(_photo(32, 32))
    body = payload[2:]  # after SOI
    short_jfif = b"\xff\xd8" + b"\xff\xe0\x00\x06JFIF" + body
    tem = b"\xff\xd8\xff\x01" + body
    import simplejpeg

    for malformed in (short_jfif, tem):
        simplejpeg.decode_jpeg(malformed, colorspace="RGB", strict=True)  # libjpeg decodes it
        with pytest.raises(DataError, match="corrupt or not an image"):
            to_input(malformed)
        with pytest.raises(DataError, match="corrupt or not an image"):
            _decode_image(("cifar10/train/cat/3.jpg", malformed))


def test_damaged_jpeg_files_get_pillows_verdict(monkeypatch):
    payload = _jpeg(_photo(48, 48), quality=90)
    truncated = payload[: len(payload) // 2]
    assert _fast(truncated) is None  # libjpeg's warning: strict refuses
    with pytest.raises(DataError, match="corrupt or not an image"):
        to_input(truncated)
    with pytest.raises(DataError, match="corrupt or not an image"):
        _by_pillow(monkeypatch, truncated, (32, 32))
    # bytes flipped inside the entropy-coded data: whatever Pillow says, the fast path says too
    altered = bytearray(payload)
    for offset in range(len(altered) // 2, len(altered) - 2, 97):
        altered[offset] ^= 0x5A
    outcomes = []
    for decode in (to_input, lambda p, s: _by_pillow(monkeypatch, p, s)):
        try:
            outcomes.append(decode(bytes(altered), (32, 32))[0])
        except DataError as exc:
            outcomes.append(str(exc))
    if isinstance(outcomes[0], str):
        assert outcomes[0] == outcomes[1]
    else:
        np.testing.assert_array_equal(outcomes[0], outcomes[1])
    with pytest.raises(DataError):
        to_input(b"\xff\xd8\xff" + b"\x00" * 64)  # the magic and nothing else


def test_the_cifar_archive_decoder_takes_the_same_path():
    payload = _jpeg(_photo(32, 32, seed=3), quality=80)
    fast = _decode_image(("cifar10/train/cat/1.jpg", payload))
    with Image.open(io.BytesIO(payload)) as image:
        np.testing.assert_array_equal(fast, np.asarray(image.convert("RGB")))
    for other, problem in (
        (_jpeg(_photo(32, 32).convert("L")), "mode L"),
        (_jpeg(_photo(40, 32)), "40x32"),
    ):
        with pytest.raises(DataError, match=problem):
            _decode_image(("cifar10/train/cat/2.jpg", other))
