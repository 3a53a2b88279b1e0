"""A service of the local stack as a detached process: how it is started (until its health check
answers), found again (its pid file under ``$COMPARE_MODELS_HOME/run``) and stopped (a signal,
a wait, then SIGKILL). Its output goes to ``$COMPARE_MODELS_HOME/logs/<name>.log``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compare_models.config import Settings


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    command: Callable[[Settings], list[str]]
    env: Callable[[Settings], dict[str, str]]
    healthy: Callable[[Settings], bool]
    #: where it answers, for `status` and errors (a function: the ports are read when asked)
    url: Callable[[], str]
    start_timeout: float
    #: run before the first start (e.g. create a database cluster)
    prepare: Callable[[Settings], None] | None = None
    #: how `down` asks it to stop: this signal, to the whole process group or to the main process only
    stop_signal: int = signal.SIGTERM
    stop_group: bool = True


def pid_file(settings: Settings, service: Service) -> Path:
    return settings.home / "run" / f"{service.name}.pid"


def running_pid(settings: Settings, service: Service) -> int | None:
    path = pid_file(settings, service)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def start(settings: Settings, service: Service) -> str:
    if service.healthy(settings):
        return "already running"
    if running_pid(settings, service):
        return _wait(service, settings, started=False)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pid_file(settings, service).parent.mkdir(parents=True, exist_ok=True)
    if service.prepare:
        service.prepare(settings)
    env = {**os.environ, **service.env(settings)}
    with (logs / f"{service.name}.log").open("ab") as log:
        proc = subprocess.Popen(
            service.command(settings),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=settings.home,
        )
    pid_file(settings, service).write_text(str(proc.pid))
    return _wait(service, settings, started=True)


def _wait(service: Service, settings: Settings, *, started: bool) -> str:
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if service.healthy(settings):
            return "started" if started else "already running"
        if running_pid(settings, service) is None:
            break
        time.sleep(0.5)
    log = settings.home / "logs" / f"{service.name}.log"
    raise ServiceError(f"{service.name} did not become healthy at {service.url()}; see {log}")


def _wait_gone(
    settings: Settings, running: dict[Service, int], seconds: float
) -> dict[Service, int]:
    """Waits up to `seconds` for the `running` services' processes to end; returns those left."""
    deadline = time.monotonic() + seconds
    while True:
        running = {s: pid for s, pid in running.items() if running_pid(settings, s) is not None}
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.25)


def stop(settings: Settings, services: list[Service]) -> dict[str, str]:
    """Signal `services`, wait up to 10 s for all of them, then kill what is left."""
    result, running = {}, {}
    for service in services:
        pid = running_pid(settings, service)
        if pid is None:
            result[service.name] = "not running (or not started by compare-models up)"
            continue
        (os.killpg if service.stop_group else os.kill)(pid, service.stop_signal)
        running[service] = pid
    running = _wait_gone(settings, running, 10)
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):  # it ended after the last look
            os.killpg(pid, signal.SIGKILL)
    survivors = _wait_gone(settings, running, 5)  # until reaped: `down` returns with them gone
    for service in services:
        if service in survivors:
            result[service.name] = f"still running (pid {survivors[service]}) after SIGKILL"
        elif service.name not in result:
            pid_file(settings, service).unlink(missing_ok=True)
            result[service.name] = "stopped"
    return result
