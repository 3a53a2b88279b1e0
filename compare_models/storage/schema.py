"""Records stored in the bucket carry a schema version: one check of it, shared by every
versioned record (the manifest, the champion record), so a record from a newer compare-models
is refused with the same words and a malformed version never reads as an old one."""

from __future__ import annotations

from typing import Any


def stored_version(data: dict[str, Any], *, newest: int, what: str) -> int:
    """The `schema_version` of a stored record (0 when absent: written before versions), or a
    `ValueError` naming `what` when it is malformed or newer than `newest`."""
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ValueError(f"schema_version must be a non-negative integer, got {version!r}")
    if version > newest:
        raise ValueError(
            f"this {what} has schema_version {version}, written by a newer compare-models than "
            f"this one (which reads up to {newest}): upgrade compare-models to read it"
        )
    return version
