"""Decoding JPEG files: the product's decoding (`compare_models.data.images.to_input`, with its
libjpeg-turbo fast path) against Pillow alone (the same function with the fast path turned
off), on every JPEG of the real CIFAR-10 archive, alternating; and whether the two give the same
pixels for every file.

    python -m benchmarks.speed.jpeg_decode [--rounds 3] [--size 32]
"""

from __future__ import annotations

import argparse
import io
import tarfile
import time
from unittest import mock

import numpy as np
from PIL import Image

from benchmarks.common import emit, require_archive
from compare_models.data import jpeg
from compare_models.data.decoding import IMAGE_FORMATS
from compare_models.data.images import to_input


def _decode_all(payloads: list[bytes], size: int) -> tuple[list[np.ndarray], float]:
    started = time.perf_counter()
    out = [to_input(p, (size, size))[0] for p in payloads]
    return out, time.perf_counter() - started


def _fast(payload: bytes, size: int) -> bool:
    """Whether `payload` takes the fast path when `to_input` decodes it at `size`."""
    with Image.open(io.BytesIO(payload), formats=IMAGE_FORMATS) as image:
        return jpeg.decode(payload, image, draft_to=(2 * size, 2 * size)) is not None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=32, help="the size decoded to")
    args = parser.parse_args(argv)
    archive = require_archive()
    with tarfile.open(archive) as tar:
        payloads = [
            tar.extractfile(m).read() for m in tar if m.isfile() and m.name.endswith(".jpg")
        ]
    fast_path = sum(_fast(p, args.size) for p in payloads)
    rounds, differ = [], None
    for r in range(args.rounds):
        timed = {}
        for side in ("product", "pillow") if r % 2 == 0 else ("pillow", "product"):
            if side == "pillow":
                with mock.patch.object(jpeg, "decode", return_value=None):
                    pixels, seconds = _decode_all(payloads, args.size)
            else:
                pixels, seconds = _decode_all(payloads, args.size)
            timed[side] = (pixels, seconds)
        if differ is None:
            differ = sum(
                not np.array_equal(a, b)
                for a, b in zip(timed["product"][0], timed["pillow"][0], strict=True)
            )
        rounds.append(
            {
                side: {
                    "seconds": round(seconds, 2),
                    "us_per_image": round(1e6 * seconds / len(payloads), 1),
                }
                for side, (_, seconds) in timed.items()
            }
        )
        print(rounds[-1], flush=True)
    emit(
        "jpeg_decode",
        {
            "data": str(archive),
            "images": len(payloads),
            "size": args.size,
            "took_the_fast_path": fast_path,
            "images_whose_pixels_differ": differ,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
