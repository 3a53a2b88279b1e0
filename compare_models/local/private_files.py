"""Folders and files only this user can read: the state folder, keys, sockets, the env file."""

from __future__ import annotations

import os
from pathlib import Path


def private_dir(path: Path) -> Path:
    """A folder only this user can enter (state, keys, sockets)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 600 from the start (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
