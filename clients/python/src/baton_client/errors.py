"""gRPC errors as exceptions that carry the status code and the field the router named.

The router validates on the receiving side and names the offending field in
its message (``field 'contact_id' must be 1..=128 bytes of printable text``);
``BatonError.field`` is that name, so a bot can point at its own bug without
parsing strings. Every exception subclasses ``BatonError``; the common codes
have their own class.
"""

from __future__ import annotations

import re

import grpc

__all__ = [
    "Aborted",
    "BatonError",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]

_FIELD = re.compile(r"field '([^']+)'")

# A tonic server answers a call whose deadline (grpc-timeout) passed before the
# client noticed with CANCELLED and this message; to the caller it is a deadline.
_SERVER_TIMEOUT = "Timeout expired"


class BatonError(Exception):
    """A call failed: ``code`` is the gRPC status, ``field`` the request field the router named.

    Each subclass has its status code as ``CODE``, so a test double can raise
    ``InvalidArgument("must be ...", field="contact_id")`` like the client does.
    """

    CODE = grpc.StatusCode.UNKNOWN

    def __init__(
        self, message: str = "", *, field: str | None = None, code: grpc.StatusCode | None = None
    ) -> None:
        self.code = code or self.CODE
        self.message = message
        self.field = field
        name = self.code.name.lower()
        super().__init__(f"{name}: {message}" if message else name)


class InvalidArgument(BatonError):
    """Bad input; nothing was stored. ``field`` names what to fix."""

    CODE = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(BatonError):
    """The token may not do this (a bot token acting as another bot, a probe calling admin)."""

    CODE = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(BatonError):
    """No token, or one the router does not know."""

    CODE = grpc.StatusCode.UNAUTHENTICATED


class NotFound(BatonError):
    """No such contact or handoff."""

    CODE = grpc.StatusCode.NOT_FOUND


class Unavailable(BatonError):
    """The router cannot be reached or cannot take the call now; retried where safe."""

    CODE = grpc.StatusCode.UNAVAILABLE


class FailedPrecondition(BatonError):
    """The call does not fit the contact's state (e.g. the asking bot does not own it)."""

    CODE = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(BatonError):
    """Over the caller's rate limit."""

    CODE = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(BatonError):
    """The call's deadline (``timeout=``) passed."""

    CODE = grpc.StatusCode.DEADLINE_EXCEEDED


class OutOfRange(BatonError):
    """The request is above the router's size limit."""

    CODE = grpc.StatusCode.OUT_OF_RANGE


class Aborted(BatonError):
    """A concurrent change conflicted; nothing was applied, and an idempotent call is retried.

    The contact was busy (an operator's release), or the router lost its lock
    while committing.
    """

    CODE = grpc.StatusCode.ABORTED


class Internal(BatonError):
    """A router fault."""

    CODE = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[BatonError]] = {
    cls.CODE: cls
    for cls in (
        InvalidArgument,
        PermissionDenied,
        Unauthenticated,
        NotFound,
        Unavailable,
        FailedPrecondition,
        ResourceExhausted,
        DeadlineExceeded,
        OutOfRange,
        Aborted,
        Internal,
    )
}


def parse_field(message: str) -> str | None:
    """The field a router message names (``field 'signals[0].confidence' must be ...``)."""
    found = _FIELD.search(message)
    return found.group(1) if found else None


def from_status(code: grpc.StatusCode, message: str) -> BatonError:
    """The exception for a status code and message."""
    if code is grpc.StatusCode.CANCELLED and message == _SERVER_TIMEOUT:
        code = grpc.StatusCode.DEADLINE_EXCEEDED
    return _BY_CODE.get(code, BatonError)(message, field=parse_field(message), code=code)


def from_rpc_error(err: grpc.RpcError) -> BatonError:
    """The exception for a failed sync or asyncio call."""
    return from_status(err.code(), err.details() or "")
