"""When to retry, and how long to wait: pure functions shared by the sync and asyncio clients.

A call is retried only when retrying cannot change what happened: a
``CONTACT_BUSY`` decision (nothing was decided, the lock was held) and an
``UNAVAILABLE`` or ``ABORTED`` status (nothing was applied), for calls that
are idempotent (``request_handoff`` reuses its request id, so a retry after a
lost answer returns the stored decision). Waits grow exponentially with jitter, honour the router's
``retry_after`` and never run past the call's deadline.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

__all__ = ["Attempts", "Backoff"]


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter: ``initial * multiplier**attempt``, capped at ``maximum``."""

    initial: float = 0.05
    maximum: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``.

        The router's ``retry_after`` (seconds) is a floor: retrying sooner only
        finds the lock still held.
        """
        base = min(self.maximum, self.initial * self.multiplier**attempt)
        if retry_after is not None:
            base = max(base, retry_after)
        return base * (1 + self.jitter * random.random())

    def wait(
        self, attempt: int, retries: int, remaining: float, retry_after: float | None = None
    ) -> float | None:
        """The wait before another try, or ``None`` when the retries or the deadline are spent.

        A try that cannot finish before the deadline is not started: after
        ``CONTACT_BUSY`` the next try may wait ``retry_after`` for the lock
        again, and a try cut short by the deadline would leave the caller not
        knowing whether it was decided.
        """
        if attempt >= retries:
            return None
        delay = self.delay(attempt, retry_after)
        return delay if delay + (retry_after or 0.0) < remaining else None


class Attempts:
    """The retry bookkeeping of one logical call: attempts made and its overall deadline."""

    __slots__ = ("_backoff", "_deadline", "_retries", "made")

    def __init__(self, backoff: Backoff, retries: int, timeout: float) -> None:
        self._backoff = backoff
        self._retries = retries
        self._deadline = time.monotonic() + timeout
        self.made = 0  # calls made so far

    def remaining(self) -> float:
        """Seconds left before the deadline (the next call's timeout)."""
        return max(self._deadline - time.monotonic(), 0.0)

    def retry_after_failure(self, retryable: bool) -> float | None:
        """The wait before retrying a failed call, or ``None`` to give up."""
        if not retryable:
            return None
        return self._backoff.wait(self.made - 1, self._retries, self.remaining())

    def retry_when_busy(self, retry_after: float | None) -> float | None:
        """The wait before asking again after ``CONTACT_BUSY``, or ``None`` to return it."""
        return self._backoff.wait(self.made - 1, self._retries, self.remaining(), retry_after)
