"""Warm starts: a process that has imported Keras once, and forks each training, re-scoring and
export from then on, instead of starting a fresh interpreter that imports it again.

A training process spends most of its first seconds importing TensorFlow (or JAX), Keras and
Prefect: on a small training that is most of its CPU time (docs/benchmarks.md, "Warm process
starts"). A zygote imports them once, with exactly the environment its children get, and then
forks a child per command. What a child gets is what a fresh `python -m MODULE ARGS` in that
environment gets after its imports; only the import is skipped:

* its own process and process group (`os.setsid`), so a timeout kills the whole group as
  before;
* its standard output and error in the caller's files;
* `sys.argv`, `__main__` (`runpy`, as `python -m` runs it), the folder and the environment
  (the zygote's, which is the command's but for `PER_COMMAND_ENV`, set in each child);
* fresh seeds: Python's `random` reseeds itself after a fork, and NumPy's global generator is
  reseeded here (a child must not repeat its siblings' draws).

The zygote computes nothing before it forks: no TensorFlow op, no JAX array, no thread of its
own (forking a process whose threads hold locks is unsafe; the runtimes start their thread
pools in the child, at its first computation).

Who dies with whom. The zygote ends when its caller does (its end of the control socket
closes) or after `IDLE_SECONDS` with nothing running; each child is killed when its zygote ends
(through a small waiter process that also reports the child's exit status: PR_SET_PDEATHSIG
tells it, and it kills the child's whole process group). So a killed flow run leaves no
training behind, nor any process a training started.

`python -m compare_models.training.zygote SPEC_JSON` is the zygote; `run_warm` is the caller's
side, which `training.process.run_in_own_process` uses when asked to (`WarmStart`). A zygote
that cannot start (a broken import) is reported once, and its commands run cold.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from compare_models.device import BACKEND_ENV

log = logging.getLogger(__name__)

#: A zygote with no child running and no request for this long exits (its memory goes back).
IDLE_SECONDS = 600.0
#: The most zygotes one caller keeps; the least recently used beyond it is closed.
MAX_ZYGOTES = 4
#: How long a zygote may take to import its modules before its commands run cold.
START_SECONDS = 300.0
#: The largest request (a command line and its environment) a zygote reads.
MAX_REQUEST_BYTES = 4 << 20
#: Variables that nothing reads before a child starts (this package's settings, MLflow's and
#: boto3's are read when they are used; pytest names the running test in one): not part of a
#: zygote's key, but set (or unset) in each child as its command has them, so that commands
#: that differ only in them share a zygote. The exception is read when Keras' backend loads.
PER_COMMAND_ENV = ("PYTEST_CURRENT_TEST", "COMPARE_MODELS_", "MLFLOW_", "AWS_")
READ_AT_IMPORT = ("COMPARE_MODELS_WORKER_SLOTS",)


def per_command(name: str) -> bool:
    """Whether the variable `name` is each child's own (`PER_COMMAND_ENV`)."""
    return name.startswith(PER_COMMAND_ENV) and name not in READ_AT_IMPORT


_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WarmStart:
    """What a warm child needs loaded: the Keras backend and the modules to import first."""

    backend: str
    preload: tuple[str, ...] = field(default=())


# ── the zygote ─────────────────────────────────────────────────────────────────


