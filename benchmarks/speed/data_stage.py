"""Data stage on the real archive: cold (fetch, verify, decode, split, upload) and warm
(cache hit), seed protocol. Targets: cold <= 15 s, warm <= 3 s.

Cold means an empty bucket and an empty local cache; warm is the same call again with a
fresh local cache (so nothing is served from this machine's disk but the source archive).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks.common import emit, require_archive, scratch_bucket
from compare_models.config import SplitSpec
from compare_models.data.dataset import prepare_dataset


def main() -> None:
    archive = require_archive()
    spec = SplitSpec(protocol="seed")
    with scratch_bucket() as store, tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        cold = prepare_dataset(str(archive), spec, store, Path(tmp) / "cold")
        cold_s = time.perf_counter() - t
        warm_runs = []
        for i in range(3):
            t = time.perf_counter()
            warm = prepare_dataset(str(archive), spec, store, Path(tmp) / f"warm{i}")
            warm_runs.append(time.perf_counter() - t)
        assert warm.reused and not cold.reused
    emit(
        "data_stage",
        {
            "data": str(archive.name),
            "split": "seed",
            "sizes": cold.sizes,
            "cold_seconds": round(cold_s, 2),
            "warm_seconds": round(min(warm_runs), 3),
            "warm_seconds_all": [round(w, 3) for w in warm_runs],
            "targets": {"cold_seconds": 15, "warm_seconds": 3},
        },
    )


if __name__ == "__main__":
    main()
