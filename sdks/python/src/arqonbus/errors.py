"""Exceptions raised by the ArqonBus client.

Two families share the root :class:`ArqonBusError`:

* :class:`ArqonError` and its subclasses: the server answered with an
  ``error`` envelope (SPEC §6). There is one subclass per ``error_code``;
  :data:`ERROR_CLASSES` maps the code string to the class, and
  :func:`error_from_envelope` builds the right one.
* Client-side failures: the connection could not be opened or was lost, a
  call timed out, the client was closed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "ERROR_CLASSES",
    "ArqonBusError",
    "ArqonError",
    "ChannelDeleted",
    "ChannelExists",
    "ChannelFull",
    "ChannelNotEmpty",
    "ChannelNotFound",
    "ClientClosed",
    "ConnectFailed",
    "ConnectionLost",
    "DisconnectedByOperator",
    "Forbidden",
    "HandshakeRefused",
    "InternalError",
    "InvalidArgument",
    "NotSubscribed",
    "ProtocolError",
    "RateLimited",
    "ReconnectFailed",
    "Replaced",
    "RequestTimeout",
    "RoomNotFound",
    "StorageUnavailable",
    "SubscriptionLimit",
    "TargetNotFound",
    "TooManyViolations",
    "Unauthorized",
    "UnknownCommand",
    "UnsupportedVersion",
    "ValidationError",
    "error_from_envelope",
]


class ArqonBusError(Exception):
    """Base class of every exception this package raises."""


# --------------------------------------------------------------------------
# Errors the server reports (SPEC §6)
# --------------------------------------------------------------------------


class ArqonError(ArqonBusError):
    """An ``error`` envelope from the server.

    Attributes:
        message: the server's human-readable text (``error``).
        error_code: the stable code as sent, e.g. ``"CHANNEL_NOT_FOUND"``.
        code: the HTTP-like status from ``payload.code`` (404, 409, ...).
        details: ``payload.details``, one entry per offending field.
        command: the command the error answers, if any.
        request_id: the id of the frame the error answers (``None`` when the
            server could not read one).
        payload: the whole error payload, for fields this class does not name.
    """

    #: The ``error_code`` this class stands for (empty on the base class).
    ERROR_CODE: str = ""
    #: The HTTP-like status the spec assigns to :attr:`ERROR_CODE`.
    DEFAULT_STATUS: int = 500

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        code: int | None = None,
        details: Sequence[Mapping[str, Any]] = (),
        command: str | None = None,
        request_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_code = error_code or self.ERROR_CODE
        self.code = self.DEFAULT_STATUS if code is None else code
        self.details: list[dict[str, Any]] = [dict(d) for d in details]
        self.command = command
        self.request_id = request_id
        self.payload: dict[str, Any] = dict(payload or {})

    def __str__(self) -> str:
        text = f"{self.error_code} ({self.code}): {self.message}"
        if self.details:
            fields = ", ".join(
                f"{d.get('field', '?')}: {d.get('message', '')}" for d in self.details
            )
            text += f" [{fields}]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, error_code={self.error_code!r}, code={self.code})"


class ValidationError(ArqonError):
    """A frame the server could not accept (missing or invalid field)."""

    ERROR_CODE = "VALIDATION_ERROR"
    DEFAULT_STATUS = 400


class UnsupportedVersion(ArqonError):
    """The envelope's ``version`` is not ``"1.0"``."""

    ERROR_CODE = "UNSUPPORTED_VERSION"
    DEFAULT_STATUS = 400


class InvalidArgument(ArqonError):
    """A command argument is missing or invalid; :attr:`details` names it."""

    ERROR_CODE = "INVALID_ARGUMENT"
    DEFAULT_STATUS = 400


class UnknownCommand(ArqonError):
    """The server does not know the command."""

    ERROR_CODE = "UNKNOWN_COMMAND"
    DEFAULT_STATUS = 404


class Unauthorized(ArqonError):
    """Authentication required, or the token is invalid or expired."""

    ERROR_CODE = "UNAUTHORIZED"
    DEFAULT_STATUS = 401


class Forbidden(ArqonError):
    """Admin-only command, system channel, or outside the token's channels."""

    ERROR_CODE = "FORBIDDEN"
    DEFAULT_STATUS = 403


class NotSubscribed(ArqonError):
    """Publishing to a channel this client has not joined."""

    ERROR_CODE = "NOT_SUBSCRIBED"
    DEFAULT_STATUS = 403


class ChannelNotFound(ArqonError):
    """The channel does not exist."""

    ERROR_CODE = "CHANNEL_NOT_FOUND"
    DEFAULT_STATUS = 404


class RoomNotFound(ArqonError):
    """The room has no channels."""

    ERROR_CODE = "ROOM_NOT_FOUND"
    DEFAULT_STATUS = 404


class TargetNotFound(ArqonError):
    """The target of a direct message is not connected."""

    ERROR_CODE = "TARGET_NOT_FOUND"
    DEFAULT_STATUS = 404


class ChannelExists(ArqonError):
    """``create_channel`` of a channel that already exists."""

    ERROR_CODE = "CHANNEL_EXISTS"
    DEFAULT_STATUS = 409


class ChannelNotEmpty(ArqonError):
    """``delete_channel`` of a channel with members, without ``force``."""

    ERROR_CODE = "CHANNEL_NOT_EMPTY"
    DEFAULT_STATUS = 409


class ChannelFull(ArqonError):
    """The channel has reached its member limit."""

    ERROR_CODE = "CHANNEL_FULL"
    DEFAULT_STATUS = 409


