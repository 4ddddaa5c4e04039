"""Typed, immutable results of the ``HandoffService`` and ``HealthService`` calls.

Built from the wire messages (``baton_client.admin`` has the operators' ones).
Timestamps become timezone-aware ``datetime`` (``None`` when the router sent
0, i.e. "never"); ``retry_after`` is in seconds (``None`` when the router sent
none); repeated fields are tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

from baton_client.context import Context
from baton_client.enums import Decision, Outcome
from baton_client.pb import handoff_pb2, types_pb2

__all__ = [
    "Acknowledgement",
    "ContextInfo",
    "Gate",
    "Handoff",
    "HandoffEvent",
    "HandoffResult",
    "HealthReport",
    "OutcomeRecorded",
    "Signal",
]


def timestamp(unix_ms: int) -> datetime | None:
    """A UTC datetime from unix milliseconds; ``None`` for 0."""
    return datetime.fromtimestamp(unix_ms / 1000, tz=timezone.utc) if unix_ms else None


def seconds(ms: int) -> float | None:
    """Seconds from milliseconds; ``None`` for 0."""
    return ms / 1000 if ms else None


def _context(
    msg: handoff_pb2.RequestHandoffResponse | handoff_pb2.WatchHandoffsResponse,
) -> Context | None:
    return Context.from_proto(msg.context) if msg.HasField("context") else None


@dataclass(frozen=True, slots=True)
class Signal:
    """A bot's own classifier signal: "this message is for ``target_bot``"."""

    target_bot: str
    confidence: float
    pattern: str = ""

    def to_proto(self) -> types_pb2.Signal:
        """The wire message."""
        return types_pb2.Signal(
            target_bot=self.target_bot, confidence=self.confidence, pattern=self.pattern
        )


class Gate(NamedTuple):
    """One gate of the decision pipeline and how it went.

    A named tuple rather than a dataclass: every answer carries several, and
    this is the cheapest immutable record to build on the hot path.
    """

    gate: str
    passed: bool
    detail: str

    @classmethod
    def from_proto(cls, msg: types_pb2.GateCheck) -> Gate:
        """From the wire message."""
        return cls(msg.gate, msg.passed, msg.detail)


def gate_checks(checks: Iterable[types_pb2.GateCheck]) -> tuple[Gate, ...]:
    """The gate checks of an answer, in the order they ran."""
    return tuple([Gate(g.gate, g.passed, g.detail) for g in checks])


@dataclass(frozen=True, slots=True)
class HandoffResult:
    """Baton's answer to ``request_handoff``.

    ``request_id`` is the idempotency key that was sent (generated when the
    caller gave none), ``attempts`` how many calls this client made for it
    (``CONTACT_BUSY`` and ``UNAVAILABLE`` are retried), ``replayed`` whether
    the router returned a stored earlier decision for that request id.
    """

    decision: Decision
    target_bot: str
    handoff_id: str
    confidence: float
    threshold: float
    reason: str
    gates: tuple[Gate, ...]
    retry_after: float | None
    pending_intents: tuple[str, ...]
    context: Context | None
    pattern: str = ""
    replayed: bool = False
    request_id: str = ""
    attempts: int = 1

    @property
    def approved(self) -> bool:
        """True when the contact now belongs to ``target_bot``."""
        return self.decision is Decision.APPROVED

    @classmethod
    def from_proto(
        cls, msg: handoff_pb2.RequestHandoffResponse, *, request_id: str = "", attempts: int = 1
    ) -> HandoffResult:
        """From the wire message."""
        # Positional, in field order: this runs on every call of the hot path.
        return cls(
            Decision.from_proto(msg.decision),
            msg.target_bot,
            msg.handoff_id,
            msg.confidence,
            msg.threshold,
            msg.reason,
            gate_checks(msg.gates),
            seconds(msg.retry_after_ms),
            tuple(msg.pending_intents),
            _context(msg),
            msg.pattern,
            msg.replayed,
            request_id,
            attempts,
        )


