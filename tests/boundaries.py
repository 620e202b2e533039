"""What importing a set of modules loads, seen in a fresh interpreter.

The import-boundary tests (which package may depend on which) ask this, not the
source text, so an import made indirectly (through a module in between, or lazily
at import time) is seen as well.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_by(*modules: str) -> set[str]:
    """Every module in sys.modules after importing `modules` into a new interpreter."""
    code = (
        "import importlib, json, sys\n"
        f"for name in {list(modules)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(done.stdout))


def modules_of(package: str) -> list[str]:
    """The dotted names of a custos package's modules (custos.<folder>...), from its files."""
    folder = ROOT / package.removeprefix("custos.").replace(".", "/")
    return sorted(
        ".".join([package, *path.relative_to(folder).with_suffix("").parts])
        for path in folder.rglob("*.py")
        if path.name != "__init__.py" and "_pb2" not in path.name
    )


def under(loaded: set[str], *prefixes: str) -> list[str]:
    """The loaded modules that are one of `prefixes` or inside one of them."""
    return sorted(m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in prefixes))