class SubscriptionLimit(ArqonError):
    """This client has joined as many channels as the server allows."""

    ERROR_CODE = "SUBSCRIPTION_LIMIT"
    DEFAULT_STATUS = 409


class RateLimited(ArqonError):
    """Over the per-connection rate; see :attr:`retry_after_ms`."""

    ERROR_CODE = "RATE_LIMITED"
    DEFAULT_STATUS = 429

    @property
    def retry_after_ms(self) -> int | None:
        """How long to wait before retrying, when the server said."""
        value = self.payload.get("retry_after_ms")
        return value if isinstance(value, int) else None


class TooManyViolations(ArqonError):
    """The last protocol violation before the server closes with 1008."""

    ERROR_CODE = "TOO_MANY_VIOLATIONS"
    DEFAULT_STATUS = 429


class StorageUnavailable(ArqonError):
    """Strict storage mode and Redis is down: the message was not published."""

    ERROR_CODE = "STORAGE_UNAVAILABLE"
    DEFAULT_STATUS = 503


class InternalError(ArqonError):
    """A server bug."""

    ERROR_CODE = "INTERNAL_ERROR"
    DEFAULT_STATUS = 500


#: ``error_code`` string → exception class. Codes missing here (a newer
#: server) become a plain :class:`ArqonError`.
ERROR_CLASSES: Mapping[str, type[ArqonError]] = {
    cls.ERROR_CODE: cls
    for cls in (
        ValidationError,
        UnsupportedVersion,
        InvalidArgument,
        UnknownCommand,
        Unauthorized,
        Forbidden,
        NotSubscribed,
        ChannelNotFound,
        RoomNotFound,
        TargetNotFound,
        ChannelExists,
        ChannelNotEmpty,
        ChannelFull,
        SubscriptionLimit,
        RateLimited,
        TooManyViolations,
        StorageUnavailable,
        InternalError,
    )
}


def error_from_envelope(envelope: Mapping[str, Any]) -> ArqonError:
    """Builds the :class:`ArqonError` subclass for an ``error`` envelope."""
    error_code = envelope.get("error_code")
    if not isinstance(error_code, str) or not error_code:
        error_code = "UNKNOWN_ERROR"
    raw_payload = envelope.get("payload")
    payload: Mapping[str, Any] = raw_payload if isinstance(raw_payload, Mapping) else {}
    raw_details = payload.get("details")
    details = (
        [d for d in raw_details if isinstance(d, Mapping)] if isinstance(raw_details, list) else []
    )
    raw_code = payload.get("code")
    message = envelope.get("error")
    command = envelope.get("command")
    request_id = envelope.get("request_id")
    cls = ERROR_CLASSES.get(error_code, ArqonError)
    return cls(
        message if isinstance(message, str) else error_code,
        error_code=error_code,
        code=raw_code if isinstance(raw_code, int) else None,
        details=details,
        command=command if isinstance(command, str) else None,
        request_id=request_id if isinstance(request_id, str) else None,
        payload=payload,
    )


# --------------------------------------------------------------------------
# Client-side failures
# --------------------------------------------------------------------------


class ConnectFailed(ArqonBusError):
    """The TCP connection, the WebSocket handshake or the welcome frame failed."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot connect to {url}: {reason}")
        self.url = url
        self.reason = reason


class HandshakeRefused(ConnectFailed):
    """The server answered the upgrade with an HTTP error status.

    400 (a bad query parameter), 401 (bad token) and 403 (origin refused)
    are :attr:`permanent`: retrying with the same settings cannot succeed,
    so the client stops reconnecting. 503 (full or draining) is not.
    """

    PERMANENT_STATUSES = frozenset({400, 401, 403})

    def __init__(self, url: str, status: int, body: str) -> None:
        detail = f": {body.strip()}" if body.strip() else ""
        super().__init__(url, f"HTTP {status}{detail}")
        self.status = status
        self.body = body

    @property
    def permanent(self) -> bool:
        """Whether reconnecting with the same settings is pointless."""
        return self.status in self.PERMANENT_STATUSES


class ConnectionLost(ArqonBusError):
    """The connection dropped while a request was in flight.

    The request may or may not have been executed by the server.
    """


class Replaced(ArqonBusError):
    """The server closed with 4000: a newer connection with the same
    identity (JWT ``sub``) replaced this one. The client does not reconnect."""


class DisconnectedByOperator(ArqonBusError):
    """The server closed with 4003: an operator disconnected this client
    (SPEC §17 ``/api/disconnect``). The client does not reconnect."""


class ReconnectFailed(ArqonBusError):
    """The reconnect policy's ``max_attempts`` were used up."""

    def __init__(self, attempts: int, last_error: BaseException | None) -> None:
        super().__init__(f"gave up reconnecting after {attempts} attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class ClientClosed(ArqonBusError):
    """The client was closed (by :meth:`ArqonBus.close`) or was never opened."""


class RequestTimeout(ArqonBusError, TimeoutError):
    """No reply within the call's timeout. Also a :class:`TimeoutError`."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"no reply to {what} within {timeout:g} s")
        self.what = what
        self.timeout = timeout


class ProtocolError(ArqonBusError):
    """The server sent something this client cannot read."""


class ChannelDeleted(ArqonBusError):
    """Raised by a subscription whose channel was deleted by an admin."""

    def __init__(self, room: str, channel: str, message: str) -> None:
        super().__init__(message)
        self.room = room
        self.channel = channel
