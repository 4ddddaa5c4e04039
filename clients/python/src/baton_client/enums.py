"""The wire enums as Python enums: proto names without their prefix, proto numbers as values.

``Decision.APPROVED`` is ``DECISION_APPROVED`` (2) on the wire. A value this
client does not know yet (a newer router) reads as ``UNSPECIFIED`` rather than
failing, so an old client keeps working against a new router.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["BotHealth", "Decision", "Outcome"]


_E = TypeVar("_E", bound="_WireEnum")


class _WireEnum(enum.Enum):
    """An enum whose values are the proto numbers."""

    @classmethod
    def from_proto(cls: type[_E], value: int) -> _E:
        """The member for a wire number; ``UNSPECIFIED`` for numbers this client does not know."""
        member = cls._value2member_map_.get(value)  # a dict lookup: this runs on every call
        return member if isinstance(member, cls) else cls(0)


class Decision(_WireEnum):
    """What Baton decided for one ``RequestHandoff`` call (SPEC §2)."""

    UNSPECIFIED = 0
    STAY = 1
    APPROVED = 2
    ESCALATED_HUMAN = 3
    BLOCKED_CIRCULAR = 4
    RATE_LIMITED = 5
    DEFERRED_UNHEALTHY = 6
    CONTACT_BUSY = 7
    NOT_OWNER = 8


class Outcome(_WireEnum):
    """How a handoff went, reported by its source or target bot; feeds the learned thresholds."""

    UNSPECIFIED = 0
    SUCCESSFUL = 1
    FAILED = 2
    REVERTED = 3
    TIMEOUT = 4


class BotHealth(_WireEnum):
    """A bot's health as the router judges it from its probe's reports."""

    UNSPECIFIED = 0
    HEALTHY = 1
    UNHEALTHY = 2
    STALE = 3
    UNKNOWN = 4
