"""The committed stubs in ``src/baton_client/pb`` are what ``tools/generate_stubs.py`` makes now.

Change a ``.proto`` without regenerating and this fails; the fix is
``python tools/generate_stubs.py`` in ``clients/python``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from harness import CLIENT_DIR

from baton_client import BotHealth, Decision, Outcome
from baton_client.pb import admin_pb2, types_pb2


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_stubs", CLIENT_DIR / "tools" / "generate_stubs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    fresh = {p.name: p.read_text() for p in _generator().generate(tmp_path)}
    committed_dir = CLIENT_DIR / "src" / "baton_client" / "pb"
    committed = {
        p.name: p.read_text() for p in committed_dir.iterdir() if p.suffix in (".py", ".pyi")
    }
    assert sorted(committed) == sorted(fresh)
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale stubs {stale}: run `python tools/generate_stubs.py`"


def test_the_python_enums_mirror_the_proto_enums() -> None:
    def names(wrapper: object, prefix: str) -> dict[str, int]:
        values = wrapper.items()  # type: ignore[attr-defined]
        return {name.removeprefix(prefix): number for name, number in values}

    assert names(types_pb2.Decision, "DECISION_") == {d.name: d.value for d in Decision}
    assert names(types_pb2.Outcome, "OUTCOME_") == {o.name: o.value for o in Outcome}
    assert names(admin_pb2.BotHealth, "BOT_HEALTH_") == {h.name: h.value for h in BotHealth}