@dataclass(frozen=True, slots=True)
class ContextInfo:
    """``get_context``: the contact's packet as its owner reads it."""

    contact_id: str
    owner: str
    context: Context
    last_handoff_id: str
    expires_at: datetime | None

    @classmethod
    def from_proto(cls, msg: handoff_pb2.GetContextResponse) -> ContextInfo:
        """From the wire message."""
        return cls(
            contact_id=msg.contact_id,
            owner=msg.owner,
            context=Context.from_proto(msg.context),
            last_handoff_id=msg.last_handoff_id,
            expires_at=timestamp(msg.expires_at_unix_ms),
        )


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """``acknowledge_handoff``: when, and whether this call was the first to acknowledge."""

    acknowledged_at: datetime | None
    first: bool


@dataclass(frozen=True, slots=True)
class OutcomeRecorded:
    """``record_outcome``: the route and the threshold that now applies to it."""

    route: str
    pattern: str
    threshold: float
    recorded: bool


@dataclass(frozen=True, slots=True)
class Handoff:
    """An approved handoff, escalation or release in a contact's history."""

    handoff_id: str
    contact_id: str
    source_bot: str
    target_bot: str
    pattern: str
    confidence: float
    approved_at: datetime | None
    acknowledged_at: datetime | None
    outcome: Outcome
    kind: str
    reason: str

    @classmethod
    def from_proto(cls, msg: types_pb2.Handoff) -> Handoff:
        """From the wire message."""
        return cls(
            handoff_id=msg.handoff_id,
            contact_id=msg.contact_id,
            source_bot=msg.source_bot,
            target_bot=msg.target_bot,
            pattern=msg.pattern,
            confidence=msg.confidence,
            approved_at=timestamp(msg.approved_at_unix_ms),
            acknowledged_at=timestamp(msg.acknowledged_at_unix_ms),
            outcome=Outcome.from_proto(msg.outcome),
            kind=msg.kind,
            reason=msg.reason,
        )


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    """One item of ``watch_handoffs``: a handoff approved to the watching bot, with its packet."""

    handoff: Handoff
    context: Context | None

    @property
    def handoff_id(self) -> str:
        """The handoff's id (unique; the watch never yields one twice)."""
        return self.handoff.handoff_id

    @property
    def contact_id(self) -> str:
        """The contact that moved."""
        return self.handoff.contact_id

    @classmethod
    def from_proto(cls, msg: handoff_pb2.WatchHandoffsResponse) -> HandoffEvent:
        """From the wire message."""
        return cls(
            handoff=Handoff.from_proto(msg.handoff),
            context=_context(msg),
        )


@dataclass(frozen=True, slots=True)
class HealthReport:
    """A bot's measured health, as a probe reports it (``report_health``) or the router keeps it."""

    bot: str
    sample_count: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    error_rate: float = 0.0
    window_ms: int = 0
    observed_at: datetime | None = None

    def to_proto(self) -> types_pb2.HealthReport:
        """The wire message (``observed_at`` defaults to now)."""
        observed = self.observed_at or datetime.now(timezone.utc)
        return types_pb2.HealthReport(
            bot=self.bot,
            window_ms=self.window_ms,
            sample_count=self.sample_count,
            p50_ms=self.p50_ms,
            p95_ms=self.p95_ms,
            p99_ms=self.p99_ms,
            error_rate=self.error_rate,
            observed_at_unix_ms=int(observed.timestamp() * 1000),
        )

    @classmethod
    def from_proto(cls, msg: types_pb2.HealthReport) -> HealthReport:
        """From the wire message."""
        return cls(
            bot=msg.bot,
            sample_count=msg.sample_count,
            p50_ms=msg.p50_ms,
            p95_ms=msg.p95_ms,
            p99_ms=msg.p99_ms,
            error_rate=msg.error_rate,
            window_ms=msg.window_ms,
            observed_at=timestamp(msg.observed_at_unix_ms),
        )
