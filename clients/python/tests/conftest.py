"""Fixtures: the built router on a free loopback port, clients connected to it, certificates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from harness import Certificates, Router, make_certificates, router_bin

import baton_client.aio
from baton_client import Baton


@pytest.fixture(scope="session", autouse=True)
def _router_is_built() -> None:
    if not router_bin().is_file():
        pytest.fail(
            f"no router binary at {router_bin()}: run `cargo build --bin baton-router` "
            "or set BATON_ROUTER_BIN"
        )


@pytest.fixture(scope="module")
def router() -> Iterator[Router]:
    """One in-memory router per test module (tests use distinct contact ids)."""
    r = Router()
    yield r
    r.stop()


@pytest.fixture
def baton(router: Router) -> Iterator[Baton]:
    """A sync client of the module's router."""
    with Baton(router.target) as client:
        yield client


@pytest.fixture
async def abaton(router: Router) -> AsyncIterator[baton_client.aio.Baton]:
    """An asyncio client of the module's router."""
    async with baton_client.aio.Baton(router.target) as client:
        yield client


@pytest.fixture
def contact(request: pytest.FixtureRequest) -> str:
    """A contact id no other test uses."""
    return f"{request.node.name[:60]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A CA with a server certificate for 127.0.0.1 and a client certificate."""
    return make_certificates(Path(tmp_path_factory.mktemp("tls")), "good")


@pytest.fixture(scope="session")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """Certificates from a CA nobody trusts."""
    return make_certificates(Path(tmp_path_factory.mktemp("tls-other")), "other")
