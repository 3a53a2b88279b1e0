"""Run one call in a forked child and measure what it costs: wall time and peak memory.

The child resets its peak-RSS counter (/proc/self/clear_refs, "5"), runs the call, and reports
the exception it raised (type and message), the seconds it took and how far its peak resident
memory rose above where it started. A hard address-space limit (current size + 1 GiB) and a
wall-clock kill in the parent are only backstops: they keep a failing test from taking the
machine down with it. `tweak` lowers data-stage bounds (compare_models.data.sources,
.tar_stream and .pickled_batches) in the child alone, so a bound can be shown to hold at a small
scale with a tiny input.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HARD_TIMEOUT = 60.0


@dataclass(frozen=True)
class Outcome:
    error_type: str | None
    message: str
    seconds: float
    extra_mib: float

    def __str__(self) -> str:
        return (
            f"{self.error_type}: {self.message} ({self.seconds:.2f} s, +{self.extra_mib:.0f} MiB)"
        )


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _lower_bound(name: str, value: Any) -> None:
    """Set a data-stage bound (a MAX_* constant) in every module that holds it, so that the
    code reading it sees the new value whichever module it is in."""
    from compare_models.data import dataset as data
    from compare_models.data import pickled_batches, sources, tar_stream

    holders = [
        module for module in (sources, tar_stream, pickled_batches, data) if hasattr(module, name)
    ]
    if not holders:
        raise AttributeError(f"no data-stage module defines {name}")
    for module in holders:
        setattr(module, name, value)


def _child(conn, fn: Callable[..., Any], args: tuple, tweak: dict[str, Any]) -> None:
    try:
        for name, value in tweak.items():
            _lower_bound(name, value)
        soft = _status_kib("VmSize") * 1024 + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        start_kib = _status_kib("VmRSS")
        started = time.perf_counter()
        try:
            fn(*args)
            error_type, message = None, ""
        except BaseException as exc:  # noqa: BLE001  (reported to the parent, whatever it is)
            error_type, message = type(exc).__name__, str(exc)
        seconds = time.perf_counter() - started
        extra = max(0, _status_kib("VmHWM") - start_kib) / 1024
        conn.send((error_type, message, seconds, extra))
    finally:
        conn.close()
        os._exit(0)


def run_bounded(fn: Callable[..., Any], *args: Any, tweak: dict[str, Any] | None = None) -> Outcome:
    """Run `fn(*args)` in a forked child; its outcome, time and memory rise."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(sender, fn, args, tweak or {}), daemon=True)
    child.start()
    sender.close()
    try:
        if not receiver.poll(HARD_TIMEOUT):
            raise AssertionError(f"the call did not finish within {HARD_TIMEOUT:.0f} s")
        error_type, message, seconds, extra = receiver.recv()
    except EOFError:
        raise AssertionError(
            f"the child died without reporting (exit code {child.exitcode}); killed for memory?"
        ) from None
    finally:
        child.join(5)
        if child.is_alive():
            child.kill()
            child.join(5)
        receiver.close()
    return Outcome(error_type, message, seconds, extra)
