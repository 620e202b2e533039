"""`custos` starts without the heavy modules: only the commands that use them load them.

Every CLI run builds the whole parser; tests and operators run it hundreds of
times. What must not be imported for that is checked in a fresh interpreter
(this one has imported everything already).
"""

from __future__ import annotations

import json
import subprocess
import sys

from custos.hsm import import_material
from custos.signer.tools import cli_import

# Slow to import and needed only by some commands: the policy engine and its
# pydantic models, the config models, the key material (cryptography, coincurve,
# BIP32), the server and the stores.
HEAVY = (
    "pydantic",
    "custos.policies.document",
    "custos.policies.evaluate",
    "custos.policies.ceremonies",
    "custos.signer.edge.config",
    "custos.signer.edge.server",
    "custos.signer.usecases.key_import",
    "custos.signer.chains.registry",
    "custos.signer.store.sql",
    "custos.hsm.import_material",
    "custos.hsm.pool",
    "cryptography",
    "coincurve",
    "qrcode",
)


def _loaded_after(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_building_the_parser_loads_no_heavy_module() -> None:
    loaded = _loaded_after("from custos.signer.tools import cli\ncli.build_parser()")
    assert "custos.signer.tools.cli_policy" in loaded  # the probe did build the whole parser
    assert sorted(m for m in HEAVY if m in loaded) == []


def test_the_import_parser_shows_the_import_materials_own_choices() -> None:
    # Repeated in signer.tools.cli_import so that the parser need not load the module.
    assert cli_import.SOURCES == import_material.SOURCES
    assert cli_import.DEFAULT_PATH == import_material.DEFAULT_PATH
