"""Every RPC through the synchronous client, against the built router."""

from __future__ import annotations

import queue
import re
import threading
from datetime import datetime, timezone
from typing import TypeVar

from baton_client import (
    Baton,
    BotHealth,
    Budget,
    Context,
    Decision,
    DecisionRecord,
    HandoffEvent,
    HealthReport,
    Outcome,
    Watch,
)

T = TypeVar("T")

GATES = ["intent", "threshold", "ownership", "depth", "circular", "rate", "health"]


def collect(watch: Watch[T]) -> queue.Queue[T]:
    """Iterates ``watch`` in a thread; what it yields lands in the queue."""
    items: queue.Queue[T] = queue.Queue()

    def pump() -> None:
        for item in watch:
            items.put(item)

    threading.Thread(target=pump, daemon=True).start()
    assert watch.wait_connected(10), "the watch never subscribed"
    return items


def test_bots_are_listed_with_their_sla(baton: Baton) -> None:
    bots = baton.list_bots()
    assert [(b.id, b.sla_p95_ms) for b in bots] == [
        ("lead", 1500),
        ("buyer", 1800),
        ("seller", 1800),
    ]


def test_a_plain_message_stays(baton: Baton, contact: str) -> None:
    result = baton.request_handoff(contact, "lead", "Thanks, have a great weekend!")
    assert result.decision is Decision.STAY
    assert result.handoff_id == ""
    assert result.retry_after is None
    assert result.attempts == 1
    assert re.fullmatch(r"[0-9a-f]{32}", result.request_id)
    assert not result.approved


def test_every_handoff_rpc_from_request_to_release(baton: Baton, contact: str) -> None:
    handoffs = collect(baton.watch_handoffs("seller"))
    decisions = collect(baton.watch_decisions(contact_id=contact, skip_stay=True))
    known = Context(timeline="3 months", budget=Budget(300_000, 450_000, "USD"))

    result = baton.request_handoff(
        contact, "lead", "I want to sell my house", context=known, request_id="m-1"
    )
    assert result.decision is Decision.APPROVED
    assert result.target_bot == "seller"
    assert result.threshold == 0.7
    assert result.confidence >= 0.7
    assert [g.gate for g in result.gates] == GATES
    assert all(g.passed for g in result.gates)
    assert result.request_id == "m-1"
    assert result.handoff_id.endswith(f":{contact}")
    assert result.context is not None
    assert result.context.timeline == "3 months"
    assert result.context.budget == Budget(300_000, 450_000, "USD")

    event: HandoffEvent = handoffs.get(timeout=10)
    assert event.handoff_id == result.handoff_id
    assert (event.contact_id, event.handoff.source_bot) == (contact, "lead")
    assert event.context is not None and event.context.timeline == "3 months"
    record: DecisionRecord = decisions.get(timeout=10)
    assert (record.decision, record.request_id) == (Decision.APPROVED, "m-1")
    assert record.handoff_id == result.handoff_id

    info = baton.get_context(contact, "seller")
    assert (info.owner, info.last_handoff_id) == ("seller", result.handoff_id)
    assert info.context.timeline == "3 months"
    assert info.expires_at is not None and info.expires_at > datetime.now(timezone.utc)

    first = baton.acknowledge_handoff(contact, result.handoff_id, "seller")
    again = baton.acknowledge_handoff(contact, result.handoff_id, "seller")
    assert (first.first, again.first) == (True, False)
    assert first.acknowledged_at is not None

    outcome = baton.record_outcome(result.handoff_id, Outcome.SUCCESSFUL)
    assert (outcome.route, outcome.pattern) == ("lead>seller", result.pattern)
    assert (outcome.recorded, outcome.threshold) == (True, 0.7)
    assert baton.record_outcome(result.handoff_id, Outcome.FAILED).recorded is False

    stored = baton.get_contact(contact)
    assert (stored.owner, stored.chain_depth) == ("seller", 1)
    [handoff] = stored.history
    assert (handoff.handoff_id, handoff.kind) == (result.handoff_id, "HANDOFF")
    assert handoff.outcome is Outcome.SUCCESSFUL
    assert handoff.acknowledged_at is not None

    stats = baton.get_stats()
    assert stats.decisions[Decision.APPROVED] >= 1
    route = [t for t in stats.thresholds if t.route == "lead>seller"]
    assert [(t.outcomes, t.successes) for t in route] == [(1, 1)]

    released = baton.release_contact(contact, "lead", "called back")
    assert (released.previous_owner, released.owner) == ("seller", "lead")
    after = baton.get_contact(contact)
    assert (after.owner, after.chain_depth, after.history[-1].kind) == ("lead", 0, "RELEASE")


def test_health_reports_are_kept_per_bot(baton: Baton) -> None:
    report = HealthReport(
        "buyer", sample_count=100, p50_ms=120, p95_ms=240, p99_ms=300, window_ms=60_000
    )
    assert baton.report_health([report, report]) == 2
    buyer = next(b for b in baton.list_bots() if b.id == "buyer")
    assert buyer.health is BotHealth.HEALTHY
    assert buyer.last_report is not None
    assert (buyer.last_report.p95_ms, buyer.last_report.sample_count) == (240, 100)
