"""``watch_handoffs`` reconnects across router restarts and never yields a handoff twice."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator

import pytest
from fakes import FakeHandoffService, FakeServer
from harness import Router, eventually, free_port

import baton_client.aio
from baton_client import Baton, Decision, HandoffEvent, InvalidArgument, Watch

SELL = "I want to sell my house"


def pump(watch: Watch[HandoffEvent]) -> queue.Queue[HandoffEvent]:
    """Iterates ``watch`` in a thread into a queue; returns once subscribed."""
    items: queue.Queue[HandoffEvent] = queue.Queue()

    def consume() -> None:
        for event in watch:
            items.put(event)

    threading.Thread(target=consume, daemon=True).start()
    assert watch.wait_connected(10)
    return items


@pytest.fixture
def durable() -> Iterator[Router]:
    """A router on a fixed port with a data directory, so it can come back as it was."""
    router = Router(memory=False, port=free_port())
    yield router
    router.stop()


@pytest.mark.parametrize("graceful", [False, True], ids=["killed", "terminated"])
def test_a_watch_survives_a_router_restart_without_duplicates(
    durable: Router, contact: str, graceful: bool
) -> None:
    with Baton(durable.target) as baton, baton.watch_handoffs("seller") as watch:
        events = pump(watch)
        before = baton.request_handoff(f"{contact}-1", "lead", SELL)
        assert events.get(timeout=10).handoff_id == before.handoff_id

        durable.restart(graceful=graceful)
        eventually("the watch to resubscribe", lambda: watch.connects == 2 or None)
        assert watch.wait_connected(10)
        # The retry is answered from the store and not published again.
        replay = baton.request_handoff(f"{contact}-1", "lead", SELL, request_id=before.request_id)
        assert (replay.replayed, replay.handoff_id) == (True, before.handoff_id)
        after = baton.request_handoff(f"{contact}-2", "lead", SELL)
        assert after.decision is Decision.APPROVED
        assert events.get(timeout=10).handoff_id == after.handoff_id
        sentinel = baton.request_handoff(f"{contact}-3", "lead", SELL)
        assert events.get(timeout=10).handoff_id == sentinel.handoff_id


async def test_an_asyncio_watch_survives_a_router_restart(durable: Router, contact: str) -> None:
    async with baton_client.aio.Baton(durable.target) as baton:
        watch = baton.watch_handoffs("seller")
        seen: list[str] = []

        async def consume() -> None:
            async for event in watch:
                seen.append(event.handoff_id)

        task = asyncio.create_task(consume())
        assert await watch.wait_connected(10)
        first = await baton.request_handoff(f"{contact}-1", "lead", SELL)
        await asyncio.to_thread(durable.restart)
        assert await watch.wait_connected(10)
        second = await baton.request_handoff(f"{contact}-2", "lead", SELL)
        for _ in range(500):
            if len(seen) >= 2:
                break
            await asyncio.sleep(0.02)
        assert seen == [first.handoff_id, second.handoff_id]
        assert watch.connects == 2
        watch.close()
        await asyncio.wait_for(task, 5)


@pytest.fixture
def replaying() -> Iterator[FakeServer]:
    """A fake router that drops the stream twice and resends handoffs it already sent."""
    server = FakeServer(FakeHandoffService(streams=[["a", "b"], ["b", "c"], ["a", "d"]]))
    yield server
    server.stop()


def test_a_handoff_resent_after_a_reconnect_is_yielded_once(replaying: FakeServer) -> None:
    with Baton(replaying.target) as baton, baton.watch_handoffs("seller") as watch:
        ids = [next(watch).handoff_id for _ in range(4)]
        assert ids == ["a", "b", "c", "d"]
        assert watch.connects == 3


async def test_the_asyncio_watch_yields_a_resent_handoff_once(replaying: FakeServer) -> None:
    async with (
        baton_client.aio.Baton(replaying.target) as baton,
        baton.watch_handoffs("seller") as watch,
    ):
        ids = [(await anext(watch)).handoff_id for _ in range(4)]
    assert ids == ["a", "b", "c", "d"]


def test_close_ends_an_iteration_blocked_in_another_thread(baton: Baton) -> None:
    watch = baton.watch_handoffs("buyer")
    done = threading.Event()

    def consume() -> None:
        for _ in watch:
            pass
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    assert watch.wait_connected(10)
    watch.close()
    assert done.wait(5)


def test_an_unknown_bot_is_an_error_not_a_reconnect(baton: Baton) -> None:
    with pytest.raises(InvalidArgument) as raised, baton.watch_handoffs("nobody") as watch:
        next(watch)
    assert raised.value.field == "bot"
