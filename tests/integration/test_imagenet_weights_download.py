"""The ImageNet-weights path end to end, without the internet.

A local HTTP server on 127.0.0.1 serves a generated ``*_notop.h5`` (random ResNet50 weights in the
legacy Keras HDF5 layout Keras' published file has, which `keras.applications.ResNet50(weights=<path
ending .h5>)` loads). With COMPARE_MODELS_IMAGENET_WEIGHTS_URL pointing at it, loopback allowed
(COMPARE_MODELS_ALLOW_PRIVATE_URLS=1) and the expected hash set (COMPARE_MODELS_IMAGENET_WEIGHTS_MD5:
the published one cannot match a generated file), the resolver downloads it, checks its MD5,
caches it in S3; a second resolve uses the cache with the server stopped, and a training worker's
copy loads into the model.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from compare_models.config import Settings
from compare_models.data.files import file_digests
from compare_models.models.weights import (
    IMAGENET_FILE,
    IMAGENET_KEY,
    WeightsError,
    local_weights,
    resolve_resnet_weights,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def notop_h5(tmp_path_factory) -> Path:
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    folder = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(7)
    model = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = folder / IMAGENET_FILE
    with h5py.File(
        path, "w"
    ) as f:  # the layout of Keras' published *_notop.h5 (not Keras 3's .weights.h5)
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


class _Server:
    def __init__(self, folder: Path):
        server = self
        self.requests: list[str] = []

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{IMAGENET_FILE}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(notop_h5):
    served = _Server(notop_h5.parent)
    yield served
    served.stop()


@pytest.fixture
def mirror(server, notop_h5, stack, monkeypatch, tmp_path):
    monkeypatch.setenv("COMPARE_MODELS_IMAGENET_WEIGHTS_URL", server.url)
    monkeypatch.setenv("COMPARE_MODELS_ALLOW_PRIVATE_URLS", "1")
    monkeypatch.setenv("COMPARE_MODELS_IMAGENET_WEIGHTS_MD5", file_digests(notop_h5, "md5")["md5"])
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.keras copy to fall back on
    if stack.exists(IMAGENET_KEY):
        stack.delete(IMAGENET_KEY)  # scratch bucket: start uncached
    yield server
    if stack.exists(IMAGENET_KEY):
        stack.delete(IMAGENET_KEY)


def test_downloaded_checked_cached_and_reused_offline(mirror, notop_h5, stack, tmp_path):
    assert resolve_resnet_weights("imagenet", stack, tmp_path / "cache", Settings()) == IMAGENET_KEY
    assert mirror.requests == [f"/{IMAGENET_FILE}"]
    assert stack.exists(IMAGENET_KEY)

    mirror.stop()  # the cache must be enough from now on
    assert (
        resolve_resnet_weights("imagenet", stack, tmp_path / "other-cache", Settings())
        == IMAGENET_KEY
    )
    assert mirror.requests == [f"/{IMAGENET_FILE}"]

    local = local_weights(IMAGENET_KEY, stack, tmp_path / "worker-cache")
    assert file_digests(local, "md5") == file_digests(notop_h5, "md5")

    import h5py

    from compare_models.models.networks import build_resnet50

    model = build_resnet50(local)
    backbone = model.get_layer("resnet50")
    with h5py.File(notop_h5, "r") as f:
        expected = np.asarray(f["conv1_conv"]["conv1_conv"]["kernel"])
    np.testing.assert_array_equal(backbone.get_layer("conv1_conv").kernel.numpy(), expected)


def test_a_wrong_hash_stores_nothing(mirror, stack, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPARE_MODELS_IMAGENET_WEIGHTS_MD5", "0" * 32)
    with pytest.raises(WeightsError, match=f"is corrupt: expected MD5 {'0' * 32}, got"):
        resolve_resnet_weights("imagenet", stack, tmp_path / "cache", Settings())
    assert not stack.exists(IMAGENET_KEY)
    assert not list((tmp_path / "cache" / "weights").glob("*.h5*"))


def test_a_local_mirror_needs_the_private_url_setting(mirror, stack, tmp_path, monkeypatch):
    monkeypatch.delenv("COMPARE_MODELS_ALLOW_PRIVATE_URLS")
    with pytest.raises(
        WeightsError, match="127.0.0.1 is a loopback address.*COMPARE_MODELS_ALLOW_PRIVATE_URLS=1"
    ):
        resolve_resnet_weights("imagenet", stack, tmp_path / "cache", Settings())
    assert mirror.requests == [] and not stack.exists(IMAGENET_KEY)


def test_a_malformed_md5_setting_is_named(mirror, stack, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPARE_MODELS_IMAGENET_WEIGHTS_MD5", "not-an-md5")
    from pydantic import ValidationError

    # A typed setting: refused when read, naming the variable and the pattern it must match.
    with pytest.raises(
        ValidationError, match=r"COMPARE_MODELS_IMAGENET_WEIGHTS_MD5\n.*should match pattern"
    ):
        resolve_resnet_weights("imagenet", stack, tmp_path / "cache", Settings())
