"""ResNet50 backbone weights: ImageNet (cached in S3), none, or a user's file.

The parent flow resolves the weights *before* any training starts and stores them in S3,
so training workers (possibly offline, possibly on other machines) read one cached copy.
When ImageNet weights cannot be had, the run fails here with instructions; it never
silently trains from scratch instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path, PurePosixPath

from compare_models import layout
from compare_models.files import DownloadError, download_url, file_digests, sha256_file
from compare_models.store import ArtifactStore, StoreError, parse_s3_uri

IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_FILE
IMAGENET_MD5 = "4d473c1dd8becc155b73f8504c6f6626"  # Keras' published hash of the file
IMAGENET_KEY = layout.keras_weights_key(IMAGENET_FILE)


class WeightsError(ValueError):
    pass


def _md5(path: Path) -> str:
    return file_digests(path, "md5")["md5"]


def _check_h5(path: Path) -> None:
    import h5py

    try:
        with h5py.File(path, "r"):
            pass
    except OSError as exc:
        raise WeightsError(f"{path.name} is not a readable HDF5 weights file ({exc}); pass a Keras ResNet50 *_notop.h5 file") from None


def _fetch_imagenet(dest: Path) -> None:
    keras_cache = Path.home() / ".keras" / "models" / IMAGENET_FILE
    if keras_cache.exists() and _md5(keras_cache) == IMAGENET_MD5:
        shutil.copyfile(keras_cache, dest)
        return
    try:
        download_url(IMAGENET_URL, dest)
    except DownloadError as exc:
        raise WeightsError(
            f"could not fetch ResNet50 ImageNet weights from {IMAGENET_URL} ({exc.reason}), and no "
            f"cached copy is in the store. Provide them: download {IMAGENET_FILE} on a machine with internet, then "
            "pass --resnet-weights <path or s3:// URI> (it is cached for later runs), or use --resnet-weights none "
            "to train ResNet50 from scratch deliberately."
        ) from None
    if (actual := _md5(dest)) != IMAGENET_MD5:
        dest.unlink(missing_ok=True)
        raise WeightsError(f"ImageNet weights download is corrupt: expected MD5 {IMAGENET_MD5}, got {actual}")


def resolve_resnet_weights(spec: str, store: ArtifactStore, cache_dir: Path) -> str | None:
    """Return the S3 key of the weights file training should use (None = random init)."""
    spec = spec.strip()
    if spec.lower() == "none":
        return None
    if spec.lower() == "imagenet":
        if store.exists(IMAGENET_KEY):
            return IMAGENET_KEY
        local = cache_dir / "weights" / IMAGENET_FILE
        local.parent.mkdir(parents=True, exist_ok=True)
        _fetch_imagenet(local)
        store.upload(local, IMAGENET_KEY, overwrite=True)
        return IMAGENET_KEY

    if spec.startswith("s3://"):
        _, key = parse_s3_uri(spec)
        local = cache_dir / "weights" / "incoming" / PurePosixPath(key).name
        try:
            store.fetch_uri(spec, local)
        except StoreError as exc:
            raise WeightsError(f"could not read ResNet50 weights: {exc}") from None
    else:
        local = Path(spec).expanduser()
        if not local.is_file():
            raise WeightsError(f"--resnet-weights {spec!r} is not 'imagenet', 'none', an s3:// URI or an existing file")
    _check_h5(local)
    key = layout.weights_file_key(sha256_file(local), local.name)
    if not store.exists(key):
        store.upload(local, key, overwrite=True)
    return key


def local_weights(key: str | None, store: ArtifactStore, cache_dir: Path) -> Path | None:
    """Download a resolved weights key to the local cache (once) for Keras to load."""
    if key is None:
        return None
    path = cache_dir / key
    if not path.exists():
        store.download(key, path)
    return path
