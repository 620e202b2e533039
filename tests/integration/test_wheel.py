"""The wheel installs one top-level package, custos, whose modules import from it alone.

Built from the working tree's tracked files (the custos/ symlinks included), the way
`pip install .` in the Dockerfile builds it, and imported from the unpacked wheel in a
fresh interpreter that cannot see the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GIT = shutil.which("git") or "git"


def _copy_tracked(target: Path) -> None:
    names = subprocess.run(
        [GIT, "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    for name in filter(None, names):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(os.readlink(source))
        elif source.is_file():
            shutil.copy2(source, copy)


def test_the_wheel_holds_only_the_custos_namespace_and_imports_from_it(tmp_path: Path) -> None:
    source, out, unpacked = tmp_path / "src", tmp_path / "dist", tmp_path / "site"
    _copy_tracked(source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("custos-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(unpacked)
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"custos"}
    for expected in (
        "custos/signer/tools/cli.py",
        "custos/signer/edge/server.py",
        "custos/common/secp256k1.py",
        "custos/proto/custos/v1/signer_pb2.py",
        "custos/proto/custos/v1/signer.proto",
        "custos/policies/policy.schema.json",
        "custos/signer/store/migrations/__init__.py",
    ):
        assert expected in names
    (info,) = {n.split("/")[0] for n in names if n.endswith(".dist-info/entry_points.txt")}
    entry_points = (unpacked / info / "entry_points.txt").read_text()
    assert "custos = custos.signer.tools.cli:main" in entry_points

    code = (
        "import sys, custos.signer.edge.server, custos.signer.tools.cli\n"
        "files = {m.__file__ for n, m in sys.modules.items() if n.startswith('custos')}\n"
        "print('\\n'.join(sorted(f for f in files if f)))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(unpacked)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert files
    assert all(Path(f).is_relative_to(unpacked) for f in files), files
