"""The S3 artifact store: one small class over boto3.

Everything a user needs (datasets, models, metrics, reports, manifests) goes through
here. Design rules:

* Check the endpoint, the credentials and the bucket at start (`check`), so a typo is
  reported in a second, not after twenty minutes of training.
* Uploads use boto3's transfer manager (`upload_file` / `upload_fileobj`), which does
  multipart uploads and retries.
* Run objects are write-once: `put_*(..., overwrite=False)` refuses to replace an
  object, so a failed or repeated run can never clobber another run's results.
* An outage is waited out: with an outage window (`ArtifactStore.outage_seconds`, a run's
  `execution.store_outage_minutes`) every request that meets an unreachable or overloaded
  endpoint is tried again with exponential backoff and jitter until the window has passed
  (`tenacity`, around botocore's own `standard` retries, which give up after a few seconds),
  then `StoreUnavailable` says what was unreachable and for how long. Without a window
  (commands a person waits for, the preflight check) a dead endpoint fails at once.
* Conditional writes stay exactly-once when retried: a retry that meets its own earlier,
  successful attempt (the response was lost) recognises it by reading the object back.
* Nothing here logs credentials; errors name the endpoint and bucket only.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
import tenacity
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
)

from compare_models.config import Settings
from compare_models.storage.errors import (
    ObjectExists,
    ObjectTooLarge,
    PreconditionFailed,
    StoreError,
    StoreUnavailable,
    disk_full_error,
    transient,
)

TRANSFER = TransferConfig(
    multipart_threshold=64 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=4
)


log = logging.getLogger(__name__)
T = TypeVar("T")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or not key:
        raise ValueError(f"s3 URI {uri!r} needs a bucket and a key: s3://<bucket>/<key>")
    return bucket, key


def make_client(settings: Settings):
    """A boto3 S3 client from settings, with short timeouts so outages fail fast."""
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.aws_access_key_id.get_secret_value()
        if settings.aws_access_key_id
        else None,
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value()
        if settings.aws_secret_access_key
        else None,
        region_name=settings.aws_region,
        config=Config(
            connect_timeout=5,
            read_timeout=120,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            signature_version="s3v4",
        ),
    )


def make_presign_client(settings: Settings):
    """A client that only signs links, for the endpoint a person's browser reaches
    (`Settings.public_s3_url`, e.g. http://localhost:9000 when the workers use
    http://minio:9000); None when that is the workers' endpoint. Same credentials, region,
    path-style addressing and SigV4: a presigned URL is signed for its host, so it has to
    be signed with the public one. Presigning is local computation: no request is sent."""
    public = settings.public_s3_url
    if not public or public.rstrip("/") == (settings.s3_endpoint_url or "").rstrip("/"):
        return None
    return make_client(settings.model_copy(update={"s3_endpoint_url": public}))


@dataclass
class ArtifactStore:
    """A bucket on an S3-compatible endpoint."""

    client: Any
    bucket: str
    endpoint: str = "AWS S3"
    #: Signs presigned links for a browser-reachable endpoint (None: `client` signs them).
    presign_client: Any = None
    #: How long a request is retried through an outage (0: botocore's few retries only).
    outage_seconds: float = 0.0
    #: The longest wait between two tries of a request in an outage.
    max_backoff_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings, *, outage_minutes: float = 0) -> ArtifactStore:
        return cls(
            make_client(settings),
            settings.bucket,
            settings.s3_endpoint_url or "AWS S3",
            presign_client=make_presign_client(settings),
            outage_seconds=60 * outage_minutes,
        )

    def waiting_out(self, outage_minutes: float) -> ArtifactStore:
        """This store (the same client), retrying every request through an outage of up to
        `outage_minutes`."""
        return dataclasses.replace(self, outage_seconds=60 * outage_minutes)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # ── waiting out an outage ────────────────────────────────────────────────

    def _call(self, what: str, request: Callable[[], T]) -> T:
        """`request()`, tried again with exponential backoff and jitter while it fails for an
        unreachable or overloaded endpoint, until `outage_seconds` have passed since the first
        try; then `StoreUnavailable` names the endpoint, the bucket, the request and the wait."""
        if self.outage_seconds <= 0:
            return request()
        started = time.monotonic()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(transient),
            stop=tenacity.stop_after_delay(self.outage_seconds),
            wait=tenacity.wait_exponential_jitter(initial=1, max=self.max_backoff_seconds),
            before_sleep=lambda state: log.warning(
                "S3 endpoint %s (bucket %s) unavailable for %s (%s); trying again in %.0f s, "
                "for up to %.0f s in all",
                self.endpoint,
                self.bucket,
                what,
                type(state.outcome.exception()).__name__,
                state.upcoming_sleep,
                self.outage_seconds,
            ),
            reraise=True,
        )
        try:
            return retrying(request)
        except Exception as exc:
            if not transient(exc):
                raise
            raise StoreUnavailable(
                f"the S3 endpoint {self.endpoint} (bucket {self.bucket!r}) was unreachable for "
                f"{time.monotonic() - started:.0f} s, the run's outage window "
                f"(execution.store_outage_minutes = {self.outage_seconds / 60:g}), while {what}: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    # ── health ──────────────────────────────────────────────────────────────

    def check(self) -> None:
        """Fail now, with the fix, if the endpoint, credentials or bucket are wrong."""
        try:
            self._call("checking the bucket", lambda: self.client.head_bucket(Bucket=self.bucket))
        except EndpointConnectionError as exc:
            raise StoreError(
                f"cannot reach the S3 endpoint {self.endpoint}: {exc}. Start the local services with "
                "`compare-models up`, or set AWS_ENDPOINT_URL_S3 to a reachable endpoint."
            ) from None
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            if status in (401, 403) or code in (
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "AccessDenied",
                "403",
            ):
                raise StoreError(
                    f"the S3 endpoint {self.endpoint} refused the credentials (HTTP {status}, {code}). "
                    "Check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or .env)."
                ) from None
            if status == 404 or code in ("NoSuchBucket", "404", "NotFound"):
                raise StoreError(
                    f"the bucket {self.bucket!r} does not exist on {self.endpoint}. Create it "
                    "(`compare-models up` creates it locally; `aws s3 mb s3://{self.bucket}` elsewhere) "
                    "or set COMPARE_MODELS_BUCKET."
                ) from None
            raise StoreError(
                f"S3 check of bucket {self.bucket!r} on {self.endpoint} failed: {code} (HTTP {status})"
            ) from None
        except BotoCoreError as exc:
            raise StoreError(
                f"S3 check of bucket {self.bucket!r} on {self.endpoint} failed: {exc}"
            ) from None

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    # ── reads ───────────────────────────────────────────────────────────────

    def exists(self, key: str) -> bool:
        def head() -> bool:
            try:
                self.client.head_object(Bucket=self.bucket, Key=key)
                return True
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    return False
                raise

        return self._call(f"looking up {key}", head)

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with `max_bytes`, an object larger than that is refused
        (`ObjectTooLarge`) before its body is read."""
        return self._call(
            f"reading {key}",
            lambda: self._read(self.client.get_object(Bucket=self.bucket, Key=key), key, max_bytes),
        )

    def get_bytes_if_exists(self, key: str, *, max_bytes: int | None = None) -> bytes | None:
        """Like `get_bytes`, or None where there is no such object (one request either way)."""
        found = self._call(f"reading {key}", lambda: self._get_versioned(key, max_bytes))
        return found[0] if found else None

    def _get_versioned(self, key: str, max_bytes: int | None = None) -> tuple[bytes, str] | None:
        """(bytes, ETag) of the object, or None where there is none (one request)."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return self._read(response, key, max_bytes), response["ETag"]

    def _read(self, response: dict, key: str, max_bytes: int | None) -> bytes:
        size = int(response.get("ContentLength") or 0)
        if max_bytes is not None and size > max_bytes:
            response["Body"].close()
            raise ObjectTooLarge(
                f"{self.uri(key)} holds {size:,} bytes, more than the {max_bytes:,} allowed for it: "
                "it was not written by compare-models, or was changed since; remove or restore it"
            )
        return response["Body"].read()

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def download(self, key: str, path: Path) -> Path:
        return self._download(self.bucket, key, path)

    def _download(self, bucket: str, key: str, path: Path) -> Path:
        """Downloads through a `.part` file that a failure removes; a full local disk is
        `LocalDiskFull`, naming the folder and the object's size."""
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        try:
            self._call(
                f"downloading s3://{bucket}/{key}",
                lambda: self.client.download_file(bucket, key, str(part), Config=TRANSFER),
            )
        except OSError as exc:
            part.unlink(missing_ok=True)
            if exc.errno != errno.ENOSPC:
                raise
            raise disk_full_error(path, self._size(bucket, key)) from None
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(path)
        return path

    def _size(self, bucket: str, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except (BotoCoreError, ClientError):
            return None

    def fetch_uri(self, uri: str, path: Path) -> Path:
        """Download an ``s3://bucket/key`` URI (any bucket these credentials can read) to
        `path`, through a `.part` file that a failure removes."""
        bucket, key = parse_s3_uri(uri)
        try:
            return self._download(bucket, key, path)
        except (BotoCoreError, ClientError) as exc:
            raise StoreError(
                f"could not read {uri}: {exc}. Check the URI and that the credentials can read it."
            ) from None

    def list_objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every object under `prefix` (listed whole, then yielded)."""
        yield from self._call(
            f"listing {prefix}",
            lambda: [
                (obj["Key"], obj["Size"])
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                for obj in page.get("Contents", [])
            ],
        )

    def list_entries(self, prefix: str) -> Iterator[tuple[str, int, str]]:
        """(key, size in bytes, ETag) of every object under `prefix` (listed whole, then
        yielded): enough to tell, without reading them, which objects are unchanged since an
        earlier listing."""
        yield from self._call(
            f"listing {prefix}",
            lambda: [
                (obj["Key"], obj["Size"], str(obj.get("ETag", "")).strip('"'))
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix
                )
                for obj in page.get("Contents", [])
            ],
        )

    def in_bucket(self, bucket: str) -> ArtifactStore:
        """The same endpoint, credentials and outage window, another bucket (a team's data)."""
        return dataclasses.replace(self, bucket=bucket, presign_client=None)

    def list_keys(self, prefix: str) -> Iterator[str]:
        for key, _ in self.list_objects(prefix):
            yield key

    def list_prefixes(self, prefix: str) -> list[str]:
        """Immediate 'sub-folders' of prefix (which should end with '/')."""
        return self._call(
            f"listing {prefix}",
            lambda: [
                p["Prefix"]
                for page in self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=self.bucket, Prefix=prefix, Delimiter="/"
                )
                for p in page.get("CommonPrefixes", [])
            ],
        )

    def presign(self, key: str, seconds: int) -> str:
        """A GET link valid for `seconds`, for the public endpoint when one is set
        (COMPARE_MODELS_PUBLIC_S3_URL), else for the endpoint the workers use."""
        client = self.presign_client or self.client
        return client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=seconds
        )

    # ── writes ──────────────────────────────────────────────────────────────

    def _guard(self, key: str, overwrite: bool) -> None:
        if not overwrite and self.exists(key):
            raise ObjectExists(
                f"{self.uri(key)} already exists and is write-once; not overwriting it"
            )

    def upload(
        self, path: Path, key: str, *, overwrite: bool = False, content_type: str | None = None
    ) -> str:
        self._guard(key, overwrite)
        extra = {"ContentType": content_type} if content_type else None
        self._call(
            f"uploading {key}",
            lambda: self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra, Config=TRANSFER
            ),
        )
        return self.uri(key)

    def copy(self, source_key: str, key: str) -> str:
        """A server-side copy of `source_key` to `key` in this bucket (write-once, as `upload`)."""
        self._guard(key, overwrite=False)
        self._call(
            f"copying {source_key} to {key}",
            lambda: self.client.copy(
                {"Bucket": self.bucket, "Key": source_key}, self.bucket, key, Config=TRANSFER
            ),
        )
        return self.uri(key)

    def put_bytes(
        self, data: bytes, key: str, *, overwrite: bool = False, content_type: str | None = None
    ) -> str:
        self._guard(key, overwrite)
        extra = {"ContentType": content_type} if content_type else None
        self._call(
            f"writing {key}",
            lambda: self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, key, ExtraArgs=extra, Config=TRANSFER
            ),
        )
        return self.uri(key)

    def put_json(self, obj: Any, key: str, *, overwrite: bool = False) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(data, key, overwrite=overwrite, content_type="application/json")

    # ── conditional writes (claims and pointers: champions) ──────────────────

    def get_json_versioned(self, key: str) -> tuple[Any, str] | tuple[None, None]:
        """(object, ETag) of a JSON object, or (None, None) if there is none; the ETag goes to
        `put_json_if` so that the write fails if anyone changed the object meanwhile."""
        found = self._call(f"reading {key}", lambda: self._get_versioned(key))
        return (json.loads(found[0]), found[1]) if found else (None, None)

    def put_json_if(self, obj: Any, key: str, *, etag: str | None) -> str:
        """Writes `obj` only if `key` still has `etag` (If-Match), or, with `etag=None`, only if
        `key` does not exist yet (If-None-Match: *). Returns the new ETag; raises
        `PreconditionFailed` when another writer got there first. SeaweedFS, MinIO and AWS S3
        evaluate these conditions on the server, so two writers can never both succeed.

        Retried through an outage, a write whose first try reached the store but whose answer
        was lost meets its own write and fails its condition: it is recognised by reading the
        object back, and counts as written when the object holds exactly these bytes (what
        compare-models writes conditionally carries its writer and a timestamp, so no other
        writer writes the same bytes)."""
        data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}

        def put() -> str:
            try:
                return self.client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=data,
                    ContentType="application/json",
                    **condition,
                )["ETag"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in (
                    "PreconditionFailed",
                    "ConditionalRequestConflict",
                    "412",
                ):
                    raise
            found = self._get_versioned(key)
            if found is not None and found[0] == data:
                log.info("%s: an earlier try of this write got through", self.uri(key))
                return found[1]
            raise PreconditionFailed(f"{self.uri(key)} was changed by another writer")

        return self._call(f"writing {key} conditionally", put)

    # ── deletes (checkpoints and scratch buckets only; run results are write-once) ──

    def delete(self, key: str) -> None:
        self._call(
            f"deleting {key}", lambda: self.client.delete_object(Bucket=self.bucket, Key=key)
        )

    def delete_prefix(self, prefix: str, *, keep: Iterable[str] = ()) -> int:
        """Deletes every key under `prefix` except those in `keep`; returns how many went.

        Batched through DeleteObjects (up to 1,000 keys a request). An empty prefix is
        refused: emptying a whole bucket is `delete_bucket`'s job.
        """
        if not prefix:
            raise ValueError(
                "delete_prefix needs a non-empty prefix; use delete_bucket to empty a bucket"
            )
        return self._delete_keys(prefix, keep)

    def _delete_keys(self, prefix: str, keep: Iterable[str] = ()) -> int:
        kept = set(keep)
        doomed = [k for k in self.list_keys(prefix) if k not in kept]
        for start in range(0, len(doomed), 1000):
            batch = [{"Key": k} for k in doomed[start : start + 1000]]
            response = self._call(
                f"deleting under {prefix}",
                lambda batch=batch: self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                ),
            )
            if response.get("Errors"):
                first = response["Errors"][0]
                raise StoreError(
                    f"could not delete {first.get('Key')} in {self.uri(prefix)}: {first.get('Code')}"
                )
        return len(doomed)

    def delete_bucket(self) -> None:
        """Empties and removes the bucket (test and benchmark scratch buckets)."""
        self._delete_keys("")
        self.client.delete_bucket(Bucket=self.bucket)
