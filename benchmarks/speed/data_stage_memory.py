"""The data stage's memory on a large folder: the peak memory of `prepare_folder` (snapshot:
list, read, decode, store the packs; then the version's splits as shards), cold, in a process
of its own, for folders of CIFAR-10's training images enlarged by the product's decoding.

The process reports its VmHWM (every resident page at the peak, the files it maps included)
and its peak RssAnon (its own heap and arrays, sampled every 50 ms): the splits are filled in
files mapped from the cache folder, whose pages are the kernel's page cache, written back and
dropped under memory pressure, so RssAnon is what bounds a worker. `--before PATH` runs the same
preparation with the code of another checkout (for example `git worktree add ../before
<commit>`), alternating with this one, each round in a scratch bucket of its own.

    python -m benchmarks.speed.data_stage_memory [--per-class 1000,5000] [--side 128]
        [--before ../before]

Needs the local stack (`compare-models up`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import ROOT, child_json, emit, require_archive, scratch_bucket
from benchmarks.speed.streaming import extract, folder_of

_PREPARE = """
import json, sys, threading, time
from pathlib import Path
peak = {"anon_kib": 0}
def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
def sample():
    while True:
        peak["anon_kib"] = max(peak["anon_kib"], status("RssAnon"))
        time.sleep(0.05)
threading.Thread(target=sample, daemon=True).start()
from compare_models.config import FolderPolicy, Settings, SplitSpec
from compare_models.data.dataset import prepare_folder
from compare_models.storage.store import ArtifactStore
store = ArtifactStore.from_settings(Settings())
started = time.perf_counter()
ref, snap = prepare_folder(sys.argv[1], SplitSpec(protocol="hash"),
                           FolderPolicy(image_size=int(sys.argv[2])), store, Path(sys.argv[3]))
seconds = time.perf_counter() - started
peak["anon_kib"] = max(peak["anon_kib"], status("RssAnon"))
print(json.dumps({"seconds": round(seconds, 1), "images": sum(ref.sizes.values()),
                  "decoded": snap.decoded, "sizes": ref.sizes,
                  "vm_hwm_mib": round(status("VmHWM") / 1024, 1),
                  "peak_rss_anon_mib": round(peak["anon_kib"] / 1024, 1)}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", default="1000,5000", help="images per class, a list")
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--before", type=Path, help="another checkout, measured alternately")
    args = parser.parse_args(argv)
    archive = require_archive()
    sides = [("after", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        train = extract(archive, Path(tmp) / "archive")
        for turn, per_class in enumerate(int(n) for n in args.per_class.split(",")):
            folder = folder_of(train, per_class, Path(tmp) / f"folder-{per_class}")
            for name, root in sides if turn % 2 else list(reversed(sides)):
                with scratch_bucket(), tempfile.TemporaryDirectory() as cache:
                    measured = child_json(
                        ["-c", _PREPARE, str(folder), str(args.side), cache],
                        what=f"preparing {per_class * 10:,} images ({name})",
                        root=root,
                    )
                results.append({"side": name, "folder_images": per_class * 10, **measured})
                print(results[-1], flush=True)
    emit("data_stage_memory", {"data": str(archive), "side": args.side, "results": results})


if __name__ == "__main__":
    main()
