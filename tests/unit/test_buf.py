"""The API protos pass `buf lint` and make no breaking change against the released API.

buf comes from npm into .tools/buf (`make test` installs it). Outside CI a
machine without it skips these tests; with CI=true a missing buf fails them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = ROOT / "proto" / "custos-v1.image.json"
API = ROOT / "proto" / "custos" / "v1"


def _buf() -> str:
    local = ROOT / ".tools" / "buf" / "node_modules" / ".bin" / "buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("buf is not installed (make test installs it into .tools/buf)")
        pytest.skip("buf is not installed; `make test` installs it into .tools/buf")
    return found


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_buf(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_api_protos_pass_buf_lint() -> None:
    result = _run(["lint"], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_protos_make_no_breaking_change_against_the_released_image() -> None:
    result = _run(["breaking", "--against", str(IMAGE)], ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _copy_module(tmp_path: Path) -> Path:
    """The repository's buf module and API protos, in a scratch folder to damage."""
    shutil.copy(ROOT / "buf.yaml", tmp_path / "buf.yaml")
    shutil.copytree(
        API, tmp_path / "proto" / "custos" / "v1", ignore=shutil.ignore_patterns("*.py*")
    )
    return tmp_path / "proto" / "custos" / "v1"


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        # A renumbered field reads old clients' bytes as the wrong field.
        ("string request_id = 1;", "string request_id = 99;", "FIELD_NO_DELETE"),
        # A changed go_package breaks every Go caller's imports.
        ('option go_package = "custos.dev/api/custos/v1;custosv1";', "", "FILE_SAME_GO_PACKAGE"),
    ],
)
def test_breaking_check_catches_a_breaking_change(
    tmp_path: Path, old: str, new: str, rule: str
) -> None:
    api = _copy_module(tmp_path)
    signer = api / "signer.proto"
    text = signer.read_text()
    assert old in text
    signer.write_text(text.replace(old, new, 1))
    result = _run(["breaking", "--against", str(IMAGE), "--error-format=json"], tmp_path)
    assert result.returncode != 0
    assert rule in result.stdout + result.stderr


def test_lint_catches_a_badly_named_field(tmp_path: Path) -> None:
    api = _copy_module(tmp_path)
    signer = api / "signer.proto"
    signer.write_text(signer.read_text().replace("string request_id = 1;", "string RequestId = 1;"))
    result = _run(["lint", "--error-format=json"], tmp_path)
    assert result.returncode != 0
    assert "FIELD_LOWER_SNAKE_CASE" in result.stdout + result.stderr
