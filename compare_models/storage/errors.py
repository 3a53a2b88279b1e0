"""The object store's errors, and which failures are worth waiting out: a transient S3 answer
or an unreachable endpoint (`transient`), and a full local disk worded for the user
(`disk_full_error`). Used by `compare_models.storage.store` and by the training's checkpoint
upload."""

from __future__ import annotations

import shutil
from pathlib import Path

from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as EndpointUnreachable


class StoreError(RuntimeError):
    """The object store is unreachable, refuses our credentials, or lacks the bucket."""


class ObjectExists(StoreError):
    """A write-once object already exists."""


class ObjectTooLarge(StoreError):
    """An object read back from the bucket is larger than what compare-models writes there."""


class PreconditionFailed(StoreError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class StoreUnavailable(StoreError):
    """The endpoint stayed unreachable (or overloaded) for the whole outage window."""


class LocalDiskFull(StoreError):
    """A download found no room on the local disk."""


#: Server answers that mean "busy or restarting, try again" (S3's own retryable codes).
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}
)


def transient(exc: BaseException) -> bool:
    """Whether `exc` says the store is unreachable or overloaded for now (worth waiting out),
    not that the request itself is wrong (credentials, a missing key, a lost condition)."""
    if isinstance(exc, EndpointUnreachable | HTTPClientError):  # refused, reset, timed out
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return status in TRANSIENT_STATUS or exc.response.get("Error", {}).get("Code") in (
            TRANSIENT_CODES
        )
    if isinstance(exc, S3UploadFailedError | S3TransferFailedError):  # the transfer manager's
        cause = exc.__cause__ or exc.__context__
        return cause is None or transient(cause)
    return False


def disk_full_error(
    path: Path, needed: int | None, elsewhere: str = "point COMPARE_MODELS_HOME at a larger disk"
) -> LocalDiskFull:
    """The error for a local write that found no room: the folder, the room it needs, the room
    left, and how to get more (`elsewhere`: the setting that moves the folder)."""
    folder = path.parent
    free = shutil.disk_usage(folder).free if folder.exists() else 0
    return LocalDiskFull(
        f"no space left on the device of {folder}: writing {path.name} needs "
        f"{f'about {_size(needed)}' if needed else 'more room'}, {_size(free)} are free there. Free "
        f"some space (or {elsewhere}) and run again; nothing incomplete was published"
    )


def _size(n: int) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n:,} bytes"
