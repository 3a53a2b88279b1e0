"""A training or a re-scoring in a process of its own (`training.process`): real processes,
their output, their time limit and their process group."""

from __future__ import annotations

import os
import sys
import time

import pytest

from compare_models.training.process import ProcessTimedOut, run_in_own_process

PY = sys.executable


def test_the_outcome_holds_the_exit_code_and_the_tails_of_the_output():
    code = "import sys; print('out'); print('x' * 5000); sys.stderr.write('bad\\r\\nworse\\n'); sys.exit(3)"
    outcome = run_in_own_process([PY, "-c", code], timeout=60)
    assert outcome.returncode == 3
    assert outcome.output == "x" * 2999 + "\n"  # the last 3000 characters
    assert outcome.errors == "bad\nworse\n"  # universal newlines, as text mode reads them
    merged = run_in_own_process([PY, "-c", code], timeout=60, merge_errors=True)
    assert merged.output.endswith("x\nbad\nworse\n") and merged.errors == ""


def test_it_runs_with_the_given_folder_and_environment(tmp_path):
    code = "import os; print(os.getcwd(), os.environ.get('DRILL_TEST'))"
    outcome = run_in_own_process(
        [PY, "-c", code], timeout=60, cwd=tmp_path, env={**os.environ, "DRILL_TEST": "yes"}
    )
    assert outcome.returncode == 0 and outcome.output.split() == [str(tmp_path), "yes"]


def test_a_process_past_its_time_is_stopped_with_its_whole_group(tmp_path):
    """The grandchild (a training's own helpers) dies with it: the whole process group."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        f"open({str(pid_file)!r}, 'w').write(str(g.pid)); time.sleep(600)"
    )
    with pytest.raises(ProcessTimedOut, match="ran past 3 s and was stopped"):
        run_in_own_process([PY, "-c", code], timeout=3)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by init, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
