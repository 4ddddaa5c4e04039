"""Typed results of the ``AdminService`` calls (operators): contacts, bots, stats, decisions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from baton_client.context import Context
from baton_client.enums import BotHealth, Decision
from baton_client.pb import admin_pb2, types_pb2
from baton_client.results import Gate, Handoff, HealthReport, gate_checks, seconds, timestamp

__all__ = [
    "Bot",
    "Contact",
    "DecisionRecord",
    "Deferral",
    "Release",
    "RouteThreshold",
    "Stats",
]


@dataclass(frozen=True, slots=True)
class Deferral:
    """The latest handoff deferred because its target was unhealthy, and how it ended."""

    source_bot: str
    target_bot: str
    deferred_at: datetime | None
    tries: int
    status: str
    handoff_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class Contact:
    """``get_contact`` (operators): owner, chain, history oldest first, packet, deferral."""

    contact_id: str
    owner: str
    owner_since: datetime | None
    chain_depth: int
    history: tuple[Handoff, ...]
    context: Context
    context_expires_at: datetime | None
    deferral: Deferral | None

    @classmethod
    def from_proto(cls, msg: admin_pb2.GetContactResponse) -> Contact:
        """From the wire message."""
        d = msg.deferral
        return cls(
            contact_id=msg.contact_id,
            owner=msg.owner,
            owner_since=timestamp(msg.owner_since_unix_ms),
            chain_depth=msg.chain_depth,
            history=tuple(Handoff.from_proto(h) for h in msg.history),
            context=Context.from_proto(msg.context),
            context_expires_at=timestamp(msg.context_expires_at_unix_ms),
            deferral=Deferral(
                source_bot=d.source_bot,
                target_bot=d.target_bot,
                deferred_at=timestamp(d.deferred_at_unix_ms),
                tries=d.tries,
                status=d.status,
                handoff_id=d.handoff_id,
                detail=d.detail,
            )
            if msg.HasField("deferral")
            else None,
        )


@dataclass(frozen=True, slots=True)
class Bot:
    """``list_bots``: a configured bot, its SLA and health."""

    id: str
    sla_p95_ms: int
    health: BotHealth
    health_detail: str
    last_report: HealthReport | None

    @classmethod
    def from_proto(cls, msg: admin_pb2.Bot) -> Bot:
        """From the wire message."""
        return cls(
            id=msg.id,
            sla_p95_ms=msg.sla_p95_ms,
            health=BotHealth.from_proto(msg.health),
            health_detail=msg.health_detail,
            last_report=(
                HealthReport.from_proto(msg.last_report) if msg.HasField("last_report") else None
            ),
        )


@dataclass(frozen=True, slots=True)
class RouteThreshold:
    """A learned threshold per route (``"source>target"``) and pattern."""

    route: str
    pattern: str
    base_threshold: float
    adjustment: float
    threshold: float
    outcomes: int
    successes: int


@dataclass(frozen=True, slots=True)
class Stats:
    """``get_stats``: decisions by kind since the router started, and every learned threshold."""

    decisions: Mapping[Decision, int] = field(default_factory=dict)
    thresholds: tuple[RouteThreshold, ...] = ()

    @classmethod
    def from_proto(cls, msg: admin_pb2.GetStatsResponse) -> Stats:
        """From the wire message."""
        return cls(
            decisions={Decision.from_proto(d.decision): d.count for d in msg.decisions},
            thresholds=tuple(
                RouteThreshold(
                    route=t.route,
                    pattern=t.pattern,
                    base_threshold=t.base_threshold,
                    adjustment=t.adjustment,
                    threshold=t.threshold,
                    outcomes=t.outcomes,
                    successes=t.successes,
                )
                for t in msg.thresholds
            ),
        )


@dataclass(frozen=True, slots=True)
class Release:
    """``release_contact``: who had the contact and who has it now."""

    previous_owner: str
    owner: str


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One item of ``watch_decisions``: a decision as operators see it."""

    decision: Decision
    contact_id: str
    source_bot: str
    target_bot: str
    confidence: float
    threshold: float
    reason: str
    gates: tuple[Gate, ...]
    handoff_id: str
    retry_after: float | None
    pending_intents: tuple[str, ...]
    pattern: str
    decided_at: datetime | None
    request_id: str

    @classmethod
    def from_proto(cls, msg: types_pb2.DecisionRecord) -> DecisionRecord:
        """From the wire message."""
        return cls(
            decision=Decision.from_proto(msg.decision),
            contact_id=msg.contact_id,
            source_bot=msg.source_bot,
            target_bot=msg.target_bot,
            confidence=msg.confidence,
            threshold=msg.threshold,
            reason=msg.reason,
            gates=gate_checks(msg.gates),
            handoff_id=msg.handoff_id,
            retry_after=seconds(msg.retry_after_ms),
            pending_intents=tuple(msg.pending_intents),
            pattern=msg.pattern,
            decided_at=timestamp(msg.decided_at_unix_ms),
            request_id=msg.request_id,
        )
