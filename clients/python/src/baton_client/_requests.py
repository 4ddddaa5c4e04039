"""Request messages built from Python arguments, shared by the sync and asyncio clients."""

from __future__ import annotations

import os
from collections.abc import Iterable

from baton_client.context import Context
from baton_client.enums import Outcome
from baton_client.pb import admin_pb2, handoff_pb2, types_pb2
from baton_client.results import Signal

__all__ = ["handoff_request", "new_request_id", "outcome_request", "release_request"]


def new_request_id() -> str:
    """A fresh idempotency key (the router scopes it to contact and source bot).

    128 random bits as hex, like ``uuid4().hex`` without building a UUID
    object on every call of the hot path.
    """
    return os.urandom(16).hex()


def handoff_request(
    contact_id: str,
    source_bot: str,
    message: str,
    *,
    context: Context | None,
    signals: Iterable[Signal],
    request_id: str,
) -> handoff_pb2.RequestHandoffRequest:
    """The ``RequestHandoff`` message."""
    req = handoff_pb2.RequestHandoffRequest(
        contact_id=contact_id, source_bot=source_bot, message=message, request_id=request_id
    )
    if signals:
        req.signals.extend(s.to_proto() for s in signals)
    if context is not None:
        req.context.CopyFrom(context.to_proto())
    return req


def outcome_request(handoff_id: str, outcome: Outcome) -> handoff_pb2.RecordOutcomeRequest:
    """The ``RecordOutcome`` message."""
    return handoff_pb2.RecordOutcomeRequest(
        handoff_id=handoff_id, outcome=types_pb2.Outcome.ValueType(outcome.value)
    )


def release_request(contact_id: str, owner: str, reason: str) -> admin_pb2.ReleaseContactRequest:
    """The ``ReleaseContact`` message."""
    return admin_pb2.ReleaseContactRequest(contact_id=contact_id, owner=owner, reason=reason)
