"""Generate the Python stubs for proto/**/*.proto (`make protos`).

The output is committed so that the service needs no code generator at run
time; tests/unit/test_protos_fresh.py regenerates into a temp dir and fails
when the committed stubs drift from the .proto files.
"""

from __future__ import annotations

import re
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))


# The stubs live in the custos namespace (custos.proto...): protoc names their imports
# after the folder (proto.custos.v1), so they are rewritten as they are written.
_PROTO_IMPORT = re.compile(r"(?<![\w./])proto\.(?=(?:custos|tron)\b)")


def namespaced(text: str) -> str:
    return _PROTO_IMPORT.sub("custos.proto.", text)


def _namespace(out_dir: Path) -> None:
    for path in sorted((out_dir / "proto").rglob("*_pb2*.py*")):
        path.write_text(namespaced(path.read_text(encoding="utf-8")), encoding="utf-8")


# The slim client package (custos-client) carries the same stubs of the API under its
# own module names, written here from the same generator run so they cannot drift.
CLIENT_STUBS = Path("clients/python/custos_client/v1")


def _client_stubs(out_dir: Path) -> None:
    target = out_dir / CLIENT_STUBS
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted((out_dir / "proto" / "custos" / "v1").glob("*_pb2*.py*")):
        text = path.read_text(encoding="utf-8")
        text = text.replace("custos.proto.custos.v1", "custos_client.v1")
        (target / path.name).write_text(text, encoding="utf-8")


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        # protoc's own well-known types (google/protobuf/*.proto), shipped with grpc_tools.
        f"-I{resources.files('grpc_tools') / '_proto'}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    _namespace(out_dir)
    _client_stubs(out_dir)


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
