"""Presigned links for the endpoint a browser reaches (COMPARE_MODELS_PUBLIC_S3_URL), against
the test stack's real SeaweedFS: the workers' endpoint is http://127.0.0.1:<port>, the "public" one the
same server under the name localhost, as MinIO is http://minio:9000 for the containers and
http://localhost:9000 for the browser in Compose."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from compare_models.config import Settings
from compare_models.storage.store import ArtifactStore

pytestmark = pytest.mark.integration
KEY = "tests/cluster-presign/report.html"
BODY = b"<html>compare-models report</html>"


def _other_name(endpoint: str) -> str:
    """The same server under its other loopback name (127.0.0.1 <-> localhost)."""
    parts = urlsplit(endpoint)
    host = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}[parts.hostname]
    return urlunsplit(parts._replace(netloc=f"{host}:{parts.port}"))


def test_links_are_signed_for_the_public_endpoint_and_download(stack, monkeypatch):
    internal = Settings().s3_endpoint_url
    public = _other_name(internal)
    stack.put_bytes(BODY, KEY, overwrite=True, content_type="text/html")
    monkeypatch.setenv("COMPARE_MODELS_PUBLIC_S3_URL", public)
    store = ArtifactStore.from_settings(Settings())
    assert store.endpoint == internal  # reads and writes still go to the workers' endpoint
    assert store.get_bytes(KEY) == BODY

    link = store.presign(KEY, 300)
    assert urlsplit(link).netloc == urlsplit(public).netloc
    assert urlsplit(link).path == f"/{stack.bucket}/{KEY}"  # path-style, as the store client
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in link  # SigV4
    response = httpx.get(link, timeout=10)
    assert response.status_code == 200 and response.content == BODY
    assert Settings().aws_secret_access_key.get_secret_value() not in link


def test_a_link_only_works_on_the_host_it_was_signed_for(stack, monkeypatch):
    """Why the public endpoint matters: the host is part of the signature, so a link signed for
    the workers' endpoint cannot be fixed by rewriting its host (nor the reverse)."""
    internal = Settings().s3_endpoint_url
    stack.put_bytes(BODY, KEY, overwrite=True)
    link = stack.presign(KEY, 300)  # no public endpoint set: signed for the internal one
    assert urlsplit(link).netloc == urlsplit(internal).netloc
    assert httpx.get(link, timeout=10).content == BODY
    moved = link.replace(urlsplit(internal).netloc, urlsplit(_other_name(internal)).netloc, 1)
    assert httpx.get(moved, timeout=10).status_code == 403


def test_without_a_public_endpoint_links_use_the_store_endpoint(stack, monkeypatch):
    monkeypatch.delenv("COMPARE_MODELS_PUBLIC_S3_URL", raising=False)
    internal = Settings().s3_endpoint_url
    monkeypatch.setenv(
        "COMPARE_MODELS_PUBLIC_S3_URL", internal + "/"
    )  # the same endpoint: no second client
    store = ArtifactStore.from_settings(Settings())
    assert store.presign_client is None
    assert urlsplit(store.presign(KEY, 60)).netloc == urlsplit(internal).netloc
