"""A full local disk: the error names the folder and the room needed, and leaves no file."""

from __future__ import annotations

from pathlib import Path

import pytest

from compare_models.storage.errors import LocalDiskFull, disk_full_error


def test_a_model_file_on_a_full_disk_says_where_and_how_much(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    from compare_models.training.saving import save_locally

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("adam", "mse")
    path = tmp_path / "checkpoint-1.keras"
    path.symlink_to("/dev/full")  # every write there fails with ENOSPC, as on a full disk
    with pytest.raises(LocalDiskFull) as caught:
        save_locally(model, path)
    message = str(caught.value)
    assert str(tmp_path) in message and "checkpoint-1.keras needs about" in message
    assert "TMPDIR" in message and "are free there" in message
    assert not path.exists() and not path.is_symlink()  # nothing partial left


def test_the_error_gives_megabytes_for_large_files(tmp_path: Path) -> None:
    message = str(disk_full_error(tmp_path / "train.npz", 150_000_000))
    assert "train.npz needs about 150.0 MB" in message and "COMPARE_MODELS_HOME" in message
