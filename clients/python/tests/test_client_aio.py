"""Every RPC through the asyncio client, against the built router."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import TypeVar

import baton_client.aio
from baton_client import BotHealth, Budget, Context, Decision, HealthReport, Outcome
from baton_client.aio import AsyncWatch

T = TypeVar("T")
Client = baton_client.aio.Baton

GATES = ["intent", "threshold", "ownership", "depth", "circular", "rate", "health"]


async def collect(watch: AsyncWatch[T]) -> asyncio.Queue[T]:
    """Iterates ``watch`` in a task; what it yields lands in the queue."""
    items: asyncio.Queue[T] = asyncio.Queue()

    async def pump() -> None:
        async for item in watch:
            await items.put(item)

    task = asyncio.create_task(pump())
    task.add_done_callback(lambda _: None)
    assert await watch.wait_connected(10), "the watch never subscribed"
    return items


async def test_bots_are_listed_with_their_sla(abaton: Client) -> None:
    bots = await abaton.list_bots()
    assert [(b.id, b.sla_p95_ms) for b in bots] == [
        ("lead", 1500),
        ("buyer", 1800),
        ("seller", 1800),
    ]


async def test_a_plain_message_stays(abaton: Client, contact: str) -> None:
    result = await abaton.request_handoff(contact, "lead", "Thanks, have a great weekend!")
    assert (result.decision, result.handoff_id, result.attempts) == (Decision.STAY, "", 1)


async def test_every_handoff_rpc_from_request_to_release(abaton: Client, contact: str) -> None:
    handoffs_watch = abaton.watch_handoffs("seller")
    decisions_watch = abaton.watch_decisions(contact_id=contact, skip_stay=True)
    handoffs = await collect(handoffs_watch)
    decisions = await collect(decisions_watch)
    known = Context(timeline="3 months", budget=Budget(300_000, 450_000, "USD"))

    result = await abaton.request_handoff(
        contact, "lead", "I want to sell my house", context=known, request_id="m-1"
    )
    assert (result.decision, result.target_bot, result.threshold) == (
        Decision.APPROVED,
        "seller",
        0.7,
    )
    assert [g.gate for g in result.gates] == GATES
    assert result.context is not None and result.context.timeline == "3 months"

    event = await asyncio.wait_for(handoffs.get(), 10)
    assert (event.handoff_id, event.contact_id) == (result.handoff_id, contact)
    record = await asyncio.wait_for(decisions.get(), 10)
    assert (record.decision, record.request_id) == (Decision.APPROVED, "m-1")

    info = await abaton.get_context(contact, "seller")
    assert (info.owner, info.last_handoff_id) == ("seller", result.handoff_id)
    assert info.context.budget == Budget(300_000, 450_000, "USD")
    assert info.expires_at is not None and info.expires_at > datetime.now(timezone.utc)

    first = await abaton.acknowledge_handoff(contact, result.handoff_id, "seller")
    again = await abaton.acknowledge_handoff(contact, result.handoff_id, "seller")
    assert (first.first, again.first) == (True, False)

    outcome = await abaton.record_outcome(result.handoff_id, Outcome.SUCCESSFUL)
    assert (outcome.route, outcome.recorded) == ("lead>seller", True)

    stored = await abaton.get_contact(contact)
    assert (stored.owner, stored.chain_depth, len(stored.history)) == ("seller", 1, 1)
    assert stored.history[0].outcome is Outcome.SUCCESSFUL

    stats = await abaton.get_stats()
    assert stats.decisions[Decision.APPROVED] >= 1

    released = await abaton.release_contact(contact, "lead", "called back")
    assert (released.previous_owner, released.owner) == ("seller", "lead")
    handoffs_watch.close()
    decisions_watch.close()


async def test_health_reports_are_kept_per_bot(abaton: Client) -> None:
    report = HealthReport("buyer", sample_count=50, p50_ms=100, p95_ms=210, p99_ms=250)
    assert await abaton.report_health([report]) == 1
    buyer = next(b for b in await abaton.list_bots() if b.id == "buyer")
    assert buyer.health is BotHealth.HEALTHY
    assert buyer.last_report is not None and buyer.last_report.p95_ms == 210
