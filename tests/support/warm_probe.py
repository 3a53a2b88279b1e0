"""`python -m tests.support.warm_probe [CODE [SLEEP [PID_FILE]]]`: what a process started by
`run_in_own_process` sees, as one JSON line; then it sleeps SLEEP seconds (with a grandchild
that sleeps too, its pid in PID_FILE) and exits with CODE (a negative CODE: killed by that signal)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np


def parent_of(pid: int) -> int:
    """The parent's pid of process `pid` (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


def main(argv: list[str]) -> int:
    code, sleep = (int(argv[0]) if argv else 0), (float(argv[1]) if len(argv) > 1 else 0)
    print(
        json.dumps(
            {
                "argv": argv,
                "main": getattr(sys.modules["__main__"].__spec__, "name", None),
                "cwd": os.getcwd(),
                "probe": os.environ.get("WARM_PROBE"),
                "test": os.environ.get("PYTEST_CURRENT_TEST"),
                "setting": os.environ.get("COMPARE_MODELS_PROBE"),
                "own_group": os.getpgid(0) == os.getpid(),
                "parent": os.getppid(),
                "grandparent": parent_of(os.getppid()),
                "draw": float(np.random.random()),
                "imported": sorted({"jax", "tensorflow"} & set(sys.modules)),
            }
        ),
        flush=True,
    )
    print("to standard error", file=sys.stderr, flush=True)
    if sleep:
        if len(argv) > 2:
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            with open(argv[2], "w") as file:
                file.write(str(grandchild.pid))
        time.sleep(sleep)
    if code < 0:  # killed by that signal
        os.kill(os.getpid(), -code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
