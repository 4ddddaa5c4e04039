"""The asyncio twin of ``baton_client.watch.Watch``: reconnecting, never a duplicate."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio

from baton_client._retry import Backoff
from baton_client._stream import WATCH_BACKOFF, SeenIds, resumable
from baton_client.errors import from_rpc_error

__all__ = ["AsyncWatch"]

T = TypeVar("T")


class AsyncWatch(Generic[T]):
    """An async iterator over a reconnecting server stream; ``async with`` it or ``close()`` it."""

    def __init__(
        self,
        open_stream: Callable[[], grpc.aio.UnaryStreamCall[Any, Any]],
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
        self._call: grpc.aio.UnaryStreamCall[Any, Any] | None = None
        self._items: AsyncIterator[Any] | None = None
        self._closed = asyncio.Event()
        self._connected = asyncio.Event()
        self._failures = 0
        self.connects = 0
        """How many times the stream was opened and answered (1 + reconnects)."""

    def __aiter__(self) -> AsyncWatch[T]:
        return self

    async def __anext__(self) -> T:
        while not self._closed.is_set():
            if self._call is None or self._items is None:
                await self._start()
                continue
            failure: grpc.aio.AioRpcError | None = None
            try:
                msg = await self._items.__anext__()
            except StopAsyncIteration:
                pass  # the router ended the stream (shutting down)
            except grpc.aio.AioRpcError as err:
                failure = err
            except asyncio.CancelledError:
                if not self._closed.is_set():
                    raise  # our task was cancelled, not the stream
                break
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
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self._backoff.delay(self._failures))
            self._failures += 1
        raise StopAsyncIteration

    async def _start(self) -> None:
        try:
            call = self._open()
        except (ValueError, grpc.aio.UsageError):  # the client's channel was closed
            self._closed.set()
            return
        self._call, self._items = call, call.__aiter__()
        # The router sends its headers once it has subscribed this stream.
        try:
            await call.initial_metadata()
        except grpc.aio.AioRpcError:
            return  # the read that follows reports it
        except asyncio.CancelledError:
            if not self._closed.is_set():
                raise
            return
        if not call.done():
            self.connects += 1
            self._failures = 0
            self._connected.set()

    def _drop(self) -> None:
        self._connected.clear()
        self._call, self._items = None, None

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Waits until the stream is subscribed (someone must be iterating); False on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    @property
    def connected(self) -> bool:
        """True while the stream is subscribed."""
        return self._connected.is_set()

    def close(self) -> None:
        """Ends the iteration; a pending ``__anext__`` raises ``StopAsyncIteration``."""
        self._closed.set()
        if self._call is not None:
            self._call.cancel()

    async def aclose(self) -> None:
        """``close()``, awaitable (for ``contextlib.aclosing``)."""
        self.close()

    async def __aenter__(self) -> AsyncWatch[T]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
