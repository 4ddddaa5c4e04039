"""A server stream that reconnects: ``Baton.watch_handoffs`` and ``Baton.watch_decisions``.

The router sends handoffs as they are approved; when the connection drops
(router restart, deploy, network) the watch opens the stream again with
backoff, and never yields an id it already yielded, so a consumer can act on
each handoff exactly once. ``close()`` (from any thread) ends the iteration.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import grpc

from baton_client._retry import Backoff
from baton_client._stream import WATCH_BACKOFF, SeenIds, resumable
from baton_client.errors import from_rpc_error

__all__ = ["Watch"]

T = TypeVar("T")


class Watch(Generic[T]):
    """An iterator over a reconnecting server stream; ``with`` it or ``close()`` it."""

    def __init__(
        self,
        open_stream: Callable[[], grpc.CallIterator[Any]],
        convert: Callable[[Any], T],
        *,
        key: Callable[[T], str] | None = None,
        backoff: Backoff = WATCH_BACKOFF,
    ) -> None:
        self._open = open_stream
        self._convert = convert
        self._key = key
        self._backoff = backoff
        self._seen = SeenIds()
        self._lock = threading.Lock()
        self._call: grpc.CallIterator[Any] | None = None
        self._items: Iterator[Any] | None = None
        self._closed = threading.Event()
        self._connected = threading.Event()
        self._failures = 0
        self.connects = 0
        """How many times the stream was opened and answered (1 + reconnects)."""

    def __iter__(self) -> Watch[T]:
        return self

    def __next__(self) -> T:
        while not self._closed.is_set():
            if self._items is None:
                self._start()
                continue
            try:
                msg = next(self._items)
            except StopIteration:
                failure = None  # the router ended the stream (shutting down)
            except grpc.RpcError as err:
                failure = err
            else:
                item = self._convert(msg)
                if self._key is None or self._seen.add(self._key(item)):
                    return item
                continue
            self._drop()
            if self._closed.is_set():
                break
            if failure is not None and not resumable(failure.code()):
                raise from_rpc_error(failure) from None
            self._closed.wait(self._backoff.delay(self._failures))
            self._failures += 1
        raise StopIteration

    def _start(self) -> None:
        try:
            call = self._open()
        except ValueError:  # the client's channel was closed: nothing more will come
            self._closed.set()
            return
        with self._lock:
            if self._closed.is_set():
                call.cancel()  # type: ignore[no-untyped-call]
                return
            self._call, self._items = call, iter(call)
        # The router sends its headers once it has subscribed this stream.
        call.initial_metadata()
        if not call.done():  # type: ignore[attr-defined]
            self.connects += 1
            self._failures = 0
            self._connected.set()

    def _drop(self) -> None:
        self._connected.clear()
        with self._lock:
            self._call, self._items = None, None

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Blocks until the stream is subscribed (someone must be iterating); False on timeout."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        """True while the stream is subscribed."""
        return self._connected.is_set()

    def close(self) -> None:
        """Ends the iteration; a ``next()`` blocked in another thread raises ``StopIteration``."""
        self._closed.set()
        with self._lock:
            call = self._call
        if call is not None:
            call.cancel()  # type: ignore[no-untyped-call]

    def __enter__(self) -> Watch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
