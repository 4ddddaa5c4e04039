"""The asyncio client: ``baton_client.aio.Baton``, the same API as ``baton_client.Baton`` awaited.

Create it inside the event loop that uses it (gRPC's asyncio channels belong to
one loop). ``watch_handoffs`` returns an async iterator.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio

from baton_client import _requests
from baton_client._aio_watch import AsyncWatch
from baton_client._connection import Connection, PemSource
from baton_client._retry import Attempts, Backoff
from baton_client.admin import Bot, Contact, DecisionRecord, Release, Stats
from baton_client.context import Context
from baton_client.enums import Decision, Outcome
from baton_client.errors import Aborted, Unavailable, from_rpc_error
from baton_client.pb import (
    admin_pb2,
    admin_pb2_grpc,
    handoff_pb2,
    handoff_pb2_grpc,
    health_pb2,
    health_pb2_grpc,
)
from baton_client.results import (
    Acknowledgement,
    ContextInfo,
    HandoffEvent,
    HandoffResult,
    HealthReport,
    OutcomeRecorded,
    Signal,
    timestamp,
)

__all__ = ["AsyncWatch", "Baton"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")


class Baton:
    """An asyncio connection to a Baton router; arguments as for ``baton_client.Baton``."""

    def __init__(
        self,
        target: str = "127.0.0.1:7400",
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool | None = None,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_server_name: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: Backoff | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._conn = Connection.build(
            target,
            token=token,
            token_file=token_file,
            tls=tls,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_server_name=tls_server_name,
            options=tuple(options),
        )
        creds, opts = self._conn.credentials, list(self._conn.options)
        self.channel = (
            grpc.aio.secure_channel(target, creds, opts)
            if creds is not None
            else grpc.aio.insecure_channel(target, opts)
        )
        self._handoff = handoff_pb2_grpc.HandoffServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthServiceStub(self.channel)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._watches: weakref.WeakSet[AsyncWatch[Any]] = weakref.WeakSet()

    # -- plumbing -------------------------------------------------------------

    def _attempts(self, timeout: float | None, retries: int | None) -> Attempts:
        return Attempts(
            self.backoff,
            self.retries if retries is None else retries,
            self.timeout if timeout is None else timeout,
        )

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Req, Resp],
        request: Req,
        timeout: float | None,
        *,
        idempotent: bool = True,
    ) -> Resp:
        """One unary call; ``UNAVAILABLE`` is retried when the call is idempotent."""
        attempts = self._attempts(timeout, None if idempotent else 0)
        while True:
            attempts.made += 1
            try:
                return await method(
                    request, timeout=attempts.remaining(), metadata=self._conn.call_metadata()
                )
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                wait = attempts.retry_after_failure(isinstance(error, (Unavailable, Aborted)))
                if wait is None:
                    raise error from None
            await asyncio.sleep(wait)

    # -- HandoffService ---------------------------------------------------------

    async def request_handoff(
        self,
        contact_id: str,
        source_bot: str,
        message: str,
        *,
        context: Context | None = None,
        signals: Iterable[Signal] = (),
        request_id: str | None = None,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> HandoffResult:
        """See ``baton_client.Baton.request_handoff``."""
        rid = request_id or _requests.new_request_id()
        request = _requests.handoff_request(
            contact_id, source_bot, message, context=context, signals=signals, request_id=rid
        )
        attempts = self._attempts(timeout, retries)
        while True:
            attempts.made += 1
            try:
                reply = await self._handoff.RequestHandoff(
                    request, timeout=attempts.remaining(), metadata=self._conn.call_metadata()
                )
            except grpc.aio.AioRpcError as err:
                error = from_rpc_error(err)
                wait = attempts.retry_after_failure(isinstance(error, (Unavailable, Aborted)))
                if wait is None:
                    raise error from None
            else:
                result = HandoffResult.from_proto(reply, request_id=rid, attempts=attempts.made)
                if result.decision is not Decision.CONTACT_BUSY:
                    return result
                wait = attempts.retry_when_busy(result.retry_after)
                if wait is None:
                    return result
            await asyncio.sleep(wait)

    async def get_context(
        self, contact_id: str, bot: str = "", *, timeout: float | None = None
    ) -> ContextInfo:
        """See ``baton_client.Baton.get_context``."""
        request = handoff_pb2.GetContextRequest(contact_id=contact_id, bot=bot)
        return ContextInfo.from_proto(await self._unary(self._handoff.GetContext, request, timeout))

    async def acknowledge_handoff(
        self, contact_id: str, handoff_id: str, bot: str, *, timeout: float | None = None
    ) -> Acknowledgement:
        """See ``baton_client.Baton.acknowledge_handoff``."""
        request = handoff_pb2.AcknowledgeHandoffRequest(
            contact_id=contact_id, handoff_id=handoff_id, bot=bot
        )
        reply = await self._unary(self._handoff.AcknowledgeHandoff, request, timeout)
        return Acknowledgement(
            timestamp(reply.acknowledged_at_unix_ms), reply.first_acknowledgement
        )

    async def record_outcome(
        self, handoff_id: str, outcome: Outcome, *, timeout: float | None = None
    ) -> OutcomeRecorded:
        """See ``baton_client.Baton.record_outcome``."""
        request = _requests.outcome_request(handoff_id, outcome)
        reply = await self._unary(self._handoff.RecordOutcome, request, timeout)
        return OutcomeRecorded(reply.route, reply.pattern, reply.threshold, reply.recorded)

    def watch_handoffs(self, bot: str) -> AsyncWatch[HandoffEvent]:
        """Handoffs approved to ``bot``: a reconnecting async iterator, no duplicates."""
        request = handoff_pb2.WatchHandoffsRequest(bot=bot)
        return self._watch(
            AsyncWatch(
                lambda: self._handoff.WatchHandoffs(request, metadata=self._conn.call_metadata()),
                HandoffEvent.from_proto,
                key=lambda event: event.handoff_id,
            )
        )

    # -- HealthService ----------------------------------------------------------

    async def report_health(
        self, reports: Iterable[HealthReport], *, timeout: float | None = None
    ) -> int:
        """See ``baton_client.Baton.report_health``."""
        stream = (health_pb2.ReportHealthRequest(report=r.to_proto()) for r in reports)
        try:
            reply = await self._health.ReportHealth(
                stream, timeout=timeout, metadata=self._conn.call_metadata()
            )
        except grpc.aio.AioRpcError as err:
            raise from_rpc_error(err) from None
        return reply.accepted

    # -- AdminService (operator tokens) -----------------------------------------

    async def get_contact(self, contact_id: str, *, timeout: float | None = None) -> Contact:
        """See ``baton_client.Baton.get_contact``."""
        request = admin_pb2.GetContactRequest(contact_id=contact_id)
        return Contact.from_proto(await self._unary(self._admin.GetContact, request, timeout))

    async def list_bots(self, *, timeout: float | None = None) -> tuple[Bot, ...]:
        """See ``baton_client.Baton.list_bots``."""
        reply = await self._unary(self._admin.ListBots, admin_pb2.ListBotsRequest(), timeout)
        return tuple(Bot.from_proto(b) for b in reply.bots)

    async def get_stats(self, *, timeout: float | None = None) -> Stats:
        """See ``baton_client.Baton.get_stats``."""
        reply = await self._unary(self._admin.GetStats, admin_pb2.GetStatsRequest(), timeout)
        return Stats.from_proto(reply)

    async def release_contact(
        self, contact_id: str, owner: str, reason: str = "", *, timeout: float | None = None
    ) -> Release:
        """See ``baton_client.Baton.release_contact``."""
        request = _requests.release_request(contact_id, owner, reason)
        reply = await self._unary(self._admin.ReleaseContact, request, timeout, idempotent=False)
        return Release(reply.previous_owner, reply.owner)

    def watch_decisions(
        self, *, contact_id: str = "", bot: str = "", skip_stay: bool = False
    ) -> AsyncWatch[DecisionRecord]:
        """See ``baton_client.Baton.watch_decisions``."""
        request = admin_pb2.WatchDecisionsRequest(
            contact_id=contact_id, bot=bot, skip_stay=skip_stay
        )
        return self._watch(
            AsyncWatch(
                lambda: self._admin.WatchDecisions(request, metadata=self._conn.call_metadata()),
                lambda reply: DecisionRecord.from_proto(reply.decision),
            )
        )

    # -- lifecycle ----------------------------------------------------------------

    def _watch(self, watch: AsyncWatch[T]) -> AsyncWatch[T]:
        self._watches.add(watch)
        return watch

    async def close(self) -> None:
        """Ends the watches, closes the channel; calls in flight are cancelled."""
        for watch in list(self._watches):
            watch.close()
        await self.channel.close(None)

    async def __aenter__(self) -> Baton:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
