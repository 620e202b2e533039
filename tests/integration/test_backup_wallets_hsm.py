"""HD wallets in backup files, on SoftHSM (hsm.backup_file).

The wallet seal key travels wrapped under the backup key and each wallet's seed
only as sealed: a verification tells a missing wallet, a wallet whose sealed
seed changed and a foreign seal key apart; a seal key made non-extractable
leaves its wallets out, named; an edited wallet entry is refused with the token
left empty; and after a restore onto another token the seeds unseal there to
what was sealed on the first, while no seed is anywhere in the file.

Runs in a subprocess (tests.integration.test_backup_hsm._run's pattern): the
PKCS#11 library reads its token directory once per process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SOFTHSM_LIBRARY
from tests.integration.test_backup_hsm import ROOT, USER_PIN, _tokens

pytestmark = pytest.mark.integration


def test_wallets_in_a_backup_file(tmp_path: Path) -> None:
    conf = _tokens(tmp_path)
    env = {**os.environ, "SOFTHSM2_CONF": str(conf), "PYTHONPATH": str(ROOT)}
    code = f"import sys; from {__name__} import wallet_drill as s; s(*sys.argv[1:])"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["skipped"] == []
    assert facts["verify_same"] == {"wallets": 2, "missing": [], "different": [], "ok": True}
    assert facts["verify_changed"] == {
        "wallets": 2,
        "missing": ["w3"],
        "different": ["w1"],
        "ok": False,
    }
    assert facts["old_seal_key"] == {"skipped": ["wallet/w9"], "wallets_section": False}
    assert facts["tampered"] == "its tag does not verify"
    assert facts["objects_after_refusal"] == 0
    assert facts["restored_wallets"] == ["w1", "w2"]
    assert facts["unsealed_equal"] is True
    assert facts["seal_key_sensitive"] is True
    assert facts["seed_in_file"] is False


def wallet_drill(tmp: str) -> None:
    import pkcs11

    from custos.hsm.backup import BackupError
    from custos.hsm.backup_file import WalletBackupEntry
    from custos.hsm.pkcs11_token import Pkcs11Token

    def aad(wallet_id: str) -> bytes:
        return b"custos/wallet-seed/v1\x00" + wallet_id.encode()

    seeds = {w: os.urandom(64) for w in ("w1", "w2", "w3")}
    facts: dict[str, Any] = {}
    source = Pkcs11Token(SOFTHSM_LIBRARY, "source", USER_PIN)
    try:
        shares = source.create_backup_key("bk", 2, 3)
        source.ensure_seal_key("_wallet_seal")

        def entry(wallet_id: str, seal_key_id: str = "_wallet_seal") -> WalletBackupEntry:
            sealed = source.seal(seal_key_id, seeds[wallet_id], aad(wallet_id))
            return WalletBackupEntry(wallet_id, seal_key_id, sealed, {"label": wallet_id})

        wallets = [entry("w1"), entry("w2")]
        data, skipped = source.make_backup("bk", [], 1, wallets)
        facts["skipped"] = list(skipped)

        def report(current: list[WalletBackupEntry]) -> dict[str, Any]:
            found = source.verify_backup("bk", data, {}, current)
            return {
                "wallets": found.wallets,
                "missing": list(found.missing_wallets),
                "different": list(found.different_wallets),
                "ok": found.complete,
            }

        facts["verify_same"] = report(wallets)
        # w1 sealed again (a fresh nonce: other bytes), and a wallet made since.
        facts["verify_changed"] = report([entry("w1"), wallets[1], entry("w3")])
        # A seal key made as before wallets were backed up: non-extractable.
        source.ensure_aes_key("_old_seal")
        seeds["w9"] = os.urandom(64)
        old, old_skipped = source.make_backup("bk", [], 1, [entry("w9", "_old_seal")])
        facts["old_seal_key"] = {
            "skipped": list(old_skipped),
            "wallets_section": "wallets" in json.loads(old)["body"],
        }
    finally:
        source.close()

    outer = json.loads(data)
    item = outer["body"]["wallets"]["items"][0]
    item["sealed_seed"] = base64.b64encode(b"\x00" + base64.b64decode(item["sealed_seed"])).decode()
    tampered = json.dumps(outer).encode()
    target = Pkcs11Token(SOFTHSM_LIBRARY, "target", USER_PIN)
    try:
        try:
            target.restore_backup("bk", shares[:2], tampered)
        except BackupError as exc:
            facts["tampered"] = str(exc).rpartition(": ")[0].rpartition(": ")[2] or str(exc)
        lib = pkcs11.lib(SOFTHSM_LIBRARY)
        with lib.get_token(token_label="target").open() as session:
            facts["objects_after_refusal"] = len(list(session.get_objects({})))
        _keys, restored = target.restore_backup("bk", shares[1:], data)
        facts["restored_wallets"] = [w.wallet_id for w in restored]
        facts["unsealed_equal"] = all(
            target.unseal(w.seal_key_id, w.sealed_seed, aad(w.wallet_id)) == seeds[w.wallet_id]
            for w in restored
        )
        with lib.get_token(token_label="target").open() as session:
            (seal,) = session.get_objects({pkcs11.Attribute.ID: b"_wallet_seal"})
            try:
                seal[pkcs11.Attribute.VALUE]
            except pkcs11.AttributeSensitive:
                facts["seal_key_sensitive"] = bool(seal[pkcs11.Attribute.SENSITIVE])
    finally:
        target.close()
    facts["seed_in_file"] = any(
        form in data
        for seed in seeds.values()
        for form in (seed, seed.hex().encode(), base64.b64encode(seed))
    )
    print(json.dumps(facts))
