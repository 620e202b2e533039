"""The slim client package (clients/python, custos-client): its README's example runs
against a real server, in an interpreter that loads nothing of the server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"


def _run(code: str, cwd: Path = CLIENT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,  # not the repository: custos is not importable from there
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(CLIENT), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _example() -> str:
    readme = (CLIENT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    return code


def test_the_readme_example_lists_the_keys_through_mtls(server: RunningServer) -> None:
    key_id = f"client-example-{uuid.uuid4().hex[:8]}"
    server.create_key(key_id)
    code = _with_profile(server, "payments")
    # What the example loaded besides the standard library: the client, grpc, protobuf.
    report = (
        "\nimport json, sys\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules}"
        " - set(sys.stdlib_module_names))))\n"
    )
    done = _run(code + report)
    assert done.returncode == 0, done.stderr
    *listing, loaded = done.stdout.splitlines()
    assert f"{key_id} KEY_STATE_ENABLED" in listing
    # The same interpreter importing grpc and protobuf alone (and whatever this
    # environment's site hooks and grpc's optional plugins load with them).
    baseline = _run("import grpc, google.protobuf.message" + report)
    assert baseline.returncode == 0, baseline.stderr
    extra = set(json.loads(loaded)) - set(json.loads(baseline.stdout))
    assert extra == {"custos_client"}


def _with_profile(server: RunningServer, name: str) -> str:
    profile = server.env.profile(name)
    return (
        _example()
        .replace('"localhost:50051"', repr(f"127.0.0.1:{server.port}"))
        .replace('"ca.pem"', repr(str(profile.ca_cert)))
        .replace('"payments.pem"', repr(str(profile.cert)))
        .replace('"payments.key"', repr(str(profile.key)))
    )


def test_a_certificate_whose_subject_custos_does_not_know_is_refused(
    server: RunningServer, tmp_path: Path
) -> None:
    # Issued by the same CA (TLS succeeds), but no [[identities]] entry names it.
    done = _run(_with_profile(server, "stranger"), cwd=tmp_path)
    assert done.returncode != 0
    assert "StatusCode.PERMISSION_DENIED" in done.stderr or "UNAUTHENTICATED" in done.stderr
    assert "client-example" not in done.stdout


def test_the_client_package_depends_on_grpcio_and_protobuf_only() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ]", d)[0] for d in project["dependencies"]}
    assert names == {"grpcio", "protobuf"}
