"""Three scripted bots — lead, buyer, seller; no LLM — against a running Baton router.

It plays the three failures Baton exists to prevent (SPEC §1) and prints what
happened:

1. "I want to sell my house and buy a new one" does not ping-pong between
   seller and buyer;
2. the seller reads the timeline the lead already asked for, instead of asking
   again;
3. two messages arriving at once give one handoff, not two conversations.

Start a router (``cargo run --release``), then::

    python examples/three_bots.py --target 127.0.0.1:7400

With tokens, ``--token-file`` is read for every bot, or per bot when the path
contains ``{bot}`` (``--token-file /etc/baton/tokens/{bot}-bot/token``). The
exit status is 1 when Baton did not prevent one of the failures.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import uuid

from baton_client import Baton, Budget, Context, Decision, HandoffResult

BOTS = ("lead", "buyer", "seller")


class ScriptedBot:
    """A bot that answers from a script and asks Baton about every message it handles."""

    def __init__(self, name: str, baton: Baton) -> None:
        self.name = name
        self.baton = baton
        self.known: dict[str, Context] = {}

    def handle(self, contact: str, message: str) -> HandoffResult:
        """Handles one lead message: extract what it says, then ask Baton who should own it."""
        known = self.known.setdefault(contact, Context())
        if found := re.search(r"in (\d+ months)", message):
            known.timeline = found.group(1)
        if found := re.search(r"(\d+)k", message):
            known.budget = Budget(max=int(found.group(1)) * 1000, currency="USD")
        result = self.baton.request_handoff(contact, self.name, message, context=known)
        target = f" -> {result.target_bot}" if result.target_bot else ""
        print(f"  {self.name:>6}: {result.decision.name}{target}  ({result.reason})")
        return result

    def take_over(self, contact: str, handoff_id: str) -> Context:
        """Reads the packet before the first message, then confirms the handoff."""
        info = self.baton.get_context(contact, self.name)
        self.baton.acknowledge_handoff(contact, handoff_id, self.name)
        self.known[contact] = info.context
        return info.context


def loop(bots: dict[str, ScriptedBot], contact: str) -> bool:
    """SPEC §1.1: each owner sees the other intent in the same message and hands on."""
    message = "I want to sell my house and buy a new one"
    print(f"\n1. infinite loop? every owner handles {message!r}")
    owners, owner = ["lead"], "lead"
    for _ in range(6):
        result = bots[owner].handle(contact, message)
        if result.decision is not Decision.APPROVED:
            break
        bots[result.target_bot].take_over(contact, result.handoff_id)
        owner = result.target_bot
        owners.append(owner)
    bounced = len(owners) != len(set(owners))
    print(f"   owners: {' -> '.join(owners)}; {'PING-PONG' if bounced else 'no ping-pong'}")
    return not bounced and result.decision is Decision.BLOCKED_CIRCULAR


def context(bots: dict[str, ScriptedBot], contact: str) -> bool:
    """SPEC §1.2: the seller must not ask the timeline the lead already has."""
    print("\n2. context wipe? the lead learns the timeline, then hands off to the seller")
    bots["lead"].handle(contact, "Hi! We're moving in 3 months, budget about 450k")
    result = bots["lead"].handle(contact, "I want to sell my house")
    if result.decision is not Decision.APPROVED:
        return False
    packet = bots["seller"].take_over(contact, result.handoff_id)
    if packet.timeline:
        print(f"  seller: (read timeline {packet.timeline!r}) Great, selling within")
        print(f"          {packet.timeline} — let's look at your home's value.")
    else:
        print("  seller: What's your timeline?   <- the context was lost")
    return packet.timeline == "3 months"


def race(bots: dict[str, ScriptedBot], contact: str, operator: Baton | None) -> bool:
    """SPEC §1.3: two messages at once, each with a different handoff.

    With an ``operator`` client the contact's stored history is checked too.
    """
    print("\n3. race? two messages for the same contact arrive at the same moment")
    messages = ["I want to sell my house", "I want to buy a home"]
    results: list[HandoffResult] = []
    start = threading.Barrier(len(messages))

    def send(message: str) -> None:
        start.wait()
        results.append(bots["lead"].handle(contact, message))

    threads = [threading.Thread(target=send, args=(m,)) for m in messages]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    approved = [r for r in results if r.decision is Decision.APPROVED]
    print(f"   {len(approved)} handoff approved, to {[r.target_bot for r in approved]}")
    if operator is None:
        return len(approved) == 1
    stored = operator.get_contact(contact)
    print(f"   stored: owner {stored.owner}, {len(stored.history)} handoff in its history")
    return len(approved) == 1 and len(stored.history) == 1


def main() -> int:
    """Runs the three scenes against ``--target``; 0 when Baton prevented all three."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="127.0.0.1:7400", help="router HOST:PORT")
    parser.add_argument("--token-file", help="bot token file; {bot} is replaced by the bot id")
    parser.add_argument(
        "--operator-token-file", help="operator token, to read the stored contact (GetContact)"
    )
    args = parser.parse_args()

    def client(bot: str) -> Baton:
        path = args.token_file.replace("{bot}", bot) if args.token_file else None
        return Baton(args.target, token_file=path)

    bots = {name: ScriptedBot(name, client(name)) for name in BOTS}
    # Without tokens anyone may read a contact; with tokens only an operator.
    operator = (
        Baton(args.target, token_file=args.operator_token_file)
        if args.operator_token_file or not args.token_file
        else None
    )
    run = uuid.uuid4().hex[:8]
    checks = {
        "no loop": loop(bots, f"demo-loop-{run}"),
        "context kept": context(bots, f"demo-context-{run}"),
        "one handoff in a race": race(bots, f"demo-race-{run}", operator),
    }
    print()
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    for c in [operator, *(b.baton for b in bots.values())]:
        if c is not None:
            c.close()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
