"""The local services expose only the S3 API (signed requests only) and the Prefect API.

Every TCP port the SeaweedFS and Prefect server processes listen on is probed with plain HTTP and
with TLS without a client certificate: only the S3 port and the Prefect API answer; every other
SeaweedFS port (master, volume, filer, admin HTTP and every gRPC port) needs the client certificate
`compare-models up` made, which is shown to open them. S3 rejects unsigned and wrongly signed
requests. Needs the services started by `compare-models up` with this version of compare_models.local.
"""

from __future__ import annotations

import os
import secrets
import ssl
import stat

import boto3
import httpx
import psutil
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from compare_models.config import Settings
from compare_models.local.envfile import ensure_env_file
from compare_models.local.ports import (
    local_prefect_api,
    local_s3_url,
    prefect_port,
    s3_port,
    seaweed_ports,
)
from compare_models.local.tls import ensure_tls

pytestmark = pytest.mark.integration

GO_PLAIN_TO_TLS = "Client sent an HTTP request to an HTTPS server"
UNUSED_PORTS = {
    7333: "WebDAV",
    8181: "Iceberg catalog",
    9101: "Lance namespace",
    6060: "debug/pprof",
}


def _listener_pid(port: int) -> int:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return conn.pid
    pytest.skip(
        f"nothing listens on port {port} (or its process is not visible): start the services with `compare-models up`"
    )


def _listening(pid: int) -> dict[int, str]:
    """port -> bound address, of a process and its children."""
    process = psutil.Process(pid)
    found: dict[int, str] = {}
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN:
                found[conn.laddr.port] = conn.laddr.ip
    return found


def _tls_context(tls: dict | None = None) -> ssl.SSLContext:
    """No client certificate (and no server check) by default; with `tls`, the certificate `up` made."""
    if tls is None:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context
    context = ssl.create_default_context(cafile=str(tls["ca.crt"]))
    context.load_cert_chain(str(tls["node.crt"]), str(tls["node.key"]))
    return context


def _speaks_http(port: int, tls: dict | None = None) -> str | None:
    """The HTTP answer of `port` to a GET (plain, then TLS without a client cert unless `tls`), or None
    when it answers neither (TLS required, client certificate required)."""
    for scheme in ("http", "https"):
        try:
            response = httpx.get(
                f"{scheme}://127.0.0.1:{port}/", timeout=3, verify=_tls_context(tls)
            )
        except httpx.HTTPError:
            continue
        if response.status_code == 400 and GO_PLAIN_TO_TLS in response.text:
            continue  # a TLS port refusing plain HTTP
        return f"{scheme} {response.status_code}"
    return None


@pytest.fixture(scope="module")
def ports(stack) -> dict[str, dict[int, str]]:
    return {
        "seaweedfs": _listening(_listener_pid(s3_port())),
        "prefect": _listening(_listener_pid(prefect_port())),
    }


def test_every_port_is_on_loopback_and_unused_services_are_off(ports):
    for service, listening in ports.items():
        assert all(address == "127.0.0.1" for address in listening.values()), (
            f"{service} listens beyond loopback: {listening}"
        )
    open_unused = {port: name for port, name in UNUSED_PORTS.items() if port in ports["seaweedfs"]}
    assert not open_unused, (
        f"SeaweedFS still serves {open_unused}; restart it with `compare-models down && compare-models up`"
    )


def test_only_s3_and_the_prefect_api_answer_without_credentials(ports):
    answering = {
        port: answer
        for service in ports.values()
        for port in service
        if (answer := _speaks_http(port))
    }
    s3, prefect = s3_port(), prefect_port()
    assert set(answering) == {s3, prefect}, (
        f"ports answering without credentials: {answering}; only {s3} (S3) and {prefect} (Prefect API) may"
    )
    assert httpx.get(local_prefect_api() + "/health", timeout=5).status_code == 200


def test_the_other_ports_open_with_the_client_certificate(ports):
    """The probe can see an open port: with the certificate `up` made, SeaweedFS' HTTP ports answer."""
    tls = ensure_tls(Settings())
    internal = set(ports["seaweedfs"]) - {s3_port()}
    answering = {port for port in internal if _speaks_http(port, tls)}
    assert answering, f"none of {sorted(internal)} answered even with the client certificate"
    weed = seaweed_ports()  # on the test stack, all moved by its S3 port's offset
    assert {weed["-master.port"], weed["-filer.port"]} <= answering  # master and filer HTTP


def test_s3_rejects_unsigned_and_wrongly_signed_requests(stack):
    unsigned = httpx.get(f"{local_s3_url()}/{stack.bucket}", timeout=5)
    assert unsigned.status_code == 403
    assert (
        httpx.put(
            f"{local_s3_url()}/{stack.bucket}/anonymous.txt", content=b"x", timeout=5
        ).status_code
        == 403
    )
    settings = Settings()
    for key_id, secret in (
        (settings.aws_access_key_id.get_secret_value(), secrets.token_urlsafe(30)),
        ("cm-not-a-key", settings.aws_secret_access_key.get_secret_value()),
    ):
        client = boto3.client(
            "s3",
            endpoint_url=local_s3_url(),
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            region_name=settings.aws_region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        with pytest.raises(ClientError) as info:
            client.list_objects_v2(Bucket=stack.bucket)
        assert info.value.response["Error"]["Code"] in (
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId",
            "AccessDenied",
        )
    stack.put_bytes(
        b"signed", "tests/exposure.txt", overwrite=True
    )  # and the right credentials work
    assert stack.get_bytes("tests/exposure.txt") == b"signed"


def test_state_and_keys_are_private(stack):
    settings = Settings()
    assert stat.S_IMODE(os.stat(settings.home).st_mode) == 0o700
    for path in ensure_tls(settings).values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_env_file_is_never_readable_by_others(tmp_path, monkeypatch):
    for name in (
        "AWS_ENDPOINT_URL_S3",
        "AWS_ENDPOINT_URL",
        "PREFECT_API_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    old = os.umask(0)  # the most permissive umask: the mode must still be 600
    try:
        created = tmp_path / ".env"
        assert "AWS_SECRET_ACCESS_KEY" in ensure_env_file(created)
        assert stat.S_IMODE(created.stat().st_mode) == 0o600
        existing = tmp_path / "existing.env"
        existing.write_text("COMPARE_MODELS_BUCKET=mine\n")
        existing.chmod(0o644)
        ensure_env_file(existing)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o600
        assert existing.read_text().startswith("COMPARE_MODELS_BUCKET=mine\n")
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            ".env",
            "existing.env",
        ]  # no temporary file left
    finally:
        os.umask(old)
