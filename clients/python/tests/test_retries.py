"""Idempotent request ids and bounded retries of CONTACT_BUSY and UNAVAILABLE.

The lock is held for real: the debug router's test pause point
(``BATON_TEST_PAUSE_AFTER_LOCK=<contact>=<duration>``) makes a decision on that
contact sleep with the contact lock held, between its gates and its commit.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from fakes import FakeHandoffService, FakeServer
from harness import Router, eventually

import baton_client.aio
from baton_client import Backoff, Baton, DeadlineExceeded, Decision, HandoffResult, Unavailable

SELL = "I want to sell my house"
DEBUG_ONLY = "the test pause point exists only in debug builds of baton-router"
BUY = "I want to buy a new home"


@pytest.fixture
def held(contact: str) -> Iterator[Router]:
    """A router that holds ``contact``'s lock for 1 s in every decision that commits."""
    router = Router(env={"BATON_TEST_PAUSE_AFTER_LOCK": f"{contact}=1s"})
    yield router
    router.stop()


def hold_lock(router: Router, client: Baton, contact: str) -> Future[HandoffResult]:
    """Starts an approval of ``contact`` in the background; returns once it holds the lock."""
    pool = ThreadPoolExecutor(1)
    first = pool.submit(client.request_handoff, contact, "lead", SELL)
    pool.shutdown(wait=False)
    paused = eventually(
        "the router to hold the lock",
        lambda: True if router.logged("test pause point") else (False if first.done() else None),
    )
    if not paused:  # the decision went through without pausing
        pytest.skip(DEBUG_ONLY)
    return first


def test_contact_busy_is_retried_until_the_lock_is_free(held: Router, contact: str) -> None:
    with Baton(held.target) as baton, baton.watch_decisions(contact_id=contact) as watch:
        seen: list[tuple[Decision, str]] = []
        threading.Thread(
            target=lambda: seen.extend((d.decision, d.request_id) for d in watch), daemon=True
        ).start()
        assert watch.wait_connected(10)
        first = hold_lock(held, baton, contact)
        # The seller asks while the lead's handoff to it holds the lock.
        second = baton.request_handoff(contact, "seller", BUY, request_id="r-2", retries=10)
        assert first.result(10).decision is Decision.APPROVED
        assert (second.decision, second.target_bot) == (Decision.APPROVED, "buyer")
        assert second.attempts >= 2
        eventually("the approval on the watch", lambda: (Decision.APPROVED, "r-2") in seen or None)
        busy = [r for r in seen if r[1] == "r-2" and r[0] is Decision.CONTACT_BUSY]
        assert len(busy) == second.attempts - 1


def test_without_retries_contact_busy_is_returned(held: Router, contact: str) -> None:
    with Baton(held.target) as baton:
        hold_lock(held, baton, contact)
        result = baton.request_handoff(contact, "seller", BUY, retries=0)
        assert (result.decision, result.attempts, result.retry_after) == (
            Decision.CONTACT_BUSY,
            1,
            0.25,
        )


def test_busy_retries_stop_at_the_deadline(held: Router, contact: str) -> None:
    with Baton(held.target) as baton:
        hold_lock(held, baton, contact)
        started = time.monotonic()
        result = baton.request_handoff(contact, "seller", BUY, retries=100, timeout=0.7)
        assert result.decision is Decision.CONTACT_BUSY
        assert time.monotonic() - started < 0.95


async def test_the_asyncio_client_retries_contact_busy(held: Router, contact: str) -> None:
    with Baton(held.target) as sync:
        first = hold_lock(held, sync, contact)
        async with baton_client.aio.Baton(held.target) as baton:
            second = await baton.request_handoff(contact, "seller", BUY, retries=10)
        assert (second.decision, second.target_bot) == (Decision.APPROVED, "buyer")
        assert second.attempts >= 2
        assert first.result(10).decision is Decision.APPROVED


def test_a_repeated_request_id_returns_the_same_handoff(baton: Baton, contact: str) -> None:
    first = baton.request_handoff(contact, "lead", SELL, request_id="once")
    again = baton.request_handoff(contact, "lead", SELL, request_id="once")
    assert first.decision is Decision.APPROVED
    assert (again.decision, again.handoff_id) == (Decision.APPROVED, first.handoff_id)
    assert (first.replayed, again.replayed) == (False, True)
    assert len(baton.get_contact(contact).history) == 1


def test_a_call_abandoned_mid_commit_is_not_executed_twice(held: Router, contact: str) -> None:
    with Baton(held.target) as baton:
        abandoned: DeadlineExceeded | None = None
        try:
            baton.request_handoff(contact, "lead", SELL, request_id="r-1", timeout=0.5)
        except DeadlineExceeded as deadline:
            abandoned = deadline
        if not held.logged("test pause point"):
            pytest.skip(DEBUG_ONLY)
        assert abandoned is not None, "the call was not cut short mid-commit"
        retry = baton.request_handoff(contact, "lead", SELL, request_id="r-1", retries=10)
        assert retry.decision is Decision.APPROVED
        [only] = baton.get_contact(contact).history
        assert only.handoff_id == retry.handoff_id


@pytest.fixture
def flaky() -> Iterator[FakeServer]:
    """A fake router whose first two RequestHandoff calls fail with UNAVAILABLE."""
    server = FakeServer(FakeHandoffService(failures=2))
    yield server
    server.stop()


def test_unavailable_is_retried_with_the_same_request_id(flaky: FakeServer) -> None:
    with Baton(flaky.target, backoff=Backoff(initial=0.01)) as baton:
        result = baton.request_handoff("c", "lead", SELL)
    ids = {r.request_id for r in flaky.service.requests}
    assert (result.decision, result.attempts, ids) == (Decision.APPROVED, 3, {result.request_id})


async def test_the_asyncio_client_retries_unavailable_too(flaky: FakeServer) -> None:
    async with baton_client.aio.Baton(flaky.target, backoff=Backoff(initial=0.01)) as baton:
        result = await baton.request_handoff("c", "lead", SELL, request_id="mine")
    assert result.attempts == 3
    assert [r.request_id for r in flaky.service.requests] == ["mine"] * 3


def test_unavailable_past_the_retries_is_raised(flaky: FakeServer) -> None:
    with (
        Baton(flaky.target, backoff=Backoff(initial=0.01)) as baton,
        pytest.raises(Unavailable) as raised,
    ):
        baton.request_handoff("c", "lead", SELL, retries=1)
    assert raised.value.message == "store unavailable"
    assert len(flaky.service.requests) == 2


async def test_asyncio_calls_share_one_event_loop(abaton: baton_client.aio.Baton) -> None:
    results = await asyncio.gather(
        *(abaton.request_handoff(f"many-{i}", "lead", "hello") for i in range(20))
    )
    assert {r.decision for r in results} == {Decision.STAY}
