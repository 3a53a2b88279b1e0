"""GPU memory sampled from nvidia-smi every 200 ms while a training runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


class MemorySampler:
    """nvidia-smi's memory.used every 200 ms while a training runs (none without nvidia-smi)."""

    def __init__(self, path: Path):
        self.path, self.process = path, None

    def __enter__(self):
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    "200",
                ],
                stdout=self.path.open("w"),
                stderr=subprocess.DEVNULL,
            )
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.terminate()
            self.process.wait()

    def peak_mib(self) -> int | None:
        if not self.path.exists():
            return None
        values = [int(v) for v in self.path.read_text().split() if v.strip().isdigit()]
        return max(values) if values else None
