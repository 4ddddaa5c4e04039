"""A scripted ``HandoffService`` in Python, for failures the real router does not make on demand.

It fails the first calls with UNAVAILABLE, records every request and its
metadata, and replays overlapping handoffs across watch subscriptions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent import futures

import grpc

from baton_client.pb import handoff_pb2, handoff_pb2_grpc, types_pb2


def handoff(handoff_id: str) -> handoff_pb2.WatchHandoffsResponse:
    """A watch item for ``handoff_id``."""
    return handoff_pb2.WatchHandoffsResponse(
        handoff=types_pb2.Handoff(handoff_id=handoff_id, contact_id="c", target_bot="seller")
    )


class FakeHandoffService(handoff_pb2_grpc.HandoffServiceServicer):
    """Fails ``failures`` RequestHandoff calls, then approves; streams scripted subscriptions."""

    def __init__(self, failures: int = 0, streams: Sequence[Sequence[str]] = ()) -> None:
        self.failures = failures
        self.streams = list(streams)
        self.requests: list[handoff_pb2.RequestHandoffRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.subscriptions = 0
        self.release = threading.Event()

    def RequestHandoff(
        self, request: handoff_pb2.RequestHandoffRequest, context: grpc.ServicerContext
    ) -> handoff_pb2.RequestHandoffResponse:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        if len(self.requests) <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "store unavailable")
        return handoff_pb2.RequestHandoffResponse(
            decision=types_pb2.DECISION_APPROVED, target_bot="seller", handoff_id="h-1"
        )

    def GetContext(
        self, request: handoff_pb2.GetContextRequest, context: grpc.ServicerContext
    ) -> handoff_pb2.GetContextResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    def AcknowledgeHandoff(
        self, request: handoff_pb2.AcknowledgeHandoffRequest, context: grpc.ServicerContext
    ) -> handoff_pb2.AcknowledgeHandoffResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    def RecordOutcome(
        self, request: handoff_pb2.RecordOutcomeRequest, context: grpc.ServicerContext
    ) -> handoff_pb2.RecordOutcomeResponse:
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not scripted")

    def WatchHandoffs(
        self, request: handoff_pb2.WatchHandoffsRequest, context: grpc.ServicerContext
    ) -> Iterator[handoff_pb2.WatchHandoffsResponse]:
        self.subscriptions += 1
        n = self.subscriptions
        for handoff_id in self.streams[n - 1] if n <= len(self.streams) else ():
            yield handoff(handoff_id)
        if n < len(self.streams):
            context.abort(grpc.StatusCode.UNAVAILABLE, "router restarting")
        self.release.wait(30)  # the last subscription stays open


class FakeServer:
    """A gRPC server on a free loopback port serving ``service``."""

    def __init__(self, service: FakeHandoffService) -> None:
        self.service = service
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handoff_pb2_grpc.add_HandoffServiceServicer_to_server(service, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stops at once."""
        self.service.release.set()
        self.server.stop(None)
