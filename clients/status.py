"""Turning `tritonclient` / transport exceptions into the project's one client error, and classifying them.

gRPC reports statuses as `StatusCode.UNAVAILABLE`; HTTP as the response code (`503`). Triton answers a full
queue or a queue timeout with UNAVAILABLE; a refused or reset connection never reaches Triton at all. Both
are worth retrying; INVALID_ARGUMENT / NOT_FOUND / 400 never are.
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal

from attnserve.errors import InferenceError

ErrorKind = Literal["rejected", "connection", "timeout", "failed"]
"""rejected: the server answered UNAVAILABLE (queue full / queue timeout); connection: no answer from a server;
timeout: the client's deadline passed; failed: any other error (bad request, model error)."""

_UNAVAILABLE_STATUSES = frozenset({"StatusCode.UNAVAILABLE", "503", "UNAVAILABLE"})
_TIMEOUT_STATUSES = frozenset({"StatusCode.DEADLINE_EXCEEDED", "504", "408"})
_CONNECTION_HINTS = (
    "failed to connect",
    "connection refused",
    "connect call failed",
    "socket closed",
    "connection reset",
    "cannot connect",
    "connection closed",
)

_NEVER_HEALS = (
    "certificate_verify_failed",
    "certificate verify failed",
    "handshake failed",
    "wrong_version_number",
    "wrong version number",
    "expected http/",
)
"""A connection that reached something speaking another protocol, or a certificate the client refuses: the same
request meets the same answer, so these are connection errors that are never retried (`attnserve.clients.diagnose`
names the cause)."""


_STATUS_PREFIX = re.compile(r"^(\[(StatusCode\.)?[A-Z_0-9]+\]\s*)+")
"""tritonclient's `str()` form starts with `[StatusCode.NOT_FOUND] ` (gRPC) or `[400] ` (HTTP)."""


class ServerUnavailableError(InferenceError):
    """The server could not be reached or refused the request for now (UNAVAILABLE); retrying may help."""

    def __init__(
        self, message: str, status: str | None = None, model: str | None = None, kind: ErrorKind = "rejected"
    ) -> None:
        self.kind = kind
        self.attempts = 1
        """How many attempts the client made before raising this."""
        super().__init__(message, status=status, model=model)


def classify_exception(exc: BaseException) -> ErrorKind:
    """Sort an exception raised by a request into one of the `ErrorKind`s."""
    if isinstance(exc, ServerUnavailableError):
        return exc.kind
    status: str
    if isinstance(exc, InferenceError):
        status = exc.status or ""
    else:
        status = _status_of(exc) or ""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) or status in _TIMEOUT_STATUSES:
        return "timeout"
    message = str(exc).lower()
    if isinstance(exc, (ConnectionError, OSError)) and not isinstance(exc, InferenceError):
        return "connection"
    if any(h in message for h in _NEVER_HEALS):
        return "connection"
    if "stub process" in message and "is not healthy" in message:
        # A python-backend stub died; Triton 2.51 does not restart it, `attnserve.serving.watchdog` reloads
        # the model, after which a retry succeeds (INTERNAL otherwise means a model error: not retried).
        return "rejected"
    if "has no available versions" in message:
        # The model is known but no version is loaded right now (a server shutting down or a model reloading):
        # transient, unlike an unknown name. Triton says NOT_FOUND (gRPC) / 400 (HTTP) for it.
        return "rejected"
    if "is restricted, expecting header" in message:
        # Triton refuses a restricted API without the admin token as UNAVAILABLE on gRPC: not worth a retry.
        return "failed"
    if status in _UNAVAILABLE_STATUSES:
        # gRPC reports a dead socket as UNAVAILABLE too; the message tells the two apart.
        return "connection" if any(h in message for h in _CONNECTION_HINTS) else "rejected"
    if any(h in message for h in _CONNECTION_HINTS):
        return "connection"
    return "failed"


def is_retryable(exc: BaseException) -> bool:
    """Only UNAVAILABLE answers and connection failures are retried (never a bad request, never a protocol or
    certificate mismatch)."""
    if any(h in str(exc).lower() for h in _NEVER_HEALS):
        return False
    return classify_exception(exc) in ("rejected", "connection")


def to_inference_error(exc: BaseException, model: str | None, url: str) -> InferenceError:
    """Wrap any request exception in `InferenceError` (or `ServerUnavailableError`), keeping Triton's status."""
    if isinstance(exc, InferenceError):
        return exc
    status = _status_of(exc)
    text = transport_message(exc)
    kind = classify_exception(exc)
    where = f"model {model!r} at {url}" if model else f"server at {url}"
    if kind == "connection":
        return ServerUnavailableError(
            f"cannot reach the {where}: {text}. Is the server running? Start it with `attnserve serve`, "
            "or point --url / $ATTNSERVE_URL at a running one",
            status=status,
            model=model,
            kind="connection",
        )
    if kind == "rejected":
        return ServerUnavailableError(f"{where} is unavailable: {text}", status=status, model=model, kind="rejected")
    if kind == "timeout":
        return InferenceError(f"request to {where} timed out: {text}", status=status or "timeout", model=model)
    return InferenceError(f"request to {where} failed: {text}", status=status, model=model)


def _status_of(exc: BaseException) -> str | None:
    status = getattr(exc, "status", None)
    if callable(status):  # tritonclient's InferenceServerException.status()
        try:
            status = status()
        except Exception:  # noqa: BLE001 - a broken exception must not hide the original one
            status = None
    return str(status) if status else None


def transport_message(exc: BaseException) -> str:
    """A transport exception's message without tritonclient's `[status]` prefix."""
    message = getattr(exc, "message", None)
    if callable(message):
        try:
            message = message()
        except Exception:  # noqa: BLE001
            message = None
    text = str(message or exc or type(exc).__name__)
    return _STATUS_PREFIX.sub("", text)  # the status travels separately: never twice in one message
