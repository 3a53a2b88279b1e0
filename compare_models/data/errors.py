"""The data stage's error, `DataError`, and the helpers that word its messages.

Shared by `compare_models.data.sources` (getting the archive), `compare_models.data.decoding` (reading
it) and `compare_models.data` (splits): sizes in KiB / MiB, an exception in one short line, an
untrusted value described without printing it, and a local path kept inside its folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compare_models.data.safety import contained


class DataError(ValueError):
    """Bad data input; the message names the problem and the fix."""


def mib(n: int) -> str:
    """A byte count for a message: "163.0 MiB", "12 KiB" or "300 bytes"."""
    return (
        f"{n / (1 << 20):.1f} MiB"
        if n >= 1 << 20
        else f"{n / 1024:.0f} KiB"
        if n >= 1024
        else f"{n} bytes"
    )


def short(exc: BaseException) -> str:
    """An exception as "Type: message", cut to 200 characters."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:195] + "..."


def describe(value: object) -> str:
    """What an untrusted value is, without printing (or walking) it."""
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    return "nothing" if value is None else f"a {type(value).__name__}"


def inside(base: Path, *parts: str, what: str) -> Path:
    """`base / parts...`, refused with a `DataError` if it would leave `base`."""
    return contained(
        base,
        *parts,
        what=what,
        error=DataError,
        hint="the name comes from an untrusted source or key, fix or remove it",
    )
