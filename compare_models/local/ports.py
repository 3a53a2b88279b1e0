"""Where the local stack listens, on 127.0.0.1: S3, the Prefect API, PostgreSQL, SeaweedFS' other ports.

Every port can be moved through the environment (a second stack beside the default one, as in
tests); each function reads it when called, so the order of imports and `os.environ` changes
does not matter.
"""

from __future__ import annotations

import os

DEFAULT_S3_PORT = 8333
DEFAULT_PREFECT_PORT = 4200
DEFAULT_POSTGRES_PORT = 5433
DEFAULT_MLFLOW_PORT = 5000

#: SeaweedFS' HTTP ports besides S3 (gRPC ports are these + 10000): moved by the S3 port's offset.
_WEED_PORTS = {
    "-master.port": 9333,
    "-volume.port": 9340,
    "-filer.port": 8888,
    "-admin.port": 23646,
}


def _port(variable: str, default: int) -> int:
    """A port, movable through the environment (a second stack beside the default one, as in tests)."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{variable}={value!r} is not a TCP port number")
    return int(value)


def s3_port() -> int:
    """SeaweedFS' S3 port: COMPARE_MODELS_S3_PORT, default 8333."""
    return _port("COMPARE_MODELS_S3_PORT", DEFAULT_S3_PORT)


def prefect_port() -> int:
    """The Prefect server's port: COMPARE_MODELS_PREFECT_PORT, default 4200."""
    return _port("COMPARE_MODELS_PREFECT_PORT", DEFAULT_PREFECT_PORT)


def postgres_port() -> int:
    """The local PostgreSQL's port: COMPARE_MODELS_POSTGRES_PORT, default 5433."""
    return _port("COMPARE_MODELS_POSTGRES_PORT", DEFAULT_POSTGRES_PORT)


def mlflow_port() -> int:
    """The local MLflow tracking server's port (`up --mlflow`): COMPARE_MODELS_MLFLOW_PORT, default 5000."""
    return _port("COMPARE_MODELS_MLFLOW_PORT", DEFAULT_MLFLOW_PORT)


def local_mlflow_url() -> str:
    return f"http://127.0.0.1:{mlflow_port()}"


def local_s3_url() -> str:
    return f"http://127.0.0.1:{s3_port()}"


def local_prefect_api() -> str:
    return f"http://127.0.0.1:{prefect_port()}/api"


#: `weed mini` on loopback with only S3 (no WebDAV, no Iceberg / Lance catalogs, no admin UI, no
#: telemetry): the local stack's and benchmarks/speed/gpu_check/'s.
SEAWEED_S3_ONLY = (
    "-ip=127.0.0.1",
    "-ip.bind=127.0.0.1",
    "-master.telemetry=false",
    "-webdav=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-admin.ui=false",
)


def seaweed_ports(s3: int | None = None) -> dict[str, int]:
    """SeaweedFS' HTTP ports ({flag: port}) of a stack whose S3 listens on `s3` (default: this
    stack's): every other port moves by that port's offset from the default (the gRPC ports are
    these + 10000)."""
    s3 = s3_port() if s3 is None else s3
    offset = s3 - DEFAULT_S3_PORT
    return {"-s3.port": s3, **{flag: port + offset for flag, port in _WEED_PORTS.items()}}
