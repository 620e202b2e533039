"""requirements.lock is current with pyproject.toml and pins everything with hashes.

Offline: compares the inputs recorded in the lock's header with pyproject.toml,
and checks each pin against its requirement. `make lock` regenerates it.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
STALE = "requirements.lock is stale: run `make lock` and commit it"


def _lock_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("custos_lock", ROOT / "scripts" / "lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["custos_lock"] = module
    spec.loader.exec_module(module)
    return module


def _pins(text: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from a pip requirements file with hashes."""
    pins: dict[str, tuple[str, list[str]]] = {}
    for entry in re.split(r"\n(?=[^\s#])", text):
        first = entry.split("\n", 1)[0]
        if first.startswith("#") or not first.strip():
            continue
        match = re.match(r"([A-Za-z0-9._-]+)==([^\s\\;]+)", first)
        assert match, f"not an exact pin: {first!r}"
        pins[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:(\w{64})", entry))
    return pins


def test_lock_header_matches_pyproject() -> None:
    script = _lock_script()
    assert _recorded(script) == script.inputs(), STALE


def test_every_requirement_is_pinned_within_its_specifier_with_hashes() -> None:
    script = _lock_script()
    pins = _pins((ROOT / "requirements.lock").read_text())
    assert pins
    wanted = [Requirement(r) for group in script.inputs().values() for r in group]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in the lock; {STALE}"
        version, _hashes = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} does not satisfy {requirement}; {STALE}"
        )
    unhashed = [name for name, (_version, hashes) in pins.items() if not hashes]
    assert not unhashed, f"pins without hashes: {unhashed}"


def _recorded(script: ModuleType) -> object:
    text = (ROOT / "requirements.lock").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith(script.HEADER)]
    return json.loads(line[len(script.HEADER) :])


def test_an_edited_dependency_makes_the_lock_stale(tmp_path: Path) -> None:
    """A loosened, added or removed requirement each differ from the recorded inputs."""
    script = _lock_script()
    original = (ROOT / "pyproject.toml").read_text()
    assert script.inputs(ROOT / "pyproject.toml") == _recorded(script)
    for old, new in [
        ('"grpcio>=1.85.1",', '"grpcio>=1.50",'),
        ('"pyotp>=2.9",', '"pyotp>=2.9",\n    "requests>=2",'),
        ('"rlp>=4",', ""),
        ('requires = ["setuptools>=68"]', 'requires = ["setuptools>=61"]'),
    ]:
        assert old in original
        edited = tmp_path / "pyproject.toml"
        edited.write_text(original.replace(old, new, 1))
        assert script.inputs(edited) != _recorded(script), new


def test_pin_parser_reads_pins_and_hashes() -> None:
    pins = _pins("a==1.0 \\\n    --hash=sha256:" + "0" * 64 + "\n    # via b\nc==2\n")
    assert pins == {"a": ("1.0", ["0" * 64]), "c": ("2", [])}
