"""What the CLI's commands share: the error line, the plain table, the store of the settings."""

from __future__ import annotations

import sys
from typing import Any

from compare_models.config import Settings


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(none)"
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def fail(message: str, code: int = 1) -> int:
    print(f"compare-models: error: {message}", file=sys.stderr)
    return code


def open_store():
    from compare_models.store import ArtifactStore

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    return settings, store
