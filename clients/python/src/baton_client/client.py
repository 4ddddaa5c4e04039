"""The synchronous client: ``baton_client.Baton``.

One object per process is enough (it holds one HTTP/2 channel, safe to share
between threads). Every RPC of ``HandoffService``, ``HealthService`` and
``AdminService`` is a method returning a typed result; failures raise
``baton_client.errors.BatonError`` subclasses.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import grpc

from baton_client import _requests
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
from baton_client.watch import Watch

__all__ = ["Baton"]

Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")


class Baton:
    """A connection to a Baton router.

    Args:
        target: ``host:port`` of the router.
        token: bearer token; or ``token_file``, a file holding it (read once).
        tls: serve over TLS; implied by ``tls_ca``/``tls_cert``. ``tls=True``
            alone trusts the system roots.
        tls_ca: CA (PEM path or bytes) the router's certificate chains to.
        tls_cert, tls_key: client certificate and key, for routers that require one.
        tls_server_name: the name to verify in the router's certificate, when it
            is not the host in ``target``.
        timeout: deadline in seconds of each call, retries included.
        retries: how many times a call is retried on ``UNAVAILABLE``, and
            ``request_handoff`` on ``CONTACT_BUSY``.
        backoff: the waits between retries.
        options: extra gRPC channel options.

    """

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
            grpc.secure_channel(target, creds, opts)
            if creds is not None
            else grpc.insecure_channel(target, opts)
        )
        self._handoff = handoff_pb2_grpc.HandoffServiceStub(self.channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self.channel)
        self._health = health_pb2_grpc.HealthServiceStub(self.channel)
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff or Backoff()
        self._watches: weakref.WeakSet[Watch[Any]] = weakref.WeakSet()

    # -- plumbing -------------------------------------------------------------

    def _attempts(self, timeout: float | None, retries: int | None) -> Attempts:
        return Attempts(
            self.backoff,
            self.retries if retries is None else retries,
            self.timeout if timeout is None else timeout,
        )

    def _unary(
        self,
        method: grpc.UnaryUnaryMultiCallable[Req, Resp],
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
                return method(
                    request, timeout=attempts.remaining(), metadata=self._conn.call_metadata()
                )
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                wait = attempts.retry_after_failure(isinstance(error, (Unavailable, Aborted)))
                if wait is None:
                    raise error from None
            time.sleep(wait)

    # -- HandoffService ---------------------------------------------------------

    def request_handoff(
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
        """Asks Baton whether ``contact_id`` stays with ``source_bot`` after ``message``.

        Call it for every message the bot handles. ``request_id`` is the
        idempotency key (one is generated when omitted); this client's own
        retries reuse it, so a retry never decides twice. ``CONTACT_BUSY`` is
        asked again after the router's ``retry_after`` and ``UNAVAILABLE``
        after a backoff, at most ``retries`` times and within ``timeout``;
        a ``CONTACT_BUSY`` still standing then is returned.
        """
        rid = request_id or _requests.new_request_id()
        request = _requests.handoff_request(
            contact_id, source_bot, message, context=context, signals=signals, request_id=rid
        )
        attempts = self._attempts(timeout, retries)
        while True:
            attempts.made += 1
            try:
                reply = self._handoff.RequestHandoff(
                    request, timeout=attempts.remaining(), metadata=self._conn.call_metadata()
                )
            except grpc.RpcError as err:
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
            time.sleep(wait)

    def get_context(
        self, contact_id: str, bot: str = "", *, timeout: float | None = None
    ) -> ContextInfo:
        """The contact's context packet; with ``bot``, only if that bot owns the contact."""
        request = handoff_pb2.GetContextRequest(contact_id=contact_id, bot=bot)
        return ContextInfo.from_proto(self._unary(self._handoff.GetContext, request, timeout))

    def acknowledge_handoff(
        self, contact_id: str, handoff_id: str, bot: str, *, timeout: float | None = None
    ) -> Acknowledgement:
        """``bot`` (the handoff's target) confirms it took the contact."""
        request = handoff_pb2.AcknowledgeHandoffRequest(
            contact_id=contact_id, handoff_id=handoff_id, bot=bot
        )
        reply = self._unary(self._handoff.AcknowledgeHandoff, request, timeout)
        return Acknowledgement(
            timestamp(reply.acknowledged_at_unix_ms), reply.first_acknowledgement
        )

    def record_outcome(
        self, handoff_id: str, outcome: Outcome, *, timeout: float | None = None
    ) -> OutcomeRecorded:
        """How the handoff went (once per handoff); moves the route's learned threshold."""
        request = _requests.outcome_request(handoff_id, outcome)
        reply = self._unary(self._handoff.RecordOutcome, request, timeout)
        return OutcomeRecorded(reply.route, reply.pattern, reply.threshold, reply.recorded)

    def watch_handoffs(self, bot: str) -> Watch[HandoffEvent]:
        """Handoffs approved to ``bot`` as they happen: a reconnecting iterator, no duplicates."""
        request = handoff_pb2.WatchHandoffsRequest(bot=bot)
        return self._watch(
            Watch(
                lambda: self._handoff.WatchHandoffs(request, metadata=self._conn.call_metadata()),
                HandoffEvent.from_proto,
                key=lambda event: event.handoff_id,
            )
        )

    # -- HealthService ----------------------------------------------------------

    def report_health(
        self, reports: Iterable[HealthReport], *, timeout: float | None = None
    ) -> int:
        """Streams health reports (what ``baton-probe`` does); returns how many were accepted.

        The stream lasts as long as ``reports`` yields, so it has no deadline
        unless ``timeout`` is given.
        """
        stream = (health_pb2.ReportHealthRequest(report=r.to_proto()) for r in reports)
        try:
            reply = self._health.ReportHealth(
                stream, timeout=timeout, metadata=self._conn.call_metadata()
            )
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        return reply.accepted

    # -- AdminService (operator tokens) -----------------------------------------

    def get_contact(self, contact_id: str, *, timeout: float | None = None) -> Contact:
        """Owner, chain depth, history, packet and deferral of a contact."""
        request = admin_pb2.GetContactRequest(contact_id=contact_id)
        return Contact.from_proto(self._unary(self._admin.GetContact, request, timeout))

    def list_bots(self, *, timeout: float | None = None) -> tuple[Bot, ...]:
        """Every configured bot with its SLA and health."""
        reply = self._unary(self._admin.ListBots, admin_pb2.ListBotsRequest(), timeout)
        return tuple(Bot.from_proto(b) for b in reply.bots)

    def get_stats(self, *, timeout: float | None = None) -> Stats:
        """Decisions by kind since the router started, and every learned threshold."""
        reply = self._unary(self._admin.GetStats, admin_pb2.GetStatsRequest(), timeout)
        return Stats.from_proto(reply)

    def release_contact(
        self, contact_id: str, owner: str, reason: str = "", *, timeout: float | None = None
    ) -> Release:
        """Hands a contact (usually from a human) to ``owner`` and resets its handoff chain."""
        request = _requests.release_request(contact_id, owner, reason)
        reply = self._unary(self._admin.ReleaseContact, request, timeout, idempotent=False)
        return Release(reply.previous_owner, reply.owner)

    def watch_decisions(
        self, *, contact_id: str = "", bot: str = "", skip_stay: bool = False
    ) -> Watch[DecisionRecord]:
        """Every decision as it is made (filtered by contact, bot, or leaving out STAY)."""
        request = admin_pb2.WatchDecisionsRequest(
            contact_id=contact_id, bot=bot, skip_stay=skip_stay
        )
        return self._watch(
            Watch(
                lambda: self._admin.WatchDecisions(request, metadata=self._conn.call_metadata()),
                lambda reply: DecisionRecord.from_proto(reply.decision),
            )
        )

    # -- lifecycle ----------------------------------------------------------------

    def _watch(self, watch: Watch[T]) -> Watch[T]:
        self._watches.add(watch)
        return watch

    def close(self) -> None:
        """Ends the watches, closes the channel; calls in flight are cancelled."""
        for watch in list(self._watches):
            watch.close()
        self.channel.close()

    def __enter__(self) -> Baton:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
