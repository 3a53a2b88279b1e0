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
  reseeded here (a child must not repeat its siblings' draws); only the hash seed of `str`
  and `bytes` is the zygote's.

The zygote computes nothing before it forks: no TensorFlow op, no JAX array, no thread of its
own (forking a process whose threads hold locks is unsafe; the runtimes start their thread
pools in the child, at its first computation).

Who dies with whom. Each child has a small waiter process, which reports the child's pid and
exit status to the caller over the command's own socket, and kills the child's whole process
group when the caller closes that socket (it died, or stopped waiting) or the zygote dies
(PR_SET_PDEATHSIG). The zygote ends when its caller does (its end of the control socket
closes), after "close" once its waiters have, or after `IDLE_SECONDS` with nothing running. So
a killed flow run leaves no training behind, nor any process a training started.

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
#: The largest request (a command line and the per-command variables) a zygote reads; the
#: socket's send buffer (about 200 KB) bounds what a caller can send, and a larger request
#: runs cold.
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
    import importlib.util

    from compare_models.training.backend import prepare_environment

    os.environ[BACKEND_ENV] = spec["backend"]
    prepare_environment()
    for name in spec["preload"]:
        importlib.import_module(name)
    if spec["backend"] == "jax" and importlib.util.find_spec("tensorflow") is not None:
        # Keras on JAX imports TensorFlow, where installed, the first time it saves a model (its
        # serialisation asks whether an object is TensorFlow's): once here, not in every child
        importlib.import_module("tensorflow")


def _serve(control: socket.socket) -> dict | None:
    """The zygote's loop: None when it should exit; in a forked child, that child's request.

    Each command has a waiter, which watches the command's own socket: a caller that dies or
    stops waiting closes it, and the waiter kills the child's group (`_wait_for_child`). After
    "close" the zygote reads nothing more and ends once its waiters have; when its caller dies
    without "close", it ends at once and its waiters kill their children (PR_SET_PDEATHSIG)."""
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
        if not data:  # the caller is gone
            return None
        if data == b"close":
            closing = True
            continue
        try:
            request = json.loads(data)
            if len(fds) != 3:
                raise ValueError(f"{len(fds)} file descriptors")
            sys.stdout.flush()
            sys.stderr.flush()
            zygote = os.getpid()
            pid = os.fork()
        except (OSError, ValueError) as exc:  # this command fails (its caller runs it cold)
            print(f"zygote: a command was not started: {exc}", file=sys.stderr)
        else:
            if pid == 0:
                control.close()
                return _wait_for_child(request, fds, zygote)
            waiters.add(pid)
            idle_since = time.monotonic()
        for fd in fds:
            os.close(fd)


def _wait_for_child(request: dict, fds: list[int], zygote: int) -> dict:
    """In the waiter (a fork of the zygote): forks the child and, once the child has its own
    process group, sends the child's pid and then its exit status to the caller, and exits;
    in the child, returns its request. The waiter kills the child's whole process group when
    the caller closes the command's socket (it died, or stopped waiting) or the zygote dies."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    report, output, errors = fds
    ready_r, ready_w = os.pipe()
    waiter = os.getpid()
    child = os.fork()
    if child == 0:
        _die_with(signal.SIGKILL)
        if os.getppid() != waiter:  # the waiter died before the line above
            os._exit(1)
        os.setsid()
        os.dup2(output, 1)
        os.dup2(errors, 2)
        for fd in (*fds, ready_r):
            os.close(fd)
        os.write(ready_w, b"1")  # its group exists: the caller may kill it from now on
        os.close(ready_w)
        return request

    def _kill_child(*_):
        with contextlib.suppress(OSError):
            os.killpg(child, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(child, signal.SIGKILL)
        os._exit(1)

    signal.signal(signal.SIGHUP, _kill_child)
    _die_with(signal.SIGHUP)
    if os.getppid() != zygote:  # it died before the line above
        _kill_child()
    for fd in (output, errors, ready_w):
        os.close(fd)
    os.read(ready_r, 1)  # empty if the child died first: its pid is reported all the same
    os.close(ready_r)
    exited = os.pidfd_open(child)
    with socket.socket(fileno=report) as caller:
        try:
            caller.sendall(f"pid {child}\n".encode())
            while exited not in select.select([exited, caller], [], [])[0]:
                if not caller.recv(1):  # the caller closed its end: it is gone
                    _kill_child()
            status = os.waitpid(child, 0)[1]
            caller.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
        except OSError:  # the caller is gone
            _kill_child()
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
    if threading.active_count() != 1:  # a fork would copy a process whose threads hold locks
        names = [thread.name for thread in threading.enumerate()]
        raise RuntimeError(f"its imports started threads ({', '.join(names)}): it cannot fork")
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
        spec = {"backend": warm.backend, "preload": list(warm.preload)}
        self._errors = tempfile.TemporaryFile()
        self._send = threading.Lock()
        self._closed = False
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process: subprocess.Popen | None = None
        try:
            with theirs:
                self.process = subprocess.Popen(
                    [sys.executable, "-m", __name__, json.dumps({**spec, "fd": theirs.fileno()})],
                    pass_fds=[theirs.fileno()],
                    env=dict(env),
                    cwd=cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=self._errors,
                    start_new_session=True,
                )
            self._control.settimeout(START_SECONDS)
            ready = self._control.recv(16)
            self._control.settimeout(None)
        except BaseException as exc:
            self._stop()
            if isinstance(exc, OSError):
                raise ZygoteUnavailable(f"it could not start ({exc})") from None
            raise
        if ready != b"ready":
            self._stop()
            self._errors.seek(0)
            last = self._errors.read().decode(errors="replace").strip().splitlines()[-3:]
            raise ZygoteUnavailable(" / ".join(last) or "it did not start")

    def _stop(self) -> None:
        self._closed = True
        self._control.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
                if self._closed:
                    raise OSError("closed: it takes no more commands")
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
        """Lets the zygote end once its children have (it takes no more commands; each child
        still dies with its caller, through its own socket)."""
        with self._send:
            self._closed = True
            with contextlib.suppress(OSError):
                self._control.send(b"close")
            self._control.close()


class _Zygotes:
    """This process's zygotes, by backend, folder and environment (at most `MAX_ZYGOTES`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: OrderedDict[str, Zygote] = OrderedDict()
        self._starting: dict[str, threading.Lock] = {}
        self._failed: set[tuple[str, tuple[str, ...]]] = set()

    def get(self, warm: WarmStart, env: Mapping[str, str], cwd: Path) -> Zygote:
        key = _key(warm, env, cwd)
        with self._lock:
            if (key, warm.preload) in self._failed:
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
                    self._failed.add((key, warm.preload))
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


class _Lines:
    """The lines a waiter sends ("pid N", "exit C"), read with a deadline; bytes that arrive
    with one line are kept for the next."""

    def __init__(self, stream: socket.socket):
        self._stream, self._buffer = stream, b""

    def next(self, deadline: float) -> str | None:
        """The next line, or None at the end of the stream (or a broken one); raises
        TimeoutError."""
        while b"\n" not in self._buffer:
            self._stream.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = self._stream.recv(64)
            except TimeoutError:
                raise
            except OSError:
                return None
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


def _number(line: str | None, word: str) -> int:
    parts = (line or "").split()
    if len(parts) != 2 or parts[0] != word:
        raise ConnectionError(f"the waiter said {line!r}, not {word!r}")
    return int(parts[1])


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
    seconds (counted from this call, the zygote's start included, as a cold process's imports
    are) or the wait is interrupted. Raises `ZygoteUnavailable` only when the command never
    started, so the caller may run it cold: a command that started is never run twice."""
    deadline = time.monotonic() + timeout
    zygote = ZYGOTES.get(warm, env, cwd)
    stream = zygote.spawn(module, args, cwd, env, output, errors)
    pid = None
    with stream:  # closing it tells the waiter to kill the child, if it still runs
        lines = _Lines(stream)
        try:
            try:
                said = lines.next(deadline)
                if said is None:  # no waiter took it (the zygote failed or ended): it never ran
                    raise ZygoteUnavailable("it did not start the command")
                pid = _number(said, "pid")
                said = lines.next(deadline)
            except TimeoutError:
                return WarmOutcome(returncode=-signal.SIGKILL, timed_out=True)
            if said is None:  # the waiter was killed, and the child with it
                return WarmOutcome(returncode=-signal.SIGKILL, timed_out=False)
            code = _number(said, "exit")
            pid = None
            return WarmOutcome(returncode=code, timed_out=False)
        finally:
            if pid is not None:  # still running: past its time, or the wait was interrupted
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
