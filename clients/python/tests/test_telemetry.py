"""W3C trace context goes out with every call, and the router's spans join the caller's trace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import FakeHandoffService, FakeServer
from harness import Router, eventually
from opentelemetry import baggage, context
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanContext, Tracer
from otlp import OtlpReceiver

import baton_client.aio
from baton_client import Baton, Decision


@pytest.fixture
def tracer() -> Tracer:
    """A real (recording, sampled) tracer that exports nowhere."""
    return TracerProvider().get_tracer("baton-client-tests")


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer(FakeHandoffService())
    yield server
    server.stop()


def traceparent(span: SpanContext) -> str:
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"


def test_calls_carry_the_current_trace_and_baggage(fake: FakeServer, tracer: Tracer) -> None:
    with Baton(fake.target) as baton:
        baton.request_handoff("c", "lead", "outside any span")
        token = context.attach(baggage.set_baggage("tenant", "acme"))
        try:
            with tracer.start_as_current_span("bot.handle") as span:
                baton.request_handoff("c", "lead", "inside a span")
        finally:
            context.detach(token)
    outside, inside = fake.service.metadata
    assert "traceparent" not in outside
    assert inside["traceparent"] == traceparent(span.get_span_context())
    assert inside["baggage"] == "tenant=acme"


async def test_asyncio_calls_carry_the_current_trace(fake: FakeServer, tracer: Tracer) -> None:
    async with baton_client.aio.Baton(fake.target) as baton:
        with tracer.start_as_current_span("bot.handle") as span:
            await baton.request_handoff("c", "lead", "inside a span")
    assert fake.service.metadata[-1]["traceparent"] == traceparent(span.get_span_context())


class TraceNotJoined(AssertionError):
    """The router exported its spans, but not in the caller's trace."""


@pytest.fixture
def traced() -> Iterator[tuple[Router, OtlpReceiver]]:
    """A router exporting every span over OTLP to a receiver of ours."""
    receiver = OtlpReceiver()
    router = Router(
        "--otlp-endpoint",
        receiver.endpoint,
        "--set",
        "server.stay_span_every=1",
        env={"OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    yield router, receiver
    router.stop()
    receiver.stop()


def test_the_router_spans_join_the_client_trace(
    traced: tuple[Router, OtlpReceiver], tracer: Tracer, contact: str
) -> None:
    router, receiver = traced
    with Baton(router.target) as baton, tracer.start_as_current_span("bot.handle") as client:
        result = baton.request_handoff(contact, "lead", "I want to sell my house")
    assert result.decision is Decision.APPROVED
    ours = client.get_span_context()
    trace_id, parent_id = ours.trace_id.to_bytes(16, "big"), ours.span_id.to_bytes(8, "big")

    # The router's only decision is ours: it is exported whatever trace it is in.
    eventually("the decision span", lambda: _named(receiver.spans(), "decision") or None)

    def joined() -> tuple[Span, Span] | None:
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        server = [s for s in spans if s.kind == Span.SpanKind.SPAN_KIND_SERVER]
        decision = _named(spans, "decision")
        return (server[0], decision[0]) if server and decision else None

    try:
        server, decision = eventually("the spans in the client's trace", joined, timeout=3)
    except AssertionError as missing:
        raise TraceNotJoined(str(missing)) from None
    assert server.name == "baton.v1.HandoffService/RequestHandoff"
    assert server.parent_span_id == parent_id
    assert _descends(decision, server, receiver.spans())


def _named(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def _descends(span: Span, ancestor: Span, spans: list[Span]) -> bool:
    """True when ``ancestor`` is on ``span``'s parent chain."""
    by_id = {s.span_id: s for s in spans}
    current: Span | None = span
    while current is not None and current.parent_span_id:
        if current.parent_span_id == ancestor.span_id:
            return True
        current = by_id.get(current.parent_span_id)
    return False
