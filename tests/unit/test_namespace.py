"""One namespace: the top-level folders are imported as custos.<folder>, and only so.

custos/<folder> is a relative symlink to ../<folder>: python, pytest, mypy and ruff
all see one name per module. A module imported under two names would be two modules
(two registries, two metric sets, isinstance failing across them), so each folder's
__init__ refuses its bare name, and no file may spell one.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("signer", "hsm", "policies", "audit", "proto", "common")
TOPS = "|".join(PACKAGES)
GIT = shutil.which("git") or "git"


def _tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(
        [GIT, "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\0")
    return [ROOT / n for n in names if n.endswith(suffixes) and (ROOT / n).is_file()]


def test_every_top_level_package_is_in_the_namespace_and_nothing_else_is() -> None:
    installed = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    folders = installed - {"tests", "bench"}
    links = {p.name for p in (ROOT / "custos").iterdir() if p.is_symlink()}
    assert folders - {"custos"} == links == set(PACKAGES)
    for name in links:
        assert os.readlink(ROOT / "custos" / name) == f"../{name}"


def test_no_file_imports_a_package_by_its_folder_name() -> None:
    wrong = []
    for path in _tracked(".py", ".pyi"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            wrong += [
                f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in PACKAGES
            ]
    assert wrong == []


def test_no_module_path_in_a_command_a_patch_or_a_config_uses_a_folder_name() -> None:
    # The module run by `python -m` (a command, a subprocess's argv), patch() and
    # import_module() targets, pyproject's entry points and mypy overrides. A quoted
    # "audit.checkpoint" elsewhere is an audit record's kind: data, not a module path.
    known = {  # top.name for any module or folder inside top (also one moved deeper)
        f"{p.relative_to(ROOT).parts[0]}.{part}"
        for p in _tracked(".py")
        if p.relative_to(ROOT).parts[0] in PACKAGES
        for part in p.relative_to(ROOT).with_suffix("").parts[1:]
    }
    name = rf"((?:{TOPS})\.\w+)"
    patterns = [
        rf"-m\s+{name}",
        rf"[\"']-m[\"'],\s*[\"']{name}",
        rf"(?:patch|import_module|find_spec|run_module)\(\s*[\"']{name}",
    ]
    wrong = []
    for path in _tracked(".py", ".toml", "Makefile", "Dockerfile", ".sh", ".md"):
        text = path.read_text(encoding="utf-8")
        found = [m for p in patterns for m in re.finditer(p, text)]
        if path.suffix == ".toml":
            code = "\n".join(line.split(" #")[0] for line in text.splitlines())
            found = [m for p in [*patterns, rf"[\"']{name}"] for m in re.finditer(p, code)]
            text = code
        wrong += [
            f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(1)}"
            for m in found
            if m.group(1) in known
        ]
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES)
def test_a_folder_imported_by_its_bare_name_refuses(package: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {package}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode != 0
    assert f"import custos.{package}, not {package}" in done.stderr


def test_the_namespaced_import_is_the_only_copy() -> None:
    code = (
        "import sys, custos.signer.edge.server, custos.signer.tools.cli\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(PACKAGES)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
