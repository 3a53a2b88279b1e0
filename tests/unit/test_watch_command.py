"""`compare-models watch`: what it reads from a flow run and its arguments (the whole command, on
a deployment's run against a real Prefect server, is in tests/integration/test_deployments.py)."""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from compare_models.cli import watch
from compare_models.cli.progress import EpochLine


@pytest.mark.parametrize(
    ("name", "run_id"),
    [
        ("20261206-0412-ab12cd [cnn+resnet50]", "20261206-0412-ab12cd"),
        ("r1 [cnn]", "r1"),
        ("quick-otter", None),  # a deployment's run before the flow names it
        ("", None),
        (" [cnn]", None),
    ],
)
def test_the_run_id_comes_from_the_flow_runs_name_once_the_flow_set_it(name, run_id):
    assert watch._run_id(SimpleNamespace(name=name)) == run_id


def test_timeout_is_a_positive_number_of_seconds():
    assert watch._seconds("90") == 90.0
    for bad in ("0", "-5", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive number of seconds"):
            watch._seconds(bad)
    with pytest.raises(ValueError):
        watch._seconds("soon")


def test_each_state_is_shown_once_per_change():
    seen = watch._Seen()
    assert seen.changed("run", "Pending") and not seen.changed("run", "Pending")
    assert seen.changed("run", "Running") and seen.changed("r1-cnn", "Running")
    assert not seen.changed("run", None)


def test_off_a_terminal_an_epoch_is_its_logged_line(capsys):
    message = "cnn epoch 2/6 accuracy=0.4100 loss=1.6000 (12.5 s, 400 images/s)"
    line = EpochLine.parse(message)
    assert line is not None and (line.epoch, line.epochs, line.label) == (2, 6, "cnn")
    from datetime import UTC, datetime

    from compare_models.cli.progress import EpochLog

    stamp = datetime(2026, 12, 6, 4, 12, 30, tzinfo=UTC)
    watch._Plain().epoch(EpochLog(id="1", timestamp=stamp, line=line))
    assert capsys.readouterr().out == f"04:12:30 {message}\n"


def test_a_running_task_is_shown_by_its_name_without_prefects_suffix():
    names = ["prepare-data-9ac", "train-cnn", "train-resnet50", "hand over champions-ece"]
    assert [watch._TASK_SUFFIX.sub("", n) for n in names] == [
        "prepare-data",
        "train-cnn",
        "train-resnet50",
        "hand over champions",
    ]
