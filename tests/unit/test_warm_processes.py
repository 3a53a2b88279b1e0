"""Warm starts (`training.zygote`): a command forked from a zygote runs as a fresh
`python -m` would, in its own process group, and dies with the process that asked for it."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from compare_models.config import project_root
from compare_models.training import zygote
from compare_models.training.process import ProcessTimedOut, run_in_own_process
from compare_models.training.zygote import WarmStart
from tests.support.warm_probe import parent_of

PY = sys.executable
PROBE = [PY, "-m", "tests.support.warm_probe"]
LIGHT = WarmStart(backend="tensorflow", preload=("numpy",))


def _probe(*args: str, warm=LIGHT, **options):
    outcome = run_in_own_process(
        [*PROBE, *args],
        timeout=options.pop("timeout", 60),
        cwd=project_root(),
        warm=warm,
        **options,
    )
    return outcome, json.loads(outcome.output.splitlines()[0])


def test_a_warm_command_runs_as_python_m_would_and_its_zygote_is_reused():
    first, seen = _probe("3")
    assert first.returncode == 3 and first.errors == "to standard error\n"
    assert seen["argv"] == ["3"] and seen["main"] == "tests.support.warm_probe"
    assert seen["cwd"] == str(project_root()) and seen["own_group"]
    assert seen["parent"] != os.getpid()  # a fork of the zygote, through its waiter
    second, again = _probe("0", merge_errors=True)
    assert second.returncode == 0 and second.output.endswith("to standard error\n")
    assert again["grandparent"] == seen["grandparent"]  # the same zygote
    assert again["draw"] != seen["draw"]  # NumPy's global generator is reseeded in each child


def test_a_jax_zygote_has_imported_tensorflow_which_keras_saves_with():
    """Keras on JAX imports TensorFlow on its first save: a JAX training's zygote has done it."""
    _, seen = _probe(warm=WarmStart(backend="jax", preload=("numpy",)), timeout=120)
    assert seen["imported"] == ["jax", "tensorflow"], seen
    _, light = _probe()
    assert "jax" not in light["imported"], light  # the TensorFlow zygote stays as it was


def test_another_environment_gets_another_zygote():
    _, plain = _probe()
    _, other = _probe(env={**os.environ, "WARM_PROBE": "yes"})
    assert other["probe"] == "yes" and other["grandparent"] != plain["grandparent"]


def test_commands_that_differ_only_in_variables_read_later_share_a_zygote():
    """pytest's test name and this package's settings are each child's own; a variable that
    is not (WARM_PROBE) gets a zygote of its own (the test above)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTEST_CURRENT_TEST", "COMPARE_MODELS_PROBE")
    }
    _, one = _probe(env={**base, "PYTEST_CURRENT_TEST": "one", "COMPARE_MODELS_PROBE": "a"})
    _, two = _probe(env={**base, "PYTEST_CURRENT_TEST": "two"})
    _, unset = _probe(env=base)
    assert (one["test"], two["test"], unset["test"]) == ("one", "two", None)
    assert (one["setting"], two["setting"], unset["setting"]) == ("a", None, None)
    assert one["grandparent"] == two["grandparent"] == unset["grandparent"]
    assert one["parent"] != os.getpid()  # warm: a fork of the zygote, not a child of this one


def test_warm_starts_off_run_the_command_cold(monkeypatch):
    monkeypatch.setenv("COMPARE_MODELS_WARM_PROCESSES", "false")
    _, seen = _probe()
    assert seen["parent"] == os.getpid()


def test_a_zygote_that_cannot_start_runs_its_commands_cold_and_says_so(caplog):
    broken = WarmStart(backend="tensorflow", preload=("no_such_module_for_warm_starts",))
    with caplog.at_level(logging.WARNING, logger=zygote.__name__):
        env = {**os.environ, "WARM_PROBE": "broken"}  # a zygote of its own (not a live one)
        _, seen = _probe(warm=broken, env=env)
        _, again = _probe(warm=broken, env=env)
    assert seen["parent"] == os.getpid() and again["parent"] == os.getpid()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "no_such_module_for_warm_starts" in said[0]  # once a process


def test_a_killed_command_reports_its_signal():
    killed, seen = _probe(str(-signal.SIGTERM))
    assert killed.returncode == -signal.SIGTERM and seen["parent"] != os.getpid()


def test_a_warm_command_past_its_time_is_stopped_with_its_whole_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    _probe()  # the zygote runs: the command below has its 4 s to itself
    above = {}

    def watch() -> None:
        """The grandchild's ancestry while its parent runs: once the command is stopped, an
        orphan is the init process's child."""
        above["chain"] = [_pid_written_to(pid_file, within=4, poll=0.05)]
        for _ in range(4):
            above["chain"].append(parent_of(above["chain"][-1]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    with pytest.raises(ProcessTimedOut, match="ran past 4 s"):
        _probe("0", "600", str(pid_file), timeout=4)
    watcher.join()
    # it ran warm: the command (the grandchild's parent) is a child of the zygote's waiter,
    # not of this process, which started the zygote
    grandchild, command, waiter, zygote, starter = above["chain"]
    assert waiter != os.getpid() and starter == os.getpid(), above
    assert _gone(grandchild)


def test_commands_that_end_at_once_report_their_own_exit_codes():
    """The pid and the exit status can arrive in one read: each is still read."""
    codes = [
        run_in_own_process(
            [*PROBE, str(code)], timeout=60, cwd=project_root(), warm=LIGHT
        ).returncode
        for code in range(20)
    ]
    assert codes == list(range(20))


def test_a_warm_command_dies_with_the_process_that_started_it(tmp_path):
    """The caller is killed: its zygote sees its socket close, and each child's waiter kills
    the child's whole process group (a cold training dies alone, by `die_with_parent`)."""
    pid_file = tmp_path / "child.pid"
    caller = subprocess.Popen(
        [
            PY,
            "-c",
            "import sys; from compare_models.training.process import run_in_own_process; "
            "from compare_models.training.zygote import WarmStart; "
            f"run_in_own_process([sys.executable, '-m', 'tests.support.warm_probe', '0', '600', "
            f"{str(pid_file)!r}], timeout=600, warm=WarmStart('tensorflow', ('numpy',)))",
        ],
        cwd=project_root(),
    )
    grandchild = _pid_written_to(pid_file, within=60)
    child = parent_of(grandchild)
    caller.kill()
    caller.wait()
    assert _gone(child) and _gone(grandchild)


def _pid_written_to(pid_file, *, within: float, poll: float = 0.1) -> int:
    """The pid the probe writes to `pid_file`, once it is there (waiting up to `within` s)."""
    deadline = time.monotonic() + within
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(poll)
    return int(pid_file.read_text())


def _gone(pid: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False
