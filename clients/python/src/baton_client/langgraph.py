"""Baton as the handoff arbiter of a LangGraph graph (``pip install baton-client[langgraph]``).

``handoff_node`` makes the graph's entry node: for each lead message it asks
Baton on behalf of the active agent and returns a ``Command`` — ``goto`` the
target agent with the merged context packet on ``APPROVED``, an ``interrupt``
for a human on ``ESCALATED_HUMAN``, back to the active agent otherwise. The
LangGraph thread id is the contact id; agents read the packet from
``state["baton_context"]`` (``context_of(state)``) and write what they learn
there for the next handoff::

    builder = StateGraph(State)            # State extends BatonState
    builder.add_node("baton", handoff_node(baton, agents=["lead", "buyer", "seller"]))
    builder.add_node("lead", lead) ...
    builder.add_edge(START, "baton")
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END
from langgraph.types import Command, interrupt

from baton_client.client import Baton
from baton_client.context import Context
from baton_client.enums import Decision
from baton_client.results import HandoffResult

__all__ = ["HUMAN", "BatonState", "HandoffNode", "context_of", "handoff_node", "last_message"]

HUMAN = "human"
"""The owner Baton records when it escalates a contact to a person."""


class BatonState(TypedDict, total=False):
    """The state keys the node writes; extend it with your own (and your ``messages``)."""

    active_agent: str
    baton_context: dict[str, Any]
    baton_decision: str
    baton_handoff_id: str
    human_reply: Any


class HandoffNode(Protocol):
    """The node ``handoff_node`` makes (a LangGraph node that takes the run's config)."""

    def __call__(self, state: Any, config: RunnableConfig) -> Command[str]:
        """Routes the newest message of ``state``."""


def last_message(state: Mapping[str, Any]) -> str:
    """The text of the newest entry of ``state["messages"]`` (str, dict or LangChain message)."""
    message = state["messages"][-1]
    if isinstance(message, str):
        return message
    if isinstance(message, Mapping):
        return str(message["content"])
    return str(message.content)


def context_of(state: Mapping[str, Any]) -> Context:
    """The context packet carried in the state."""
    return Context.from_dict(state.get("baton_context") or {})


def _contact(config: RunnableConfig) -> str:
    thread = (config.get("configurable") or {}).get("thread_id")
    if not thread:
        raise ValueError("the LangGraph thread_id is the Baton contact id: set it in the config")
    return str(thread)


def _request_id(contact: str, source: str, turn: int, text: str) -> str:
    # Stable across the node's re-run on resume, so Baton replays its decision.
    key = f"{contact}\x00{source}\x00{turn}\x00{text}".encode()
    return "lg-" + hashlib.sha256(key).hexdigest()[:40]


def handoff_node(
    baton: Baton,
    *,
    agents: Sequence[str] | Mapping[str, str],
    entry: str | None = None,
    human: str | None = None,
    message: Callable[[Mapping[str, Any]], str] = last_message,
    acknowledge: bool = True,
) -> HandoffNode:
    """A node that routes each message to the agent Baton says owns the contact.

    Args:
        baton: the client.
        agents: Baton bot ids, or a map from bot id to node name.
        entry: the agent of a new contact (the first of ``agents`` by default).
        human: the node that runs after a person answered the interrupt
            (``END`` by default); the answer is in ``state["human_reply"]``.
        message: reads the lead's message from the state.
        acknowledge: acknowledge an approved handoff for its target, which
            runs in this same graph step.

    """
    nodes = dict(agents) if isinstance(agents, Mapping) else {a: a for a in agents}
    first = entry or next(iter(nodes))

    def escalate(result: HandoffResult | None, state: Mapping[str, Any]) -> Command[str]:
        reply = interrupt(
            {
                "reason": result.reason if result else "with human",
                "message": message(state),
                "context": result.context.to_dict() if result and result.context else {},
            }
        )
        update: dict[str, Any] = {"active_agent": HUMAN, "human_reply": reply}
        if result is not None:
            update |= {
                "baton_decision": result.decision.name,
                "baton_handoff_id": result.handoff_id,
            }
            if result.context is not None:
                update["baton_context"] = result.context.to_dict()
        return Command(goto=human or END, update=update)

    def node(state: Any, config: RunnableConfig) -> Command[str]:
        source = state.get("active_agent") or first
        if source == HUMAN:
            return escalate(None, state)
        contact, text = _contact(config), message(state)
        result = baton.request_handoff(
            contact,
            source,
            text,
            context=context_of(state),
            request_id=_request_id(contact, source, len(state.get("messages", ())), text),
        )
        if result.decision is Decision.ESCALATED_HUMAN:
            return escalate(result, state)
        update: dict[str, Any] = {"active_agent": source, "baton_decision": result.decision.name}
        if result.decision is Decision.APPROVED and result.target_bot in nodes:
            update |= {"active_agent": result.target_bot, "baton_handoff_id": result.handoff_id}
            if acknowledge:
                baton.acknowledge_handoff(contact, result.handoff_id, result.target_bot)
            if result.context is not None:
                update["baton_context"] = result.context.to_dict()
        return Command(goto=nodes[update["active_agent"]], update=update)

    return node
