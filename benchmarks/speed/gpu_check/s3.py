"""S3 for the trainings: the endpoint in AWS_ENDPOINT_URL_S3, else a SeaweedFS started here."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def weed_binary(runtime: Path | None) -> str | None:
    """The local stack's `weed` (`local.services.weed_binary`), or the one --install unpacked."""
    from compare_models.local.processes import ServiceError
    from compare_models.local.services import weed_binary

    if runtime is not None:
        os.environ["PATH"] = os.pathsep.join((str(runtime / "bin"), os.environ.get("PATH", "")))
    try:
        return weed_binary()
    except ServiceError:
        return None


def start_s3(work: Path, runtime: Path | None) -> subprocess.Popen | None:
    """The endpoint in AWS_ENDPOINT_URL_S3 (with its credentials), else a SeaweedFS started
    here, for this check's bucket alone. Sets the variables the product's `Settings` read."""
    os.environ.setdefault("COMPARE_MODELS_BUCKET", f"cm-gpu-check-{secrets.token_hex(4)}")
    os.environ["COMPARE_MODELS_HOME"] = str(work / "home")
    if os.environ.get("AWS_ENDPOINT_URL_S3"):
        return None
    from compare_models.local.ports import SEAWEED_S3_ONLY

    weed = weed_binary(runtime)
    if weed is None:
        raise SystemExit(
            "gpu_check: no S3 endpoint: set AWS_ENDPOINT_URL_S3 (and AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY), or bring SeaweedFS's `weed` (on PATH, or --runtime DIR "
            "from `--install`)"
        )
    port, master, volume, filer = (_free_port() for _ in range(4))
    key, secret = secrets.token_hex(8), secrets.token_urlsafe(24)
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": key,
            "AWS_SECRET_ACCESS_KEY": secret,
        }
    )
    (work / "weed").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            weed,
            "mini",
            f"-dir={work / 'weed'}",
            *SEAWEED_S3_ONLY,
            f"-s3.port={port}",
            f"-master.port={master}",
            f"-volume.port={volume}",
            f"-filer.port={filer}",
            f"-admin.port={_free_port()}",
        ],
        env={**os.environ, "AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret},
        stdout=(work / "weed.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

    store = ArtifactStore.from_settings(Settings())
    deadline = time.monotonic() + 120
    while True:
        try:
            store.ensure_bucket()
            return process
        except Exception as exc:  # noqa: BLE001 - not up yet
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"gpu_check: SeaweedFS did not start ({exc}); see {work}/weed.log"
                ) from None
            time.sleep(1)
