"""Calls per second of ``baton_client.Baton`` against the raw generated stub, in the same run.

Both make the same below-threshold ``RequestHandoff`` (the hot path: a STAY
answered from memory) one call at a time, each on its own connection, the
calls interleaved; the client's cost is building the request, metadata (token, trace
context), deadline bookkeeping and the typed result. Target: at most 10 %
fewer calls per second than the raw stub.

    python bench/overhead.py                   # starts the built router itself
    python bench/overhead.py --target 127.0.0.1:7400
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from baton_client import Baton
from baton_client.pb import handoff_pb2, handoff_pb2_grpc

REPO = Path(__file__).resolve().parents[3]


@contextmanager
def router() -> Iterator[str]:
    """Starts the built router in memory on a free port; yields its address."""
    target_dir = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    default = (target_dir if target_dir.is_absolute() else REPO / target_dir) / "debug"
    binary = os.environ.get("BATON_ROUTER_BIN") or str(default / "baton-router")
    cmd = [binary, "--memory", "--listen", "127.0.0.1:0", "--log-format", "json"]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "baton-router serving" in line:
                yield str(json.loads(line)["fields"]["addr"])
                return
        raise SystemExit(f"{binary} exited before serving")
    finally:
        process.terminate()
        process.wait()


def measure(target: str, calls: int) -> tuple[list[float], list[float]]:
    """Per-call seconds of the raw stub and of the client, calls interleaved.

    Interleaving (raw, client, client, raw, …) exposes both to the same load
    on a shared machine, which alternating long rounds does not.
    """
    channel = grpc.insecure_channel(target)
    stub = handoff_pb2_grpc.HandoffServiceStub(channel)
    baton = Baton(target)

    def raw(i: int) -> object:
        request = handoff_pb2.RequestHandoffRequest(
            contact_id=f"bench-{i % 100}",
            source_bot="lead",
            message="hello there",
            request_id=uuid.uuid4().hex,
        )
        return stub.RequestHandoff(request, timeout=10)

    def client(i: int) -> object:
        return baton.request_handoff(f"bench-{i % 100}", "lead", "hello there")

    def timed(call: Callable[[int], object], i: int) -> float:
        started = time.perf_counter()
        call(i)
        return time.perf_counter() - started

    for i in range(200):  # warm up the connection and both code paths
        raw(i), client(i)
    raws, clients = [], []
    for i in range(calls):
        pair = (raw, client) if i % 2 else (client, raw)
        first, second = (timed(f, i) for f in pair)
        raws.append(first if pair[0] is raw else second)
        clients.append(second if pair[0] is raw else first)
    baton.close()
    channel.close()
    return raws, clients


def main() -> None:
    """Prints calls/s of both and the client's overhead."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", help="a running router (default: start the built one)")
    parser.add_argument("--calls", type=int, default=10_000, help="calls of each kind")
    args = parser.parse_args()
    if args.target:
        raws, clients = measure(args.target, args.calls)
    else:
        with router() as target:
            raws, clients = measure(target, args.calls)
    for name, times in (("raw stub", raws), ("Baton client", clients)):
        per_s = len(times) / sum(times)
        p50 = statistics.median(times) * 1e6
        print(f"{name:<13} {per_s:8.0f} calls/s   p50 {p50:6.0f} us")
    overhead = 1 - sum(raws) / sum(clients)
    extra = (statistics.median(clients) - statistics.median(raws)) * 1e6
    print(
        f"overhead      {100 * overhead:8.1f} %  of calls/s (target <= 10 %), {extra:+.0f} us p50"
    )


if __name__ == "__main__":
    main()
