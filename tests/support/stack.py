"""The test suite's own local stack: SeaweedFS, a Prefect server and (for the deployment tests)
workers in `.compare-models/test-stack/`, on ports of their own (S3 8833, Prefect 4700,
PostgreSQL 5933). `make test` leaves the user's own services alone: their bucket, and the
flow runs, deployments, artifacts and workers of the Prefect server they watch on 4200.

`apply()` points this process (and every process it starts) at the test stack; `tests/conftest.py`
calls it before anything imports Prefect, whose settings read the environment at import.

    python -m tests.support.stack up [--workers] [--mlflow]|down|status
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: where the test stack listens. SeaweedFS' other ports move by the S3 port's offset (+500: none
#: of them lands on a port of the default stack, whose gRPC ports are its HTTP ports + 10000)
#: TEST_STACK_PORT_SHIFT (default 0) moves them all, for a second test stack beside this one: a
#: second checkout's (a git worktree), or the one `make test` runs the serial tests on while the
#: others run; it is read by every process, so it must not carry an inherited prefix
PORT_SHIFT_VARIABLE = "TEST_STACK_PORT_SHIFT"


def _port_shift() -> int:
    value = os.environ.get(PORT_SHIFT_VARIABLE, "0").strip() or "0"
    if not value.isdigit() or int(value) > 2000:
        raise ValueError(f"{PORT_SHIFT_VARIABLE}={value!r}: give a whole number from 0 to 2000")
    return int(value)


SHIFT = _port_shift()

#: the stack's state (its services' data, pid files, logs); a shifted stack has a folder of its own
HOME = ROOT / ".compare-models" / (f"test-stack-{SHIFT}" if SHIFT else "test-stack")


PORTS = {
    name: port + SHIFT
    for name, port in {
        "COMPARE_MODELS_S3_PORT": 8833,
        "COMPARE_MODELS_PREFECT_PORT": 4700,
        "COMPARE_MODELS_POSTGRES_PORT": 5933,
        "COMPARE_MODELS_MLFLOW_PORT": 5500,
    }.items()
}

#: prefixes of the variables that could point a stack (or the flows) at another one, or change
#: what the tests check (webhooks, precision, fault injection, Keras' backend): none is inherited
INHERITED_PREFIXES = ("COMPARE_MODELS_", "PREFECT_", "AWS_", "KERAS_", "MLFLOW_")


#: how `main` prints each service's state, and `up` reads it back
_STATE_LINE = "test stack {}: {}"


def inherited(name: str) -> bool:
    return name.startswith(INHERITED_PREFIXES)


def environment() -> dict[str, str]:
    """The variables that make a process use the test stack (its credentials come from its own
    env file, written by its first `up`)."""
    return {
        "COMPARE_MODELS_HOME": str(HOME),
        "COMPARE_MODELS_ENV_FILE": str(HOME / "stack.env"),
        **{name: str(port) for name, port in PORTS.items()},
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{PORTS['COMPARE_MODELS_S3_PORT']}",
        "PREFECT_API_URL": f"http://127.0.0.1:{PORTS['COMPARE_MODELS_PREFECT_PORT']}/api",
        "PREFECT_HOME": str(HOME / "prefect-client"),  # not the user's profiles (API keys, URLs)
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the nightly deployment's cron would queue runs that the next session's workers start
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        # MLflow is off for the suite (an empty value wins over the env file); the MLflow tests
        # turn it on for themselves (`mlflow_url()`)
        "MLFLOW_TRACKING_URI": "",
    }


def unused_port() -> int:
    """A loopback port nothing listens on (a server that is not there)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_url() -> str:
    """The test stack's MLflow server (`up(mlflow=True)`)."""
    return f"http://127.0.0.1:{PORTS['COMPARE_MODELS_MLFLOW_PORT']}"


def apply() -> None:
    """Point this process at the test stack: drop whatever named the user's stack, set ours."""
    for name in [name for name in os.environ if inherited(name)]:
        del os.environ[name]
    os.environ.update(environment())
    # Prefect creates its home folder when imported, but not the folders above it
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True, mode=0o700)


@contextlib.contextmanager
def _locked():
    """One process at a time (pytest-xdist starts several, each asking for the stack)."""
    HOME.mkdir(parents=True, exist_ok=True)
    with (HOME / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def up(*, workers: bool = False, mlflow: bool = False) -> dict[str, str]:
    """`compare-models up` of the test stack (idempotent; safe from several processes at once),
    run in a process of its own: the services outlive it as children of init. Started by a
    pytest process instead, a service stopped later (a restart test, the workers' teardown)
    would stay a zombie of that process, which `down` sees as still running.

    The workers inherit this session's COMPARE_MODELS_BUCKET; the MLflow server (`mlflow`) does
    not: it outlives the session, so its artifacts go to the stack's own bucket."""
    result = _up(["--workers"] if workers else [], dict(os.environ))
    if mlflow:
        own = {k: v for k, v in os.environ.items() if k != "COMPARE_MODELS_BUCKET"}
        result |= _up(["--mlflow"], own)
    return result


def _up(flags: list[str], env: dict[str, str]) -> dict[str, str]:
    command = [sys.executable, "-m", "tests.support.stack", "up", *flags]
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"the test stack did not start:\n{out.stdout}{out.stderr}")
    prefix = _STATE_LINE.split("{}")[0]
    return dict(
        line.removeprefix(prefix).split(": ", 1)
        for line in out.stdout.splitlines()
        if line.startswith(prefix)
    )


def main(argv: list[str]) -> int:
    if os.environ.get("COMPARE_MODELS_HOME") != str(HOME):
        apply()  # before Prefect is imported: its settings read the environment then
    from compare_models.local.services import down, status
    from compare_models.local.services import up as start

    command = argv[0] if argv else "status"
    if command == "up":
        with _locked():
            result = start(workers="--workers" in argv[1:], mlflow="--mlflow" in argv[1:])
    elif command == "down":
        with _locked():
            result = down()
    elif command == "status":
        result = {row["service"]: row["healthy"] for row in status()}
    else:
        print(
            f"usage: python -m tests.support.stack up [--workers] [--mlflow]|down|status (not {command!r})",
            file=sys.stderr,
        )
        return 2
    for name, state in result.items():
        print(_STATE_LINE.format(name, state))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
