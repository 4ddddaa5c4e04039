"""Regenerate the committed gRPC stubs in ``src/baton_client/pb`` from ``proto/``.

Run ``python tools/generate_stubs.py`` from ``clients/python`` after changing a
``.proto`` file; ``tests/test_stubs_fresh.py`` fails while the committed stubs
differ from what this produces. protoc writes ``baton/v1/<name>_pb2*.py`` with
absolute ``baton.v1`` imports; they are flattened into one package and their
imports pointed at ``baton_client.pb`` so the client never claims the
top-level ``baton`` name.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

HERE = Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent.parent / "proto"
PACKAGE_DIR = HERE.parent / "src" / "baton_client" / "pb"
PROTO_PACKAGE = "baton/v1"
IMPORT = re.compile(r"^from baton\.v1 import ", re.MULTILINE)
INIT = '"""Generated protobuf and gRPC modules for ``baton.v1`` (see tools/generate_stubs.py)."""\n'


def _plugin(name: str) -> str:
    """Path of a protoc plugin installed next to this interpreter."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: pip install mypy-protobuf")
    return found


def generate(out_dir: Path) -> list[Path]:
    """Writes the stubs for every ``proto/baton/v1/*.proto`` into ``out_dir``."""
    protos = sorted((PROTO_ROOT / PROTO_PACKAGE).glob("*.proto"))
    with tempfile.TemporaryDirectory() as raw:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={raw}",
            f"--grpc_python_out={raw}",
            f"--mypy_out=quiet:{raw}",
            f"--mypy_grpc_out=quiet:{raw}",
            *(str(p) for p in protos),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = [out_dir / "__init__.py"]
        written[0].write_text(INIT)
        for source in sorted((Path(raw) / PROTO_PACKAGE).iterdir()):
            text = IMPORT.sub("from baton_client.pb import ", source.read_text())
            target = out_dir / source.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    """Command line: regenerate into ``--out`` (the package by default)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="output directory")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
