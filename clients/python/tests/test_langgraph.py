"""The LangGraph adapter moves a compiled graph from lead to seller, then to a human."""

from __future__ import annotations

import operator
import re
from typing import Annotated, Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command

from baton_client import Baton, Context
from baton_client.langgraph import HUMAN, BatonState, context_of, handoff_node


class State(BatonState, total=False):
    messages: Annotated[list[str], operator.add]
    replies: Annotated[list[str], operator.add]


def lead(state: State) -> dict[str, Any]:
    """Qualifies: notes the timeline when the lead gives one."""
    known = context_of(state)
    said = re.search(r"in (\d+ months)", state["messages"][-1])
    if said:
        known = Context(timeline=said.group(1), answered_questions=["timeline"])
        return {"baton_context": known.to_dict(), "replies": ["lead: noted your timeline"]}
    return {"replies": ["lead: what's your timeline?"]}


def seller(state: State) -> dict[str, Any]:
    """Values homes; never re-asks what the packet already says."""
    timeline = context_of(state).timeline
    return {"replies": [f"seller: selling within {timeline}, let's value your home"]}


def buyer(state: State) -> dict[str, Any]:
    """Finds homes."""
    return {"replies": ["buyer: what are you looking for?"]}


def human(state: State) -> dict[str, Any]:
    """A person took over; their answer came through the interrupt."""
    return {"replies": [f"human: {state['human_reply']}"]}


def graph(baton: Baton) -> Any:
    builder = StateGraph(State)
    agents = ["lead", "buyer", "seller"]
    node = handoff_node(baton, agents=agents, human="human")
    builder.add_node("baton", node, destinations=(*agents, "human"))
    for name, fn in (("lead", lead), ("buyer", buyer), ("seller", seller), ("human", human)):
        builder.add_node(name, fn)
        builder.add_edge(name, END)
    builder.add_edge(START, "baton")
    return builder.compile(checkpointer=InMemorySaver())


def test_the_graph_hands_the_contact_to_seller_then_to_a_human(baton: Baton, contact: str) -> None:
    app = graph(baton)
    config: RunnableConfig = {"configurable": {"thread_id": contact}}

    first = app.invoke({"messages": ["Hi, we're planning to move in 3 months"]}, config)
    assert (first["active_agent"], first["baton_decision"]) == ("lead", "STAY")
    assert first["replies"] == ["lead: noted your timeline"]

    second = app.invoke({"messages": ["I want to sell my house"]}, config)
    assert (second["active_agent"], second["baton_decision"]) == ("seller", "APPROVED")
    assert second["replies"][-1] == "seller: selling within 3 months, let's value your home"
    assert second["baton_context"]["timeline"] == "3 months"
    stored = baton.get_contact(contact)
    assert stored.owner == "seller"
    assert stored.history[-1].handoff_id == second["baton_handoff_id"]
    assert stored.history[-1].acknowledged_at is not None

    third = app.invoke({"messages": ["Can I talk to a real person?"]}, config)
    [pause] = third["__interrupt__"]
    assert pause.value["reason"] == "human trigger 'real person'"
    assert pause.value["context"]["timeline"] == "3 months"
    assert baton.get_contact(contact).owner == HUMAN

    resumed = app.invoke(Command(resume="Hi, this is Sam from the office"), config)
    assert resumed["active_agent"] == HUMAN
    assert resumed["replies"][-1] == "human: Hi, this is Sam from the office"
    escalations = [h for h in baton.get_contact(contact).history if h.kind == "ESCALATION"]
    assert len(escalations) == 1
