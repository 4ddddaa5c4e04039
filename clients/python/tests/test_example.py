"""``examples/three_bots.py`` runs to completion against the router and shows all three checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from harness import CLIENT_DIR, Router

EXAMPLE = CLIENT_DIR / "examples" / "three_bots.py"


def run_example(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_example_prevents_all_three_failures(router: Router) -> None:
    out = run_example("--target", router.target)
    assert "owners: lead -> seller -> buyer; no ping-pong" in out
    assert "BLOCKED_CIRCULAR -> seller" in out
    assert "(read timeline '3 months')" in out
    assert "1 handoff approved" in out
    assert out.splitlines()[-3:] == [
        "ok   no loop",
        "ok   context kept",
        "ok   one handoff in a race",
    ]


def test_the_example_uses_one_token_per_bot(tmp_path: Path) -> None:
    principals = []
    for role in ("lead", "buyer", "seller", "operator"):
        (tmp_path / f"{role}.token").write_text(f"{role}-secret-token\n")
        kind = "operator" if role == "operator" else f"bot:{role}"
        principals.append(
            f'[[auth.principals]]\nrole = "{kind}"\ntoken_file = "{tmp_path / role}.token"\n'
        )
    (tmp_path / "baton.toml").write_text("\n".join(principals))
    router = Router("--config", str(tmp_path / "baton.toml"))
    try:
        out = run_example(
            "--target",
            router.target,
            "--token-file",
            str(tmp_path / "{bot}.token"),
            "--operator-token-file",
            str(tmp_path / "operator.token"),
        )
    finally:
        router.stop()
    assert "stored: owner" in out and "1 handoff in its history" in out


@pytest.mark.parametrize("flag", ["--help"])
def test_the_example_documents_its_flags(flag: str) -> None:
    out = run_example(flag)
    assert "--target" in out and "--token-file" in out
