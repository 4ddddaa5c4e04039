"""Tokens with roles, TLS and client certificates, against the built router."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness import Certificates, Router

import baton_client.aio
from baton_client import Baton, Decision, PermissionDenied, Unauthenticated, Unavailable

LEAD = "lead-token-0123"
SELLER = "seller-token-4567"
OPERATOR = "operator-token-cdef"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Router]:
    """A router with a lead bot, a seller bot and an operator token, from three token sources."""
    directory = tmp_path_factory.mktemp("auth")
    (directory / "lead").write_text(LEAD + "\n")
    (directory / "operator").write_text(OPERATOR)
    config = directory / "baton.toml"
    config.write_text(
        f"""
[[auth.principals]]
role = "bot:lead"
token_file = "{directory / "lead"}"
[[auth.principals]]
role = "bot:seller"
token_sha256 = "{hashlib.sha256(SELLER.encode()).hexdigest()}"
[[auth.principals]]
role = "operator"
token_file = "{directory / "operator"}"
"""
    )
    router = Router("--config", str(config))
    yield router
    router.stop()


def test_a_bot_token_acts_as_its_bot(secured: Router, contact: str, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(LEAD + "\n")
    with Baton(secured.target, token_file=token_file) as lead:
        result = lead.request_handoff(contact, "lead", "I want to sell my house")
    assert result.decision is Decision.APPROVED
    with Baton(secured.target, token=SELLER) as seller:
        assert seller.get_context(contact, "seller").owner == "seller"


def test_missing_or_unknown_tokens_are_unauthenticated(secured: Router, contact: str) -> None:
    for token in (None, "not-a-token"):
        with Baton(secured.target, token=token) as baton, pytest.raises(Unauthenticated):
            baton.request_handoff(contact, "lead", "hello")


def test_a_token_acting_as_another_bot_is_denied(secured: Router, contact: str) -> None:
    with Baton(secured.target, token=LEAD) as lead:
        with pytest.raises(PermissionDenied) as raised:
            lead.request_handoff(contact, "seller", "hello")
        assert raised.value.code is grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(PermissionDenied):
            lead.list_bots()
        with pytest.raises(PermissionDenied), lead.watch_handoffs("seller") as watch:
            next(watch)


def test_operators_use_the_admin_service(secured: Router) -> None:
    with Baton(secured.target, token=OPERATOR) as operator:
        assert len(operator.list_bots()) == 3


async def test_the_asyncio_client_sends_its_token(secured: Router, contact: str) -> None:
    async with baton_client.aio.Baton(secured.target, token=LEAD) as lead:
        assert (await lead.request_handoff(contact, "lead", "hello")).decision is Decision.STAY
    async with baton_client.aio.Baton(secured.target) as anonymous:
        with pytest.raises(Unauthenticated):
            await anonymous.request_handoff(contact, "lead", "hello")


def test_token_and_token_file_are_exclusive(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("x")
    with pytest.raises(ValueError, match="not both"):
        Baton(token="x", token_file=tmp_path / "t")


def tls_router(certs: Certificates, *extra: str, client_cert: bool = False) -> Router:
    """A router serving TLS with ``certs``' server certificate."""
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(),
        certs.client_key.read_bytes() if client_cert else None,
        certs.client_cert.read_bytes() if client_cert else None,
    )
    return Router(
        "--tls-cert",
        str(certs.server_cert),
        "--tls-key",
        str(certs.server_key),
        *extra,
        credentials=credentials,
    )


@pytest.fixture(scope="module")
def tls(certs: Certificates) -> Iterator[Router]:
    """A router serving TLS only."""
    router = tls_router(certs)
    yield router
    router.stop()


def test_tls_with_the_router_ca(tls: Router, certs: Certificates) -> None:
    with Baton(tls.target, tls_ca=certs.ca) as baton:
        assert len(baton.list_bots()) == 3
    with Baton(tls.target, tls_ca=certs.ca.read_bytes()) as baton:
        assert len(baton.list_bots()) == 3


async def test_asyncio_tls_with_the_router_ca(tls: Router, certs: Certificates) -> None:
    async with baton_client.aio.Baton(tls.target, tls_ca=certs.ca) as baton:
        assert len(await baton.list_bots()) == 3


def test_plaintext_or_an_untrusted_ca_cannot_connect(
    tls: Router, other_certs: Certificates
) -> None:
    for ca in (None, other_certs.ca):
        with Baton(tls.target, tls_ca=ca, timeout=2) as baton, pytest.raises(Unavailable):
            baton.list_bots()


def test_client_certificates_when_the_router_requires_them(certs: Certificates) -> None:
    router = tls_router(certs, "--tls-client-ca", str(certs.ca), client_cert=True)
    try:
        with Baton(
            router.target, tls_ca=certs.ca, tls_cert=certs.client_cert, tls_key=certs.client_key
        ) as baton:
            assert len(baton.list_bots()) == 3
        with Baton(router.target, tls_ca=certs.ca, timeout=2) as baton, pytest.raises(Unavailable):
            baton.list_bots()
    finally:
        router.stop()
