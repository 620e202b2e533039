"""The example policy and its `custos policy test` cases say what they do."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from custos.policies.schema import load_yaml
from custos.signer.tools.cli_policy import cmd_test

EXAMPLES = Path(__file__).resolve().parents[2] / "policies" / "examples"


@pytest.mark.parametrize("cases", sorted(EXAMPLES.glob("*-cases.yaml")), ids=lambda p: p.name)
def test_every_example_case_gets_the_decision_it_expects(
    cases: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = EXAMPLES / cases.name.replace("-cases.yaml", ".yaml")
    assert cmd_test(argparse.Namespace(policy=str(policy), cases=str(cases))) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = load_yaml(cases.read_text())
    assert len(lines) == len(expected) + 1
    for line, case in zip(lines, expected, strict=False):
        assert line.startswith(f"{case['name']}: {case['expect']}"), line
