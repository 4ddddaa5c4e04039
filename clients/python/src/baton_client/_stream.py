"""What the reconnecting watches share: which failures to ride out, and the ids already seen."""

from __future__ import annotations

from collections import OrderedDict

import grpc

from baton_client._retry import Backoff

__all__ = ["WATCH_BACKOFF", "SeenIds", "resumable"]

WATCH_BACKOFF = Backoff(initial=0.1, maximum=5.0)
"""Reconnect waits of a watch: quick after a blip, at most 5 s while the router is away."""

# A stream that ends with one of these is opened again; anything else (bad
# token, unknown bot, …) is a caller error that reconnecting cannot fix.
_RESUMABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,  # the watcher fell behind; subscribe again
        grpc.StatusCode.INTERNAL,  # a connection reset mid-stream
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,  # cancelled by the router, not by us
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)


def resumable(code: grpc.StatusCode) -> bool:
    """True when a stream that failed with ``code`` should be opened again."""
    return code in _RESUMABLE


class SeenIds:
    """The most recent ``capacity`` ids, oldest forgotten first."""

    def __init__(self, capacity: int = 65_536) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, key: str) -> bool:
        """Remembers ``key``; False when it was already there (a duplicate)."""
        if key in self._ids:
            self._ids.move_to_end(key)
            return False
        self._ids[key] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True
