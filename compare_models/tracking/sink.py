"""`Sink`: the MLflow client, bounded in time, that notes failures instead of raising them.

MLflow never fails a night: every call goes through `Sink.call`, which returns None on a failure
and remembers what was not logged and why (`problems`). A server that is down (a refused
connection, a timeout, a 5xx) is not asked again by this process: each later call is skipped at
once, so a night without MLflow costs one timeout, not one per epoch. A refusal of one request
(a 4xx) fails only that request.

MLflow's client retries a request 7 times with a growing backoff by default (minutes on a down
server); here each request gets `Settings.mlflow_timeout_s` and one retry.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from compare_models.config import Settings
from compare_models.data.safety import reason_of, redacted

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")


def _server_down(exc: BaseException) -> bool:
    """A failure that says the server is unreachable or broken (not that it refused one request)."""
    status = getattr(exc, "get_http_status_code", None)
    if status is None:
        return True  # not an MlflowException: a connection or protocol error
    try:
        return int(status()) >= 500
    except (TypeError, ValueError):
        return True


class Sink:
    """The MLflow client of one process, and what it could not log."""

    def __init__(self, uri: str, *, timeout_s: float = 10.0, problem: str | None = None):
        self.uri = redacted(uri)
        self.problems: list[str] = []
        self._down: str | None = problem
        self._client: MlflowClient | None = None
        if problem is None:
            # MLflow reads these when it sends a request: one short try and one retry
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(timeout_s)))
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
            os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES_TIMEOUT"] = "0"
            # nothing of MLflow's own usage telemetry leaves a worker
            os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
            try:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            except ImportError:
                self._down = (
                    "the MLflow client is not installed (pip install 'compare-models[mlflow]')"
                )

    @classmethod
    def open(cls, settings: Settings | None = None) -> Sink | None:
        """The sink when `MLFLOW_TRACKING_URI` is set, else None (MLflow is not even imported)."""
        settings = settings or Settings()
        uri = settings.mlflow_tracking_uri
        if not uri:
            return None
        if not re.fullmatch(r"https?://[^\s]+", uri):
            return cls(
                uri,
                problem=f"MLFLOW_TRACKING_URI {redacted(uri)[:100]!r} is not an http(s):// URL of "
                "an MLflow tracking server: set it to one (e.g. http://127.0.0.1:5000), or unset it",
            )
        return cls(uri, timeout_s=settings.mlflow_timeout_s)

    @property
    def client(self) -> MlflowClient:
        assert self._client is not None
        return self._client

    @property
    def down(self) -> str | None:
        """Why MLflow is not asked any more (None: it is)."""
        return self._down

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        """`fn(*args, **kwargs)`, or None when it failed or MLflow is down: `what` (what was not
        logged) is then noted with the reason."""
        return self._run(what, fn, args, kwargs)[1]

    def done(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Whether `fn(*args, **kwargs)` succeeded (for calls that return nothing), as `call`."""
        return self._run(what, fn, args, kwargs)[0]

    def _run(
        self, what: str, fn: Callable[..., T], args: tuple, kwargs: dict
    ) -> tuple[bool, T | None]:
        if self._down is not None:
            self.note(what, self._down)
            return False, None
        try:
            return True, fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - MLflow never fails a night
            reason = reason_of(exc)
            if _server_down(exc):
                self._down = f"MLflow at {self.uri} did not answer: {reason}"
                reason = self._down
            self.note(what, reason)
            return False, None

    def note(self, what: str, reason: str) -> None:
        """Notes that `what` was not logged, and why (once per line, with a warning)."""
        line = f"{what}: {reason}"
        if line not in self.problems:
            log.warning("MLflow: not logged: %s", line)
            self.problems.append(line)
