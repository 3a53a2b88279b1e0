"""Publishing an export: a version number claimed once (a conditional write, so two writers can
never take the same one and a version only grows), the export's files uploaded under it, and
its manifest (`layout.EXPORT_MANIFEST`) written last, so that a version without one is
partial. An upload that fails removes what it wrote of its own version, which no one serves yet;
nothing already stored is overwritten."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

from compare_models.serving.records import ExportFailed, ExportResult
from compare_models.storage import layout
from compare_models.storage.errors import PreconditionFailed
from compare_models.storage.store import ArtifactStore

log = logging.getLogger(__name__)

#: How many claims a publish tries before it gives up (each lost one means another writer
#: took that version meanwhile).
MAX_CLAIMS = 20

#: The most claims read back when looking for the next version (a listing is untrusted).
MAX_LISTED = 100_000

_CLAIM = re.compile(r"claims/([1-9][0-9]{0,8})\.json")


def next_version(store: ArtifactStore, track: str, model: str) -> int:
    """One more than the highest version ever claimed for `track`'s `model` (1 for the first)."""
    highest = 0
    prefix = layout.export_claims_prefix(track, model)
    for i, key in enumerate(store.list_keys(prefix)):
        if i >= MAX_LISTED:
            raise RuntimeError(f"more than {MAX_LISTED:,} export claims under {prefix}")
        match = _CLAIM.fullmatch(key.removeprefix(layout.export_model_prefix(track, model)))
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def claim_version(store: ArtifactStore, track: str, model: str, *, run_id: str) -> int:
    """The next version of `track`'s `model`, claimed for `run_id`'s export (write-once)."""
    for _ in range(MAX_CLAIMS):
        version = next_version(store, track, model)
        claim = {
            "run_id": run_id,
            "version": version,
            "claimed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        }
        try:
            store.put_json_if(claim, layout.export_claim_key(track, model, version), etag=None)
        except PreconditionFailed:
            continue
        return version
    raise RuntimeError(
        f"the export versions of {model} on track {track!r} kept changing: {MAX_CLAIMS} claims lost"
    )


def export_uris(store: ArtifactStore, folder: Path, prefix: str) -> dict[str, str]:
    """The URI each file of `folder` (and the manifest) will have under `prefix`, by its path."""
    names = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    return {name: store.uri(prefix + name) for name in [*names, layout.EXPORT_MANIFEST]}


def upload_export(store: ArtifactStore, folder: Path, prefix: str, manifest: dict) -> None:
    """Uploads every file of `folder` under `prefix` (never over an existing key), then the
    manifest. On failure, removes what it uploaded and raises."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    written: list[str] = []
    try:
        for path in files:
            key = prefix + path.relative_to(folder).as_posix()
            store.upload(path, key)
            written.append(key)
        store.put_json(manifest, prefix + layout.EXPORT_MANIFEST)
    except BaseException:
        for key in written:
            try:
                store.delete(key)
            except Exception:  # best effort: the version has no manifest, so it is partial
                log.warning("could not remove %s of a failed export", store.uri(key))
        raise


#: The most bytes of an export manifest read back (it is small; the bucket is untrusted).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

#: A file of an export, as its manifest names it: a relative path, no `..`, no odd characters.
_FILE = re.compile(r"(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9_][A-Za-z0-9_./-]{0,255}")


def stored_export(store: ArtifactStore, prefix: str) -> ExportResult | None:
    """The complete export under `prefix` (its manifest, validated), or None when it has none."""
    key = prefix + layout.EXPORT_MANIFEST
    stored = store.get_bytes_if_exists(key, max_bytes=MAX_MANIFEST_BYTES)
    if stored is None:
        return None
    try:
        result = ExportResult.model_validate_json(stored)
    except ValueError as exc:
        raise ExportFailed(f"{store.uri(key)} is not an export manifest ({exc})") from None
    bad = [name for name in result.uris if not _FILE.fullmatch(name)]
    if bad or result.prefix != prefix:
        raise ExportFailed(
            f"{store.uri(key)} names files or a prefix that are not its own: "
            f"{(bad or [result.prefix])[0][:100]!r}"
        )
    return result


def republish(
    store: ArtifactStore, track: str, model: str, *, from_version: int, run_id: str
) -> ExportResult:
    """The files of an earlier served version, already checked when they were exported, copied
    (server-side) as `track`'s next version of `model`: a rollback serves the earlier champion
    again without exporting it anew."""
    source = layout.export_version_prefix(track, model, from_version)
    earlier = stored_export(store, source)
    if earlier is None:
        raise ExportFailed(f"{store.uri(source)} has no complete export to publish again")
    if earlier.run_id != run_id or earlier.model != model:
        raise ExportFailed(
            f"{store.uri(source)} is the export of {earlier.model} of run {earlier.run_id}, "
            f"not of {model} of run {run_id}"
        )
    version = claim_version(store, track, model, run_id=run_id)
    prefix = layout.export_version_prefix(track, model, version)
    files = [name for name in earlier.uris if name != layout.EXPORT_MANIFEST]
    result = earlier.model_copy(
        update={
            "version": version,
            "prefix": prefix,
            "uris": {name: store.uri(prefix + name) for name in earlier.uris},
            "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "republished_from": from_version,
        }
    )
    copied: list[str] = []
    try:
        for name in files:
            store.copy(source + name, prefix + name)
            copied.append(prefix + name)
        store.put_json(result.model_dump(mode="json"), prefix + layout.EXPORT_MANIFEST)
    except BaseException:
        for key in copied:
            try:
                store.delete(key)
            except Exception:
                log.warning("could not remove %s of a failed publication", store.uri(key))
        raise
    return result


def served_version(store: ArtifactStore, track: str, model: str) -> int | None:
    """The version TF Serving and Triton serve: the highest one with a manifest (None: none)."""
    prefix = layout.export_model_prefix(track, model)
    found = re.compile(
        rf"{re.escape(prefix)}([1-9][0-9]{{0,8}})/{re.escape(layout.EXPORT_MANIFEST)}"
    )
    versions = [
        int(match.group(1))
        for i, key in enumerate(store.list_keys(prefix))
        if i < MAX_LISTED and (match := found.fullmatch(key))
    ]
    return max(versions, default=None)


def triton_config(model: str, *, height: int, width: int, classes: int) -> str:
    """Triton's `config.pbtxt` for the ONNX model: uint8 NHWC images in, probabilities out,
    dynamic batches. The tensor names are those `export` gives the ONNX graph."""
    return (
        f'name: "{model}"\n'
        'platform: "onnxruntime_onnx"\n'
        "max_batch_size: 256\n"
        "input [\n"
        f'  {{ name: "image", data_type: TYPE_UINT8, dims: [ {height}, {width}, 3 ] }}\n'
        "]\n"
        "output [\n"
        f'  {{ name: "probabilities", data_type: TYPE_FP32, dims: [ {classes} ] }}\n'
        "]\n"
        "dynamic_batching { }\n"
    )
