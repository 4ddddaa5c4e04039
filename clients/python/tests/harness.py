"""The test harness: the built ``baton-router`` on a free loopback port, certificates, polling.

The router binary comes from ``BATON_ROUTER_BIN``, else
``$CARGO_TARGET_DIR/debug/baton-router``, else ``target/debug/baton-router``
at the repository root (``scripts/test`` builds it first).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

CLIENT_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = CLIENT_DIR.parent.parent

T = TypeVar("T")


def router_bin() -> Path:
    """Where the router binary is."""
    explicit = os.environ.get("BATON_ROUTER_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "debug" / "baton-router"


def free_port() -> int:
    """A loopback port that was free a moment ago (for a router that must come back on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(what: str, check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """Polls ``check`` until it returns something other than ``None``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _health_check(channel: grpc.Channel, timeout: float) -> bool:
    """``grpc.health.v1.Health/Check`` with no stubs: SERVING is field 1 = 1 on the wire."""
    check = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=lambda _: b"",
        response_deserializer=lambda raw: raw,
    )
    try:
        return bool(check(b"", timeout=timeout) == b"\x08\x01")
    except grpc.RpcError:
        return False


class Router:
    """A ``baton-router`` process on ``127.0.0.1``; its log lines are kept and echoed to stderr."""

    def __init__(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        memory: bool = True,
        credentials: grpc.ChannelCredentials | None = None,
        port: int = 0,
    ) -> None:
        self.args = list(args)
        self.env = dict(env or {})
        self.credentials = credentials
        self.port = port
        self.data_dir = None if memory else Path(tempfile.mkdtemp(prefix="baton-py-"))
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._process: subprocess.Popen[str] | None = None
        self.start()

    @property
    def target(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts the binary and waits until its gRPC health check says SERVING."""
        store = ["--data-dir", str(self.data_dir)] if self.data_dir else ["--memory"]
        cmd = [str(router_bin()), *store, "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--log-format", "json", *self.args]
        env = {**os.environ, "RUST_LOG": "info", **self.env}
        first = len(self.lines)
        self._process = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        threading.Thread(target=self._pump, args=(self._process,), daemon=True).start()
        line = self.wait_for_log("baton-router serving", timeout=30, after=first)
        self.port = int(json.loads(line)["fields"]["addr"].rsplit(":", 1)[1])
        secure = self.credentials
        channel = (
            grpc.secure_channel(self.target, secure)
            if secure
            else grpc.insecure_channel(self.target)
        )
        with channel:
            eventually("the router to serve", lambda: _health_check(channel, 1.0) or None)

    def _pump(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            sys.stderr.write(f"[baton-router] {line}\n")
            with self._seen:
                self.lines.append(line)
                self._seen.notify_all()

    def wait_for_log(self, text: str, *, timeout: float = 15.0, after: int = 0) -> str:
        """The first log line from index ``after`` on that contains ``text``."""
        deadline = time.monotonic() + timeout
        with self._seen:
            while True:
                for line in self.lines[after:]:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                code = self._process.poll() if self._process else None
                if code is not None:
                    raise AssertionError(f"baton-router exited ({code}) before logging {text!r}")
                if left <= 0:
                    raise AssertionError(f"baton-router never logged {text!r}")
                self._seen.wait(min(left, 0.2))

    def logged(self, text: str) -> bool:
        """True when a log line so far contains ``text``."""
        with self._seen:
            return any(text in line for line in self.lines)

    def kill(self) -> None:
        """``kill -9``."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def terminate(self) -> None:
        """SIGTERM, and waits for the graceful shutdown."""
        if self._process is not None:
            self._process.terminate()
            self._process.wait(15)
            self._process = None

    def restart(self, *, graceful: bool = False) -> None:
        """Stops the router (SIGTERM or SIGKILL), starts it again on the same port and data."""
        if graceful:
            self.terminate()
        else:
            self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; removes the data directory."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


@dataclass(frozen=True)
class Certificates:
    """A test CA, a server certificate for localhost/127.0.0.1 and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)}: {done.stderr}")


def _leaf(ca: tuple[Path, Path], stem: Path, subject: str, extensions: str) -> tuple[Path, Path]:
    """A key and a certificate for ``subject`` signed by ``ca`` (certificate, key)."""
    key, csr, cert, ext = (Path(f"{stem}.{x}") for x in ("key", "csr", "pem", "ext"))
    ext.write_text(extensions + "\n")
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return cert, key


def make_certificates(directory: Path, name: str) -> Certificates:
    """Generates a CA and a server and a client certificate it signed, with openssl."""
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca), "-days", "2", "-subj", f"/CN={name} test CA",
    )  # fmt: skip
    server = _leaf(
        (ca, ca_key),
        directory / f"{name}-server",
        "/CN=localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth",
    )
    client = _leaf(
        (ca, ca_key),
        directory / f"{name}-client",
        "/CN=baton-test-client",
        "extendedKeyUsage=clientAuth",
    )
    return Certificates(ca, server[0], server[1], client[0], client[1])
