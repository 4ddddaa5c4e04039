"""The OpenAI Agents SDK adapter gates handoffs on Baton's decision (fake ``Model``, no network)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelResponse, ModelSettings, RunConfig, Runner, Usage
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import TResponseInputItem, TResponseOutputItem, TResponseStreamEvent
from agents.models.interface import Model, ModelTracing
from agents.tool import Tool
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam

import baton_client.aio
from baton_client import Baton, Context, Decision, Outcome
from baton_client.openai_agents import (
    BatonRunContext,
    arecord_outcome,
    baton_handoff,
    record_outcome,
)

QUIET = RunConfig(tracing_disabled=True)
PACKET = "Baton context packet"


class FakeModel(Model):
    """Stands in for an LLM: takes the first handoff it is offered, else answers in text."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.offered: list[list[str]] = []
        self.packets: list[dict[str, Any]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        names = [h.tool_name for h in handoffs]
        self.offered.append(names)
        for item in input if isinstance(input, list) else []:
            content = item.get("content") if isinstance(item, dict) else None
            if isinstance(content, str) and content.startswith(PACKET):
                self.packets.append(json.loads(content.split(": ", 1)[1]))
        output: TResponseOutputItem
        if names and len(self.offered) == 1:
            output = ResponseFunctionToolCall(
                id="fc-1", call_id="call-1", type="function_call", name=names[0], arguments="{}"
            )
        else:
            text = ResponseOutputText(text=f"{self.name} here", type="output_text", annotations=[])
            output = ResponseOutputMessage(
                id="msg-1", type="message", role="assistant", status="completed", content=[text]
            )
        return ModelResponse(output=[output], usage=Usage(), response_id=None)

    def stream_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the tests do not stream")


def agents(baton: Baton | baton_client.aio.Baton) -> tuple[Agent[Any], dict[str, FakeModel]]:
    """Lead hands off to buyer or seller; seller may hand off to buyer; all through Baton."""
    models = {name: FakeModel(name) for name in ("lead", "buyer", "seller")}
    buyer: Agent[Any] = Agent(name="buyer", model=models["buyer"])
    seller: Agent[Any] = Agent(
        name="seller",
        model=models["seller"],
        handoffs=[baton_handoff(buyer, baton=baton, source_bot="seller")],
    )
    lead: Agent[Any] = Agent(
        name="lead",
        model=models["lead"],
        handoffs=[
            baton_handoff(seller, baton=baton, source_bot="lead"),
            baton_handoff(buyer, baton=baton, source_bot="lead"),
        ],
    )
    return lead, models


async def turn(lead: Agent[Any], run: BatonRunContext) -> Any:
    return await Runner.run(lead, run.message, context=run, run_config=QUIET)


async def test_handoffs_are_offered_only_when_baton_approves(baton: Baton, contact: str) -> None:
    lead, models = agents(baton)
    known = Context(timeline="3 months", answered_questions=["timeline"])

    hello = BatonRunContext(contact, "Hello there", context=known)
    result = await turn(lead, hello)
    assert (result.last_agent.name, result.final_output) == ("lead", "lead here")
    assert models["lead"].offered == [[]]
    assert hello.decision is not None and hello.decision.decision is Decision.STAY

    models["lead"].offered.clear()
    sell = BatonRunContext(contact, "I want to sell my house", context=known)
    result = await turn(lead, sell)
    assert (result.last_agent.name, result.final_output) == ("seller", "seller here")
    assert models["lead"].offered == [["transfer_to_seller"]]
    # One handoff per turn: the seller handles the message rather than passing it on.
    assert models["seller"].offered == [[]]
    assert models["seller"].packets[-1]["timeline"] == "3 months"
    stored = baton.get_contact(contact)
    assert stored.owner == "seller"
    assert stored.history[-1].handoff_id == sell.handoff_id
    assert stored.history[-1].acknowledged_at is not None

    recorded = record_outcome(baton, result, Outcome.SUCCESSFUL)
    assert recorded is not None and (recorded.route, recorded.recorded) == ("lead>seller", True)

    models["lead"].offered.clear()
    late = BatonRunContext(contact, "Actually I want to buy a home")
    result = await turn(lead, late)
    assert result.last_agent.name == "lead"
    assert models["lead"].offered == [[]]
    assert late.decision is not None and late.decision.decision is Decision.NOT_OWNER
    assert record_outcome(baton, result, Outcome.SUCCESSFUL) is None


async def test_the_adapter_works_with_the_asyncio_client(
    abaton: baton_client.aio.Baton, contact: str
) -> None:
    lead, models = agents(abaton)
    run = BatonRunContext(contact, "We want to buy a bigger home")
    result = await turn(lead, run)
    assert result.last_agent.name == "buyer"
    assert models["lead"].offered == [["transfer_to_buyer"]]
    recorded = await arecord_outcome(abaton, result, Outcome.FAILED)
    assert recorded is not None and recorded.route == "lead>buyer"
