"""How to reach the router: target, credentials, token metadata and channel options.

Shared by the sync and asyncio clients. A token goes in the ``authorization:
Bearer`` metadata of every call (the router keeps only its SHA-256); TLS
uses the given CA (the system roots when ``tls=True`` without one) and, for
routers that require client certificates, a certificate and key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from baton_client._telemetry import trace_metadata

__all__ = ["Connection", "PemSource"]

PemSource: TypeAlias = str | os.PathLike[str] | bytes
"""A PEM file path, or the PEM bytes themselves."""

Metadata: TypeAlias = tuple[tuple[str, str], ...]

# Come back quickly after a router restart: gRPC's default reconnect backoff
# grows to two minutes, far longer than a rolling restart takes.
_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    return Path(source).read_bytes()


def _token(token: str | None, token_file: str | os.PathLike[str] | None) -> str | None:
    if token is not None and token_file is not None:
        raise ValueError("give token= or token_file=, not both")
    if token_file is not None:
        token = Path(token_file).read_text()
    if token is None:
        return None
    token = token.strip()
    if not token:
        raise ValueError("the token is empty")
    return token


@dataclass(frozen=True)
class Connection:
    """Everything needed to open a channel and authenticate its calls."""

    target: str
    credentials: grpc.ChannelCredentials | None
    metadata: Metadata
    options: tuple[tuple[str, Any], ...]

    @classmethod
    def build(
        cls,
        target: str,
        *,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: bool | None = None,
        tls_ca: PemSource | None = None,
        tls_cert: PemSource | None = None,
        tls_key: PemSource | None = None,
        tls_server_name: str | None = None,
        options: tuple[tuple[str, Any], ...] = (),
    ) -> Connection:
        """Reads the token and PEM files once, up front, so a missing file fails at construction."""
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert= and tls_key= go together")
        secure = tls if tls is not None else any(x is not None for x in (tls_ca, tls_cert))
        if tls is False and (tls_ca or tls_cert):
            raise ValueError("tls=False with TLS files")
        credentials = (
            grpc.ssl_channel_credentials(
                root_certificates=_pem(tls_ca),
                private_key=_pem(tls_key),
                certificate_chain=_pem(tls_cert),
            )
            if secure
            else None
        )
        bearer = _token(token, token_file)
        extra = (("grpc.ssl_target_name_override", tls_server_name),) if tls_server_name else ()
        return cls(
            target=target,
            credentials=credentials,
            metadata=(("authorization", f"Bearer {bearer}"),) if bearer else (),
            options=_OPTIONS + extra + tuple(options),
        )

    def call_metadata(self) -> Metadata:
        """The metadata for one call: the token, plus the current trace context."""
        trace = trace_metadata()
        return self.metadata + trace if trace else self.metadata
