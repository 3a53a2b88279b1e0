"""CPU time by kind of process while something else runs (the test suite, a demo): every
process's user + system time, sampled from /proc, grouped by its command line.

    python -m benchmarks.speed.cpu_by_process record OUT.json &   # stop it with SIGTERM
    python -m benchmarks.speed.cpu_by_process summary OUT.json

`record` samples every 0.5 s and keeps each process's last seen CPU time, so a process that
lives less than a sample is missed and one that ends counts up to its last sample. It sees the
services and workers that `compare-models up` detaches, which `time` does not.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import time

#: (kind, a part of the command line), the first match wins: pytest and the CLI before MLflow
#: and PostgreSQL, whose names their arguments may hold (`tests/.../test_mlflow.py`,
#: `up --database postgres`).
KINDS = (
    ("zygotes and their children", "compare_models.training.zygote"),
    ("training (cold)", "flows.train_model"),
    ("export (cold)", "compare_models.serving.export"),
    ("re-scoring (cold)", "compare_models.gate.rescoring"),
    ("prefect server", "prefect server"),
    ("prefect worker", "prefect worker"),
    ("prefect runner", "prefect.runner"),
    ("seaweedfs", "weed"),
    ("pytest worker", "exec(eval(sys.stdin"),
    ("pytest", "pytest"),
    ("compare-models CLI", "compare_models.cli"),
    ("mlflow", "mlflow"),
    ("postgres", "postgres"),
    ("install", "pip"),
)


def _test(pid: str) -> str | None:
    """The test a process was started for: PYTEST_CURRENT_TEST in the environment it started
    with. A warm child sets its own after the fork, where /proc does not show it, so it is
    named after the test that started its zygote (the test stack replaces
    COMPARE_MODELS_WARM_PROCESSES, so the suite cannot be made to start them cold)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            for entry in environ.read().split(b"\0"):
                if entry.startswith(b"PYTEST_CURRENT_TEST="):
                    return entry.split(b"=", 1)[1].decode(errors="replace").rsplit(" ", 1)[0]
    except OSError:
        pass
    return None


def record(out: str) -> None:
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[str, dict] = {}
    stop = False

    def _stop(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    started = time.monotonic()
    first_sweep = True
    while not stop:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    text = stat.read()
                rest = text[text.rindex(")") + 2 :].split()
                key = f"{pid}:{rest[19]}"  # the pid and its start time
                if key not in seen:
                    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                        command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
                    seen[key] = {"ppid": int(rest[1]), "cmd": command[:300], "test": _test(pid)}
                cpu = (int(rest[11]) + int(rest[12])) / tick
                if first_sweep:  # it ran before the recording: only what it adds counts
                    seen[key].setdefault("before", cpu)
                seen[key]["cpu"] = cpu - seen[key].get("before", 0.0)
                seen[key]["last"] = time.monotonic() - started
            except (OSError, ValueError, IndexError):
                pass
        first_sweep = False
        time.sleep(0.5)
    with open(out, "w") as file:
        json.dump(seen, file)


def _totals(entries, group) -> list[tuple[str, float, int]]:
    """(group, CPU-seconds, processes) of the entries `group(entry)` names (None: left out),
    the most CPU first."""
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for entry in entries:
        name = group(entry)
        if name is not None:
            totals[name][0] += entry.get("cpu", 0.0)
            totals[name][1] += 1
    return sorted(
        ((name, cpu, count) for name, (cpu, count) in totals.items()), key=lambda t: -t[1]
    )


def summary(path: str) -> None:
    with open(path) as file:
        entries = list(json.load(file).values())
    kinds = _totals(entries, lambda e: next((k for k, part in KINDS if part in e["cmd"]), "other"))
    for kind, cpu, count in kinds:
        print(f"{cpu:9.1f} s  {count:5d} processes  {kind}")
    print(f"{sum(cpu for _, cpu, _ in kinds):9.1f} s  in all")
    tests = _totals(entries, lambda e: e.get("test"))
    if tests:
        print("\nthe tests whose subprocesses took the most CPU (their own process not counted):")
        for test, cpu, count in tests[:40]:
            print(f"{cpu:9.1f} s  {count:5d} processes  {test}")


if __name__ == "__main__":
    {"record": record, "summary": summary}[sys.argv[1]](sys.argv[2])
