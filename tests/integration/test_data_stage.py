"""The data stage against the real local S3: content-hash caching, checksums, sources that
are refused before anything is stored, and a URL source reused offline."""

from __future__ import annotations

import hashlib

import pytest

from compare_models.config import Settings, SplitSpec
from compare_models.data.dataset import prepare_dataset
from compare_models.data.errors import DataError
from compare_models.storage import layout
from tests.support.archives import cifar_python_tarball, image_folder_tarball

SMALL = SplitSpec(protocol="sizes", train=60, val=30, test=20)


pytestmark = pytest.mark.integration


def test_prepare_is_cached_by_content(stack, cache_dir, tmp_path):
    archive = cifar_python_tarball(tmp_path / "cifar-10-python.tar.gz")
    first = prepare_dataset(str(archive), SMALL, stack, cache_dir)
    assert not first.reused and first.sizes == {"train": 60, "val": 30, "test": 20}
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert first.archive_sha256 == sha
    assert stack.exists(layout.raw_archive_key("cifar-10-python", sha, "cifar-10-python.tar.gz"))
    assert stack.exists(layout.prepared_key(first.prefix))
    again = prepare_dataset(str(archive), SMALL, stack, tmp_path / "other-cache")
    assert again.reused and again.prefix == first.prefix and again.shards == first.shards
    other_split = prepare_dataset(
        str(archive), SMALL.model_copy(update={"seed": 1}), stack, cache_dir
    )
    assert not other_split.reused and other_split.prefix != first.prefix


def test_s3_source_and_checksum_mismatch_caches_nothing(stack, cache_dir, tmp_path):
    archive = image_folder_tarball(tmp_path / "folders.tar.gz", per_class=6, test_per_class=2)
    stack.upload(archive, "incoming/folders.tar.gz", overwrite=True)
    wrong = "0" * 64
    with pytest.raises(DataError, match=f"expected SHA-256 {wrong}, got"):
        prepare_dataset(
            stack.uri("incoming/folders.tar.gz"), SMALL, stack, cache_dir, expected_sha256=wrong
        )
    assert not list(stack.list_keys(layout.datasets_named("folders")))  # nothing cached
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    ref = prepare_dataset(
        stack.uri("incoming/folders.tar.gz"),
        SplitSpec(protocol="sizes", train=30, val=20, test=20),
        stack,
        cache_dir,
        expected_sha256=sha,
    )
    assert ref.name == "folders" and ref.sizes["train"] == 30


def test_sha256sums_beside_a_local_archive_is_checked(stack, cache_dir, tmp_path):
    archive = image_folder_tarball(tmp_path / "folders.tar.gz")
    (tmp_path / "SHA256SUMS").write_text(f"{'f' * 64}  folders.tar.gz\n")
    with pytest.raises(
        DataError, match="checksum mismatch for folders.tar.gz: expected SHA-256 f+"
    ):
        prepare_dataset(str(archive), SMALL, stack, cache_dir)


def test_offline_download_says_what_to_do(stack, cache_dir, monkeypatch):
    # loopback URLs are refused by default now; allow them to reach the "no internet" path
    monkeypatch.setenv("COMPARE_MODELS_ALLOW_PRIVATE_URLS", "1")
    with pytest.raises(DataError, match="may have no internet access.*--data <path or s3:// URI>"):
        prepare_dataset(
            "http://127.0.0.1:9/cifar-10-python.tar.gz",
            SMALL,
            stack,
            cache_dir,
            allow_private_urls=Settings().allow_private_urls,
        )


def test_loopback_url_is_refused_by_default(stack, cache_dir, monkeypatch):
    monkeypatch.delenv("COMPARE_MODELS_ALLOW_PRIVATE_URLS", raising=False)
    with pytest.raises(
        DataError, match="127.0.0.1 is a loopback address.*COMPARE_MODELS_ALLOW_PRIVATE_URLS=1"
    ):
        prepare_dataset("http://127.0.0.1:9/cifar-10-python.tar.gz", SMALL, stack, cache_dir)


def test_a_non_cifar_source_is_never_stored(stack, cache_dir, tmp_path):
    """Sources are decoded (verified to be CIFAR-10) before anything lands under datasets/."""
    other = image_folder_tarball(
        tmp_path / "not-cifar.tar.gz", classes=tuple(f"class{i}" for i in range(10))
    )
    with pytest.raises(DataError, match="are not CIFAR-10 classes"):
        prepare_dataset(str(other), SMALL, stack, cache_dir)
    stack.upload(other, "incoming/not-cifar.tar.gz", overwrite=True)
    with pytest.raises(DataError, match="are not CIFAR-10 classes"):
        prepare_dataset(stack.uri("incoming/not-cifar.tar.gz"), SMALL, stack, cache_dir)
    assert not list(stack.list_keys(layout.datasets_named("not-cifar")))
    assert not [
        k
        for k in stack.list_keys(layout.SOURCES)
        if stack.get_json(k).get("source") == stack.uri("incoming/not-cifar.tar.gz")
    ]


def test_url_source_is_cached_and_reused_offline(stack, cache_dir, tmp_path, monkeypatch):
    """A URL source (a local mirror, allowed explicitly) is stored once decoded; a later run finds it
    through the source index, with the server gone."""
    import functools
    import http.server
    import threading

    monkeypatch.setenv("COMPARE_MODELS_ALLOW_PRIVATE_URLS", "1")
    served = tmp_path / "served"
    served.mkdir()
    cifar_python_tarball(served / "cifar-10-python.tar.gz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/cifar-10-python.tar.gz"
    try:
        first = prepare_dataset(
            url,
            SMALL.model_copy(update={"seed": 11}),  # a split no other test makes
            stack,
            cache_dir,
            allow_private_urls=Settings().allow_private_urls,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not first.reused and first.source == url
    again = prepare_dataset(
        url, SMALL.model_copy(update={"seed": 3}), stack, tmp_path / "fresh-cache"
    )
    assert again.archive_sha256 == first.archive_sha256 and not again.reused
