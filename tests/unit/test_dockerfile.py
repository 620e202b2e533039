"""The Dockerfile's promises, read statically (the image cannot be built on these machines)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dependencies_install_from_the_lock_before_any_source_is_copied() -> None:
    steps = _instructions()
    copies = [i for i, (op, _arg) in enumerate(steps) if op == "COPY"]
    lock_install = next(
        i for i, (op, arg) in enumerate(steps) if op == "RUN" and "requirements.lock" in arg
    )
    assert "--require-hashes" in steps[lock_install][1]
    assert "--only-binary=:all:" in steps[lock_install][1]
    before = [steps[i][1] for i in copies if i < lock_install]
    assert before == ["requirements.lock ./"]  # nothing else: a code change keeps the layer
    project_install = next(
        i
        for i, (op, arg) in enumerate(steps)
        if op == "RUN" and "pip install" in arg and " ." in arg
    )
    assert project_install > lock_install
    assert "--no-deps" in steps[project_install][1]  # nothing unpinned after the lock


def test_every_package_and_script_the_image_needs_is_copied() -> None:
    steps = _instructions()
    sources = {arg.split()[0] for op, arg in steps if op == "COPY"}
    for source in sources:
        assert (ROOT / source).exists(), source
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in sources, f"{pattern} is installed but not copied"


def test_healthcheck_uses_the_probe_script_on_the_exposed_port() -> None:
    steps = dict(_instructions())
    assert "/usr/local/bin/custos-healthcheck" in steps["HEALTHCHECK"]
    assert "9464" in steps["EXPOSE"].split()
    probe = (ROOT / "docker" / "healthcheck.py").read_text()
    assert re.search(r"http://127\.0\.0\.1:9464/readyz", probe)
    assert steps["USER"] == "custos"


def test_the_folders_behind_the_namespace_are_copied_with_it() -> None:
    # custos/<name> are symlinks to ../<name>: a COPY of custos alone would install
    # dangling links, and `pip install .` would find no package behind them.
    sources = {arg.split()[0] for op, arg in _instructions() if op == "COPY"}
    assert "custos" in sources
    for link in (ROOT / "custos").iterdir():
        if link.is_symlink():
            assert link.resolve().name in sources, f"{link.name} is linked but not copied"
