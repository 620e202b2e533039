"""The committed gRPC stubs are exactly what `make protos` generates from proto/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_match_the_proto_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert generated, "protoc generated nothing"
    # The server's stubs and the client package's copy (clients/python, custos-client).
    committed = sorted(
        p.relative_to(ROOT)
        for folder in (ROOT / "proto", ROOT / module.CLIENT_STUBS)
        for p in folder.rglob("*_pb2*.py*")
        if p.suffix in (".py", ".pyi")  # not __pycache__
    )
    assert generated == committed
    stale = [str(p) for p in generated if (tmp_path / p).read_bytes() != (ROOT / p).read_bytes()]
    assert not stale, f"stubs out of date, run `make protos`: {stale}"