def _die_with(sent: signal.Signals) -> None:
    """Get `sent` when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sent)


def _preload(spec: dict) -> None:
    """Imports what the children need, as their own process would: the backend first, with
    the settings it reads once (`training.backend.prepare_environment`)."""
    import importlib

    from compare_models.training.backend import prepare_environment

    os.environ[BACKEND_ENV] = spec["backend"]
    prepare_environment()
    for name in spec["preload"]:
        importlib.import_module(name)


def _serve(control: socket.socket) -> dict | None:
    """The zygote's loop: None when it should exit; in a forked child, that child's request."""
    waiters: set[int] = set()
    closing = False
    idle_since = time.monotonic()
    while True:
        for pid in list(waiters):
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    waiters.discard(pid)
        if waiters:
            idle_since = time.monotonic()
        elif closing or time.monotonic() - idle_since > IDLE_SECONDS:
            return None
        if closing:
            time.sleep(0.5)
            continue
        if not select.select([control], [], [], 1.0)[0]:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(control, MAX_REQUEST_BYTES, 3)
        except OSError:
            data, fds = b"", []
        if not data:  # the caller is gone: so are the children, now (each waiter kills its own)
            for pid in waiters:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGHUP)
            return None
        if data == b"close":
            closing = True
            continue
        request = json.loads(data)
        sys.stdout.flush()
        sys.stderr.flush()
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:
            control.close()
            return _wait_for_child(request, fds, zygote)
        waiters.add(pid)
        idle_since = time.monotonic()
        for fd in fds:
            os.close(fd)


def _wait_for_child(request: dict, fds: list[int], zygote: int) -> dict:
    """In the waiter (a fork of the zygote): forks the child, sends its pid and then its exit
    status to the caller, and exits; in the child, returns its request. When the zygote dies,
    the waiter kills the child's whole process group."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    report, output, errors = fds
    child = os.fork()
    if child == 0:
        _die_with(signal.SIGKILL)
        os.setsid()
        os.dup2(output, 1)
        os.dup2(errors, 2)
        for fd in fds:
            os.close(fd)
        return request

    def _orphaned(*_):
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGHUP, _orphaned)
    _die_with(signal.SIGHUP)
    if os.getppid() != zygote:  # it died before the line above
        _orphaned()
    os.close(output)
    os.close(errors)
    with socket.socket(fileno=report) as caller:
        try:
            caller.sendall(f"pid {child}\n".encode())
            status = os.waitpid(child, 0)[1]
            caller.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:  # the caller stopped waiting (it kills the child's group itself)
            pass
    os._exit(0)


def _run_child(request: dict) -> int:
    """In the child: `python -m MODULE ARGS` as a fresh interpreter would run it."""
    import runpy
    import warnings

    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    for name in [name for name in os.environ if per_command(name)]:
        del os.environ[name]
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.argv = [request["module"], *request["args"]]
    # runpy warns that a preloaded entry module is run again as __main__: that is intended
    warnings.filterwarnings("ignore", message=".*found in sys.modules after import of package")
    try:
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """`python -m compare_models.training.zygote SPEC_JSON`: SPEC_JSON holds the backend, the
    modules to preload and the control socket's file descriptor."""
    spec = json.loads(argv[0])
    control = socket.socket(fileno=spec["fd"])
    _preload(spec)
    control.send(b"ready")
    request = _serve(control)
    if request is None:
        os._exit(0)  # nothing to clean up, and no interpreter shutdown to wait for
    return _run_child(request)


# ── the caller's side ──────────────────────────────────────────────────────────


class ZygoteUnavailable(RuntimeError):
    """The zygote could not take the command (it could not start, or it ended): run it cold."""


def _key(warm: WarmStart, env: Mapping[str, str], cwd: Path) -> str:
    # the zygote sets KERAS_BACKEND to the backend itself, as a training process does
    kept = sorted(
        (name, value)
        for name, value in env.items()
        if not per_command(name) and name != BACKEND_ENV
    )
    text = json.dumps([warm.backend, str(cwd), kept])
    return hashlib.sha256(text.encode()).hexdigest()


