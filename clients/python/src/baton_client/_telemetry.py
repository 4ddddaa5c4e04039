"""W3C trace context for outgoing calls, when OpenTelemetry is installed.

With ``opentelemetry-api`` importable (``pip install baton-client[otel]``) every
call carries the current context as ``traceparent``/``tracestate``/``baggage``
metadata, through the globally configured propagator, so the router's server
and decision spans join the bot's trace. Without it this module does nothing
and costs nothing.
"""

from __future__ import annotations

try:
    from opentelemetry import baggage as _baggage
    from opentelemetry import context as _context
    from opentelemetry import propagate as _propagate
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised only without the extra
    _propagate = None  # type: ignore[assignment]

__all__ = ["ENABLED", "trace_metadata"]

ENABLED = _propagate is not None


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The propagation headers for the current OpenTelemetry context (empty when none).

    Outside any span and without baggage there is nothing to propagate, and
    the propagators are not run: that is the common case of a bot that does
    not trace, and it keeps the hot path cheap.
    """
    if _propagate is None or not _context.get_current():
        return ()
    if not _trace.get_current_span().get_span_context().is_valid and not _baggage.get_all():
        return ()
    carrier: dict[str, str] = {}
    _propagate.inject(carrier)
    return tuple(carrier.items())
