"""An OTLP/gRPC receiver in Python: the collector's ``TraceService`` and ``MetricsService``.

The router exports to it like to a real collector; tests read the spans back.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1.trace_pb2 import Span

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"


class OtlpReceiver:
    """Collects every exported span; accepts and drops metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    TRACE_SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            self._export_traces,
                            request_deserializer=trace_service_pb2.ExportTraceServiceRequest.FromString,
                            response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString,
                        )
                    },
                ),
                grpc.method_handlers_generic_handler(
                    METRICS_SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            lambda _request, _context: (
                                metrics_service_pb2.ExportMetricsServiceResponse()
                            ),
                            request_deserializer=metrics_service_pb2.ExportMetricsServiceRequest.FromString,
                            response_serializer=metrics_service_pb2.ExportMetricsServiceResponse.SerializeToString,
                        )
                    },
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        """The URL to give the router's ``--otlp-endpoint``."""
        return f"http://127.0.0.1:{self.port}"

    def _export_traces(
        self, request: trace_service_pb2.ExportTraceServiceRequest, _context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        with self._lock:
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    self._spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[Span]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def stop(self) -> None:
        """Stops at once."""
        self.server.stop(None)
