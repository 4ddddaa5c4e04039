"""Baton as the handoff arbiter of the OpenAI Agents SDK (``baton-client[openai-agents]``).

``baton_handoff(agent, baton=..., source_bot=...)`` is an SDK ``Handoff`` to
``agent`` that the model is offered only when Baton approved that very
handoff for the turn's message (``is_enabled`` asks Baton, once per turn and
source); taking it acknowledges the handoff (``on_handoff``) and gives the
next agent the merged context packet (``input_filter``). Run with a
``BatonRunContext``::

    lead = Agent("lead", handoffs=[baton_handoff(seller, baton=baton, source_bot="lead")])
    run = BatonRunContext(contact_id="c-42", message=text)
    result = await Runner.run(lead, text, context=run)
    record_outcome(baton, result, Outcome.SUCCESSFUL)

At most one handoff is taken per run: the agent that receives the contact
handles the message instead of handing it on again.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from agents import Agent, Handoff, RunContextWrapper, RunResult, handoff
from agents.handoffs import HandoffInputData
from agents.items import TResponseInputItem

from baton_client import aio
from baton_client._requests import new_request_id
from baton_client.client import Baton
from baton_client.context import Context
from baton_client.enums import Outcome
from baton_client.results import HandoffResult, OutcomeRecorded, Signal

__all__ = ["BatonRunContext", "arecord_outcome", "baton_handoff", "record_outcome"]


@dataclass
class BatonRunContext:
    """The run context the handoffs read: the contact, this turn's message, what is known so far."""

    contact_id: str
    message: str
    context: Context = field(default_factory=Context)
    signals: tuple[Signal, ...] = ()
    request_id: str = field(default_factory=new_request_id)
    decision: HandoffResult | None = None
    """Baton's answer for this turn, once a handoff asked."""
    asked_as: str | None = None
    handoff_id: str | None = None
    """The handoff taken in this run, once taken."""


def _run(ctx: RunContextWrapper[Any] | None) -> BatonRunContext:
    if ctx is None or not isinstance(ctx.context, BatonRunContext):
        raise TypeError("run the agent with context=BatonRunContext(...)")
    return ctx.context


async def _call(baton: Baton | aio.Baton, name: str, *args: Any, **kwargs: Any) -> Any:
    """Calls ``name`` on either client without blocking the event loop."""
    method = getattr(baton, name)
    if isinstance(baton, aio.Baton):
        return await method(*args, **kwargs)
    return await asyncio.to_thread(method, *args, **kwargs)


def baton_handoff(
    agent: Agent[Any], *, baton: Baton | aio.Baton, source_bot: str, bot: str | None = None
) -> Handoff[Any, Agent[Any]]:
    """A handoff to ``agent`` (Baton bot ``bot``, its name by default) gated by Baton."""
    target = bot or agent.name

    async def is_enabled(ctx: RunContextWrapper[Any], _agent: Agent[Any]) -> bool:
        run = _run(ctx)
        if run.handoff_id is not None:
            return False
        if run.decision is None or run.asked_as != source_bot:
            run.decision = await _call(
                baton,
                "request_handoff",
                run.contact_id,
                source_bot,
                run.message,
                context=run.context,
                signals=run.signals,
                request_id=run.request_id,
            )
            run.asked_as = source_bot
        return (
            run.decision is not None and run.decision.approved and run.decision.target_bot == target
        )

    async def on_handoff(ctx: RunContextWrapper[Any]) -> None:
        run = _run(ctx)
        decision = run.decision
        if decision is None or not decision.approved:
            raise RuntimeError("handoff taken without Baton's approval")
        await _call(baton, "acknowledge_handoff", run.contact_id, decision.handoff_id, target)
        run.handoff_id = decision.handoff_id
        run.context = decision.context or run.context

    def input_filter(data: HandoffInputData) -> HandoffInputData:
        packet = json.dumps(_run(data.run_context).context.to_dict(), sort_keys=True)
        note: TResponseInputItem = {
            "role": "system",
            "content": f"Baton context packet (already answered, do not re-ask): {packet}",
        }
        history = data.input_history
        items = ({"role": "user", "content": history},) if isinstance(history, str) else history
        return data.clone(input_history=(*items, note))

    return handoff(agent, on_handoff=on_handoff, input_filter=input_filter, is_enabled=is_enabled)


def _handoff_id(result: RunResult) -> str | None:
    run = result.context_wrapper.context
    return run.handoff_id if isinstance(run, BatonRunContext) else None


def record_outcome(baton: Baton, result: RunResult, outcome: Outcome) -> OutcomeRecorded | None:
    """Records how the handoff taken in this run went; ``None`` when the run took none."""
    handoff_id = _handoff_id(result)
    return baton.record_outcome(handoff_id, outcome) if handoff_id else None


async def arecord_outcome(
    baton: aio.Baton, result: RunResult, outcome: Outcome
) -> OutcomeRecorded | None:
    """``record_outcome`` for the asyncio client."""
    handoff_id = _handoff_id(result)
    return await baton.record_outcome(handoff_id, outcome) if handoff_id else None
