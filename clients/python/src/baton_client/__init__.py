"""Python client for Baton, the control plane that arbitrates handoffs between chatbots.

``Baton`` is the synchronous client, ``baton_client.aio.Baton`` the asyncio
one; both cover every RPC of ``baton.v1`` with typed results. Adapters:
``baton_client.langgraph`` and ``baton_client.openai_agents``.
"""

from baton_client._retry import Backoff
from baton_client.admin import (
    Bot,
    Contact,
    DecisionRecord,
    Deferral,
    Release,
    RouteThreshold,
    Stats,
)
from baton_client.client import Baton
from baton_client.context import Budget, Context, PropertyPreferences
from baton_client.enums import BotHealth, Decision, Outcome
from baton_client.errors import (
    Aborted,
    BatonError,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from baton_client.results import (
    Acknowledgement,
    ContextInfo,
    Gate,
    Handoff,
    HandoffEvent,
    HandoffResult,
    HealthReport,
    OutcomeRecorded,
    Signal,
)
from baton_client.watch import Watch

__version__ = "0.1.0"

__all__ = [
    "Aborted",
    "Acknowledgement",
    "Backoff",
    "Baton",
    "BatonError",
    "Bot",
    "BotHealth",
    "Budget",
    "Contact",
    "Context",
    "ContextInfo",
    "DeadlineExceeded",
    "Decision",
    "DecisionRecord",
    "Deferral",
    "FailedPrecondition",
    "Gate",
    "Handoff",
    "HandoffEvent",
    "HandoffResult",
    "HealthReport",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "Outcome",
    "OutcomeRecorded",
    "PermissionDenied",
    "PropertyPreferences",
    "Release",
    "ResourceExhausted",
    "RouteThreshold",
    "Signal",
    "Stats",
    "Unauthenticated",
    "Unavailable",
    "Watch",
]
