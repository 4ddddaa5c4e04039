"""Pure pieces, no router: the context packet, result conversion, backoff, dedupe, connection."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton_client import Budget, Context, Decision, HandoffResult, PropertyPreferences
from baton_client._connection import Connection
from baton_client._retry import Backoff
from baton_client._stream import SeenIds
from baton_client.pb import handoff_pb2, types_pb2

FULL = Context(
    budget=Budget(250_000, 400_000, "EUR"),
    timeline="3 months",
    property_preferences=PropertyPreferences(
        locations=["Austin"], property_types=["condo"], bedrooms_min=0, must_haves=["garage"]
    ),
    property_address="1 Main St",
    temperature="hot",
    qualification_score=0.0,
    conversation_summary="wants to sell, then buy",
    answered_questions=["timeline", "budget"],
    pending_intents=["buyer"],
    attributes={"source": "web"},
)


def test_a_full_context_survives_the_wire() -> None:
    wire = types_pb2.ContextPacket.FromString(FULL.to_proto().SerializeToString())
    assert Context.from_proto(wire) == FULL


def test_unset_and_zero_stay_different() -> None:
    empty = Context.from_proto(types_pb2.ContextPacket())
    assert empty == Context()
    assert empty.qualification_score is None and empty.is_empty()
    zero = Context.from_proto(Context(qualification_score=0.0).to_proto())
    assert zero.qualification_score == 0.0
    prefs = FULL.property_preferences
    assert prefs is not None and (prefs.bedrooms_min, prefs.bathrooms_min) == (0, None)


def test_the_dict_form_round_trips_and_holds_only_what_is_set() -> None:
    data = FULL.to_dict()
    assert Context.from_dict(data) == FULL
    assert Context(timeline="soon").to_dict() == {"timeline": "soon"}
    with pytest.raises(ValueError, match="timelin"):
        Context.from_dict({"timelin": "soon"})


def test_results_convert_units_and_unknown_decisions() -> None:
    reply = handoff_pb2.RequestHandoffResponse(
        decision=types_pb2.Decision.ValueType(99), retry_after_ms=1500
    )
    result = HandoffResult.from_proto(reply, request_id="r", attempts=2)
    assert (result.decision, result.retry_after, result.context) == (
        Decision.UNSPECIFIED,
        1.5,
        None,
    )
    assert (result.request_id, result.attempts) == ("r", 2)


def test_backoff_grows_honours_retry_after_and_the_deadline() -> None:
    backoff = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
    assert [backoff.delay(n) for n in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    assert backoff.delay(0, retry_after=0.25) == 0.25
    assert backoff.wait(0, retries=3, remaining=5.0) == 0.1
    assert backoff.wait(3, retries=3, remaining=5.0) is None
    # Waiting 0.25 and then up to 0.25 for the lock would overrun 0.4 s.
    assert backoff.wait(0, retries=3, remaining=0.4, retry_after=0.25) is None


def test_seen_ids_forget_the_oldest() -> None:
    seen = SeenIds(capacity=2)
    assert (seen.add("a"), seen.add("b"), seen.add("a")) == (True, True, False)
    # "a" was refreshed, so "c" pushes out "b": "b" is forgotten, "a" still known.
    assert seen.add("c") is True
    assert (seen.add("a"), seen.add("b")) == (False, True)


def test_a_token_file_is_read_once_and_stripped(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  secret\n")
    conn = Connection.build("h:1", token_file=tmp_path / "token")
    assert conn.metadata == (("authorization", "Bearer secret"),)
    assert conn.credentials is None
    with pytest.raises(ValueError, match="empty"):
        Connection.build("h:1", token=" \n")
    with pytest.raises(ValueError, match="together"):
        Connection.build("h:1", tls_cert=b"x")
