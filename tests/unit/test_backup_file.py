"""The backup file's parser and the verified-backup metric, without a token."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from custos.audit.record import AuditEvent
from custos.hsm.backup import BackupError
from custos.hsm.backup_file import FORMAT, parse
from custos.signer.store.factory import open_store
from custos.signer.tools.cli import main
from custos.signer.usecases.backups import VerifiedBackupAge

BODY = {
    "format": FORMAT,
    "created_at_ms": 1,
    "backup_key_check": "00" * 32,
    "keys": [{"key_id": "k1", "public_key": "04" + "11" * 64, "wrapped": "AAAA", "record": {}}],
}


def _file(body: object, tag: str = "00" * 40) -> bytes:
    return json.dumps({"body": body, "tag": tag}).encode()


def test_a_well_formed_file_parses_and_its_body_is_canonical() -> None:
    contents = parse(_file(BODY))
    assert [e.key_id for e in contents.entries] == ["k1"]
    assert contents.body == json.dumps(BODY, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "other/9"}, "format 'other/9'"),
        ({"keys": "no"}, "keys is not a list"),
        ({"keys": [BODY["keys"][0], BODY["keys"][0]]}, "key 'k1' appears twice"),
        ({"keys": [{**BODY["keys"][0], "wrapped": "***"}]}, "not a Custos backup"),
        ({"keys": [{**BODY["keys"][0], "record": []}]}, "record is not an object"),
        ({"created_at_ms": "soon"}, "not a Custos backup"),
    ],
)
def test_a_malformed_file_is_refused_naming_what(change: dict[str, object], message: str) -> None:
    with pytest.raises(BackupError, match=message):
        parse(_file({**BODY, **change}))


def test_not_json_is_refused() -> None:
    with pytest.raises(BackupError, match="not a Custos backup"):
        parse(b"\x00garbage")


def test_the_metric_is_the_age_of_the_newest_complete_verification(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        age = VerifiedBackupAge(store, page=2)
        assert math.isnan(age())
        store.append_audit([AuditEvent("backup.verified", "op", {"complete": False})])
        assert math.isnan(age())  # an incomplete backup is no backup
        store.append_audit([AuditEvent("key.created", "op", {"key_id": "x"})] * 3)
        store.append_audit([AuditEvent("backup.verified", "op", {"complete": True})])
        assert 0 <= age() < 3600
    finally:
        store.close()


def test_making_a_backup_is_no_operator_command_any_more(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only officer ceremonies make the backup key and backups (propose-backup*)."""
    config = str(tmp_path / "none.toml")
    for argv in (
        ["keys", "backup-key", "init", "--threshold", "2", "--config", config],
        ["keys", "backup", str(tmp_path / "f"), "--config", config],
    ):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert "invalid choice" in capsys.readouterr().err