class Zygote:
    """One zygote, started by this process with `env` in `cwd`."""

    def __init__(self, warm: WarmStart, env: Mapping[str, str], cwd: Path):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        spec = {"backend": warm.backend, "preload": list(warm.preload), "fd": theirs.fileno()}
        self._errors = tempfile.TemporaryFile()
        self._control = mine
        self._send = threading.Lock()
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(spec)],
            pass_fds=[theirs.fileno()],
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._errors,
            start_new_session=True,
        )
        theirs.close()
        mine.settimeout(START_SECONDS)
        try:
            ready = mine.recv(16)
        except OSError:
            ready = b""
        mine.settimeout(None)
        if ready != b"ready":
            self._control.close()
            self.process.kill()
            self.process.wait()
            self._errors.seek(0)
            last = self._errors.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ZygoteUnavailable(" / ".join(last) or "it did not start in time")

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(
        self,
        module: str,
        args: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        output: IO,
        errors: IO,
    ):
        """Forks `python -m module args`; returns the socket its pid and exit status come on."""
        mine, theirs = socket.socketpair()
        own = {name: value for name, value in env.items() if per_command(name)}
        request = json.dumps({"module": module, "args": list(args), "cwd": str(cwd), "env": own})
        request = request.encode()
        try:
            with self._send:
                socket.send_fds(
                    self._control, [request], [theirs.fileno(), output.fileno(), errors.fileno()]
                )
        except OSError as exc:
            mine.close()
            raise ZygoteUnavailable(f"it ended ({exc})") from None
        finally:
            theirs.close()
        return mine

    def close(self) -> None:
        """Lets the zygote end once its children have (it takes no more commands)."""
        with contextlib.suppress(OSError), self._send:
            self._control.send(b"close")
        self._control.close()


class _Zygotes:
    """This process's zygotes, by backend, folder and environment (at most `MAX_ZYGOTES`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: OrderedDict[str, Zygote] = OrderedDict()
        self._starting: dict[str, threading.Lock] = {}
        self._failed: set[str] = set()

    def get(self, warm: WarmStart, env: Mapping[str, str], cwd: Path) -> Zygote:
        key = _key(warm, env, cwd)
        with self._lock:
            if key in self._failed:
                raise ZygoteUnavailable("it could not start earlier in this process")
            starting = self._starting.setdefault(key, threading.Lock())
        with starting:  # one start per key; the others wait for it
            with self._lock:
                zygote = self._live.get(key)
                if zygote is not None and zygote.alive():
                    self._live.move_to_end(key)
                    return zygote
            try:
                zygote = Zygote(warm, env, cwd)
            except ZygoteUnavailable as exc:
                with self._lock:
                    self._failed.add(key)
                log.warning("warm starts for %s are off in this process: %s", warm.backend, exc)
                raise
            with self._lock:
                self._live[key] = zygote
                while len(self._live) > MAX_ZYGOTES:
                    self._live.popitem(last=False)[1].close()
            return zygote


ZYGOTES = _Zygotes()


@dataclass(frozen=True)
class WarmOutcome:
    returncode: int
    timed_out: bool


def _line(stream: socket.socket, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        stream.settimeout(max(0.001, deadline - time.monotonic()))
        chunk = stream.recv(64)
        if not chunk:
            raise ConnectionError("the waiter ended without a status")
        data += chunk
    return data.decode().strip()


def run_warm(
    warm: WarmStart,
    module: str,
    args: Sequence[str],
    *,
    timeout: float,
    cwd: Path,
    env: Mapping[str, str],
    output: IO,
    errors: IO,
) -> WarmOutcome:
    """Runs `python -m module args` as a fork of the zygote for (`warm`, `env`, `cwd`), with its
    output in `output` and `errors`; kills its process group when it runs past `timeout`
    seconds or the wait is interrupted. Raises `ZygoteUnavailable` when the command did not
    start (the caller runs it cold)."""
    deadline = time.monotonic() + timeout
    zygote = ZYGOTES.get(warm, env, cwd)
    stream = zygote.spawn(module, args, cwd, env, output, errors)
    pid = None
    with stream:
        try:
            try:
                pid = int(_line(stream, min(deadline, time.monotonic() + 60)).split()[1])
            except (OSError, ConnectionError, ValueError, IndexError):
                raise ZygoteUnavailable("it did not fork the command") from None
            try:
                status = _line(stream, deadline)
            except TimeoutError:
                return WarmOutcome(returncode=-signal.SIGKILL, timed_out=True)
            except (OSError, ConnectionError):  # the zygote was killed, and with it the child
                return WarmOutcome(returncode=-signal.SIGKILL, timed_out=False)
            pid = None
            return WarmOutcome(returncode=int(status.split()[1]), timed_out=False)
        finally:
            if pid is not None:  # still running: past its time, or the wait was interrupted
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
