"""gRPC failures become exceptions that carry the status code and the field the router named."""

from __future__ import annotations

import grpc
import pytest

import baton_client.aio
from baton_client import (
    Baton,
    BatonError,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Outcome,
    PermissionDenied,
    Signal,
)
from baton_client.errors import from_status, parse_field


@pytest.mark.parametrize(
    ("contact_id", "source", "message", "signals", "field"),
    [
        ("", "lead", "hi", (), "contact_id"),
        ("c\x071", "lead", "hi", (), "contact_id"),
        ("c-1", "nobody", "hi", (), "source_bot"),
        ("c-1", "lead", "x" * 9000, (), "message"),
        ("c-1", "lead", "hi", (Signal("seller", 1.5),), "signals[0].confidence"),
        ("c-1", "lead", "hi", (Signal("seller", 0.5), Signal("", 0.5)), "signals[1].target_bot"),
    ],
)
def test_invalid_requests_name_the_field(
    baton: Baton,
    contact_id: str,
    source: str,
    message: str,
    signals: tuple[Signal, ...],
    field: str,
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        baton.request_handoff(contact_id, source, message, signals=signals)
    assert raised.value.field == field
    assert raised.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert f"field '{field}'" in raised.value.message


def test_unknown_contacts_and_handoffs_are_not_found(baton: Baton, contact: str) -> None:
    with pytest.raises(NotFound) as raised:
        baton.get_context(contact)
    assert (raised.value.field, raised.value.message) == (None, f"contact '{contact}' not found")
    # A bot is told the same of a handoff that does not exist as of one that
    # is not its own: nothing about what exists (SPEC §6).
    with pytest.raises(PermissionDenied):
        baton.acknowledge_handoff(contact, "no-such-handoff", "seller")
    with pytest.raises(NotFound):
        baton.get_contact(contact)


def test_an_unspecified_outcome_names_the_field(baton: Baton) -> None:
    with pytest.raises(InvalidArgument) as raised:
        baton.record_outcome("some-handoff", Outcome.UNSPECIFIED)
    assert raised.value.field == "outcome"


def test_a_bot_that_does_not_own_the_contact_cannot_read_it(baton: Baton, contact: str) -> None:
    baton.request_handoff(contact, "lead", "I want to sell my house")
    with pytest.raises(PermissionDenied) as raised:
        baton.get_context(contact, "lead")
    assert "does not own" in raised.value.message
    assert "seller" not in raised.value.message


async def test_asyncio_errors_carry_the_field(abaton: baton_client.aio.Baton) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await abaton.request_handoff("c-1", "lead", "hi", signals=[Signal("seller", -1)])
    assert raised.value.field == "signals[0].confidence"


def test_every_error_is_a_baton_error_with_its_code() -> None:
    error = from_status(grpc.StatusCode.DATA_LOSS, "watcher fell behind")
    assert type(error) is BatonError
    assert (error.code, error.field, str(error)) == (
        grpc.StatusCode.DATA_LOSS,
        None,
        "data_loss: watcher fell behind",
    )
    assert parse_field("field 'context' is 70000 bytes, more than 65536") == "context"


def test_errors_can_be_raised_by_test_doubles() -> None:
    error = InvalidArgument("must be 1..=128 bytes", field="contact_id")
    assert (error.code, error.field) == (grpc.StatusCode.INVALID_ARGUMENT, "contact_id")
    assert str(error) == "invalid_argument: must be 1..=128 bytes"


def test_a_deadline_the_router_enforced_is_a_deadline() -> None:
    error = from_status(grpc.StatusCode.CANCELLED, "Timeout expired")
    assert isinstance(error, DeadlineExceeded)
    assert type(from_status(grpc.StatusCode.CANCELLED, "client went away")) is BatonError
