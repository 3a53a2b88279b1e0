"""ResNet50 backbone weights: ImageNet (cached in S3), none, or a user's file.

The parent flow resolves the weights *before* any training starts and stores them in S3,
so training workers (possibly offline, possibly on other machines) read one cached copy.
When ImageNet weights cannot be had, the run fails here with instructions; it never
silently trains from scratch instead.

The ImageNet file comes from the caller's `Settings.imagenet_weights_url`
(COMPARE_MODELS_IMAGENET_WEIGHTS_URL, a mirror may be set) and must have the MD5 in
`Settings.imagenet_weights_md5` (COMPARE_MODELS_IMAGENET_WEIGHTS_MD5; default: Keras' published
hash of the file).
"""

from __future__ import annotations

import functools
import shutil
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from compare_models.data import files
from compare_models.data.safety import (
    UnsafeURLError,
    check_url_form,
    contained,
    plain_name,
    redact_url,
    safe_filename,
    shown,
)
from compare_models.storage import layout

if TYPE_CHECKING:
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_MD5_ENV = "COMPARE_MODELS_IMAGENET_WEIGHTS_MD5"
IMAGENET_KEY = layout.keras_weights_key(IMAGENET_FILE)
MAX_WEIGHTS_BYTES = 1 << 30  # the ImageNet notop file is 90 MiB


class WeightsError(ValueError):
    pass


def _md5(path: Path) -> str:
    return files.file_digests(path, "md5")["md5"]


def _check_h5(path: Path) -> None:
    import h5py

    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        raise WeightsError(
            f"{path.name} is not a readable HDF5 weights file ({exc}); pass a Keras ResNet50 *_notop.h5 file"
        ) from None


def _check_regular(path: Path, given: str) -> None:
    try:
        files.check_regular_file(path, MAX_WEIGHTS_BYTES)
    except files.NotARegularFile:
        raise WeightsError(
            f"--resnet-weights {given!r} is not a regular file; pass a Keras ResNet50 *_notop.h5 file"
        ) from None
    except files.FileTooLarge:
        raise WeightsError(
            f"--resnet-weights {given!r} is larger than {MAX_WEIGHTS_BYTES >> 20} MiB; a ResNet50 weights file "
            "is about 90 MiB"
        ) from None
    except OSError:
        raise WeightsError(
            f"--resnet-weights {given!r} is not 'imagenet', 'none', an s3:// URI or an existing file"
        ) from None


def _fetch_imagenet(dest: Path, settings: Settings) -> None:
    """Download the ImageNet file from `settings.imagenet_weights_url` (a private address only
    with `settings.allow_private_urls`) and check it has `settings.imagenet_weights_md5`."""
    url, md5 = settings.imagenet_weights_url, settings.imagenet_weights_md5.lower()
    keras_cache = Path.home() / ".keras" / "models" / IMAGENET_FILE
    if keras_cache.is_file() and _md5(keras_cache) == md5:
        shutil.copyfile(keras_cache, dest)
        return
    help_ = (
        f"Provide them: download {IMAGENET_FILE} on a machine with internet, then pass --resnet-weights <path or "
        "s3:// URI> (it is cached for later runs), or use --resnet-weights none to train ResNet50 from scratch deliberately."
    )
    try:
        check_url_form(url)
        files.download_url(
            url, dest, max_bytes=MAX_WEIGHTS_BYTES, allow_private=settings.allow_private_urls
        )
    except UnsafeURLError as exc:
        raise WeightsError(
            f"could not fetch ResNet50 ImageNet weights: {exc} (COMPARE_MODELS_IMAGENET_WEIGHTS_URL). {help_}"
        ) from None
    except files.DownloadTooLarge as exc:
        raise WeightsError(
            f"could not fetch ResNet50 ImageNet weights from {redact_url(url)}: {exc.reason}. {help_}"
        ) from None
    except files.DownloadError as exc:
        raise WeightsError(
            f"could not fetch ResNet50 ImageNet weights from {redact_url(url)} ({exc.reason}), and no cached copy is in the "
            f"store. {help_}"
        ) from None
    if (actual := _md5(dest)) != md5:
        dest.unlink(missing_ok=True)
        raise WeightsError(
            f"ImageNet weights download from {redact_url(url)} is corrupt: expected MD5 {md5}, got {actual}. Check "
            f"COMPARE_MODELS_IMAGENET_WEIGHTS_URL (and {IMAGENET_MD5_ENV} for a mirror of another file)"
        )
    _check_h5(dest)


#: `contained` for weights paths: `_inside(base, *parts, what=...)` refuses a path leaving `base`
#: with a `WeightsError`.
_inside = functools.partial(
    contained, error=WeightsError, hint="pass weights by a plain file name, s3:// URI or 'imagenet'"
)


def resolve_resnet_weights(
    spec: str, store: ArtifactStore, cache_dir: Path, settings: Settings
) -> str | None:
    """Return the S3 key of the weights file training should use (None = random init).

    For 'imagenet' not yet in the store, `settings` says where the file is downloaded from and
    what it must hash to (`imagenet_weights_url`, `imagenet_weights_md5`) and whether that URL
    may point at a private address (`allow_private_urls`)."""
    from compare_models.storage.errors import StoreError
    from compare_models.storage.store import parse_s3_uri

    spec = spec.strip()
    if spec.lower() == "none":
        return None
    if spec.lower() == "imagenet":
        if store.exists(IMAGENET_KEY):
            return IMAGENET_KEY
        local = _inside(cache_dir, "weights", IMAGENET_FILE, what="weights cache path")
        local.parent.mkdir(parents=True, exist_ok=True)
        _fetch_imagenet(local, settings)
        store.upload(local, IMAGENET_KEY, overwrite=True)
        return IMAGENET_KEY

    if spec.startswith("s3://"):
        _, key = parse_s3_uri(spec)
        local = _inside(
            cache_dir,
            "weights",
            "incoming",
            safe_filename(PurePosixPath(key).name, "weights.h5"),
            what="weights download path",
        )
        try:
            store.fetch_uri(spec, local)
        except StoreError as exc:
            raise WeightsError(f"could not read ResNet50 weights: {exc}") from None
        _check_regular(local, spec)
    else:
        local = Path(spec).expanduser()
        _check_regular(local, spec)
    _check_h5(local)
    key = layout.weights_file_key(files.sha256_file(local), safe_filename(local.name, "weights.h5"))
    if not store.exists(key):
        store.upload(local, key, overwrite=True)
    return key


def local_weights(key: str | None, store: ArtifactStore, cache_dir: Path) -> Path | None:
    """Download a resolved weights key to the local cache (once) for Keras to load.

    The key is untrusted (a flow parameter): it must be the ImageNet key or a
    ``weights/sha256/<sha256>/<file>`` key, whose content is checked against its hash."""
    if key is None:
        return None
    match = layout.WEIGHTS_FILE_KEY.fullmatch(key) if isinstance(key, str) else None
    if key != IMAGENET_KEY and (match is None or not plain_name(match.group(2))):
        raise WeightsError(
            f"refusing the weights key {shown(key)}: expected {IMAGENET_KEY} or weights/sha256/<sha256>/<file name>, as "
            "resolve_resnet_weights returns"
        )
    path = _inside(cache_dir, key, what="weights cache path")
    if not path.exists():
        store.download(key, path)
        if match and (actual := files.sha256_file(path)) != match.group(1):
            path.unlink(missing_ok=True)
            raise WeightsError(
                f"weights {store.uri(key)} are corrupt: their SHA-256 is {actual}, not the {match.group(1)} "
                "their key names. Resolve the weights again"
            )
    return path
