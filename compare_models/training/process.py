"""A training or a re-scoring in a process of its own: the parent flow never loads Keras or
TensorFlow (TensorFlow is not safe for two concurrent `fit`s in one process and never gives GPU
memory back).

`run_in_own_process` is the one way to do it: the command starts in a process group of its own,
its output goes to temporary files (never a pipe that a long log could fill), a run past
`timeout` seconds is stopped (`ProcessTimedOut`), and the whole group is killed whenever the
process outlives the wait (a timeout, or a cancelled task interrupting it). It returns a
`ProcessOutcome`: the exit code and the tails of the output. Its two callers read the outcome as
their child writes it:

* `train_in_own_process`: `python -m <entry> JOB.json RESULT.json` (the `train-model` flow,
  `flows.train_model`, for the local trainer); a failure is `TrainingFailed`.
* `compare_models.gate.rescoring.rescore_in_own_process`: a champion re-scored on today's test
  images.

No Prefect and no Keras in here: the tasks call it (`tasks/training.py`, `tasks/gate.py`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from compare_models.config import Settings, project_root
from compare_models.training.jobs import TrainingFailed, TrainingJob
from compare_models.training.zygote import WarmStart, ZygoteUnavailable, run_warm

#: How much of a process's output an outcome keeps (characters, the end of each stream).
TAIL_CHARS = 3000


class ProcessTimedOut(RuntimeError):
    """The process ran past its time and was stopped (its whole process group killed)."""

    def __init__(self, command: Sequence[str], timeout: float):
        super().__init__(f"{' '.join(command)[:300]} ran past {timeout:g} s and was stopped")
        self.timeout = timeout


@dataclass(frozen=True)
class ProcessOutcome:
    """How a process run by `run_in_own_process` ended."""

    returncode: int
    #: the last `TAIL_CHARS` characters of its standard output (with its standard error
    #: when merged)
    output: str
    #: the last `TAIL_CHARS` characters of its standard error ("" when merged into `output`)
    errors: str
    seconds: float


def _tail(stream: IO[bytes], chars: int) -> str:
    """The last `chars` characters of a binary file, decoded as `Path.read_text(errors=
    "replace")` would decode them (universal newlines)."""
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - 4 * chars))  # UTF-8: at most 4 bytes a character
    text = stream.read().decode(errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    return text[-chars:]


def run_in_own_process(
    command: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    merge_errors: bool = False,
    warm: WarmStart | None = None,
) -> ProcessOutcome:
    """Runs `command` in a process group of its own and waits up to `timeout` seconds.

    Returns its `ProcessOutcome` (a non-zero exit code is the caller's to read); raises
    `ProcessTimedOut` when it ran past `timeout`. The whole group is killed whenever the
    process is still running when the wait ends: past the timeout, or when the wait is
    interrupted (a cancelled task). `env` None: this process's environment; `merge_errors`:
    standard error into the same `output` as standard output, as a log is read. `warm`: a
    `python -m MODULE ...` command forks from a zygote that has imported what `warm` names
    (`training.zygote`), unless COMPARE_MODELS_WARM_PROCESSES is off or no zygote can start.

    >>> outcome = run_in_own_process([sys.executable, "-c", "print('hi')"], timeout=60)
    >>> outcome.returncode, outcome.output
    (0, 'hi\\n')
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as output, tempfile.TemporaryFile() as errors:
        code = _run_warm(
            command, timeout, cwd, env, output, output if merge_errors else errors, warm
        )
        if code is None:
            code = _run_cold(
                command, timeout, cwd, env, output, subprocess.STDOUT if merge_errors else errors
            )
        return ProcessOutcome(
            returncode=code,
            output=_tail(output, TAIL_CHARS),
            errors=_tail(errors, TAIL_CHARS),
            seconds=time.perf_counter() - started,
        )


def _run_cold(
    command: Sequence[str],
    timeout: float,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    output: IO[bytes],
    errors: IO[bytes] | int,
) -> int:
    """The exit code of `command` started as a fresh process (`run_in_own_process`)."""
    process = subprocess.Popen(
        list(command),
        start_new_session=True,
        cwd=cwd,
        env=None if env is None else dict(env),
        stdout=output,
        stderr=errors,
    )
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProcessTimedOut(command, timeout) from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run_warm(
    command: Sequence[str],
    timeout: float,
    cwd: Path | None,
    env: Mapping[str, str] | None,
    output: IO[bytes],
    errors: IO[bytes],
    warm: WarmStart | None,
) -> int | None:
    """The exit code of `command` run as a fork of its zygote; None where it is to run cold
    (no `warm`, not `python -m MODULE`, warm starts off, or no zygote could take it)."""
    if warm is None or len(command) < 3 or list(command[:2]) != [sys.executable, "-m"]:
        return None
    if not Settings().warm_processes:
        return None
    try:
        done = run_warm(
            warm,
            command[2],
            command[3:],
            timeout=timeout,
            cwd=Path(cwd or os.getcwd()),
            env=os.environ if env is None else env,
            output=output,
            errors=errors,
        )
    except ZygoteUnavailable:
        return None
    if done.timed_out:
        raise ProcessTimedOut(command, timeout)
    return done.returncode


def train_in_own_process(
    job: TrainingJob,
    *,
    entry: str,
    timeout_minutes: float,
    env: Mapping[str, str],
    warm: WarmStart | None = None,
) -> ProcessOutcome:
    """Runs `python -m <entry> JOB.json RESULT.json` for `job` in the project's folder with
    `env` (`entry`: the `train-model` flow's module, `flows.train_model`, which writes
    `{"error": ...}` to RESULT.json when the training fails). The training publishes its result
    to S3 itself (`jobs.stored_result` reads it back); the entry asks to die with its parent
    (`flows.train_model.die_with_parent`), and its process group dies on a timeout. `warm`:
    as in `run_in_own_process`.

    Raises `TrainingFailed` when it ran past `timeout_minutes` or exited non-zero (with the
    error it reported, else the end of its output)."""
    with tempfile.TemporaryDirectory(prefix=f"job-{job.name}-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(job.model_dump_json())
        try:
            outcome = run_in_own_process(
                [sys.executable, "-m", entry, str(job_path), str(result_path)],
                timeout=60 * timeout_minutes,
                cwd=project_root(),
                env=env,
                merge_errors=True,
                warm=warm,
            )
        except ProcessTimedOut:
            raise TrainingFailed(
                f"{job.label}: the training ran past execution.training_timeout_minutes "
                f"({timeout_minutes:g}) and was stopped"
            ) from None
        if outcome.returncode != 0:
            reported = json.loads(result_path.read_text()) if result_path.exists() else {}
            raise TrainingFailed(
                f"{job.label} training failed (exit {outcome.returncode}): "
                f"{reported.get('error') or outcome.output}"
            )
    return outcome
