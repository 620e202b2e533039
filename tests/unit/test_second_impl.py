"""The second implementations used by the tests do reject bad signatures."""

from __future__ import annotations

import json

import pytest
from eth_account import Account

from custos.common.secp256k1 import RecoverableSignature, compressed
from custos.proto.custos.v1 import keys_pb2
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from tests import builders
from tests.second_impl import evm_sender, tron_signer, verify_bitcoin
from tests.support import LocalKey

KEY = LocalKey(bytes([3] * 32))
OTHER = LocalKey(bytes([4] * 32))


def _key_message(key: LocalKey) -> keys_pb2.Key:
    from custos.signer.chains.registry import all_addresses

    return keys_pb2.Key(
        key_id=key.info.key_id,
        public_key=compressed(key.info.public_key).hex(),
        addresses=[
            keys_pb2.Address(chain=a.chain, network=a.network, kind=a.kind, address=a.address)
            for a in all_addresses(key.info.public_key)
        ],
    )


def _sign(item_kind: str, item: object, signer: LocalKey) -> str:
    adapter = ADAPTERS[item_kind]
    prepared = adapter.prepare(edge.transaction(item), KEY.info)
    sigs: list[RecoverableSignature] = [signer.sign(d) for d in prepared.digests]
    return adapter.assemble(prepared, sigs).raw_tx


def test_evm_recovers_someone_else_for_a_foreign_signature() -> None:
    item = builders.evm_item(_key_message(KEY)).evm
    assert evm_sender(_sign("evm", item, KEY)) == Account.from_key(bytes([3] * 32)).address
    assert evm_sender(_sign("evm", item, OTHER)) != Account.from_key(bytes([3] * 32)).address


def test_bitcoin_script_check_fails_for_a_foreign_signature() -> None:
    item = builders.bitcoin_item(_key_message(KEY)).bitcoin
    prevouts = builders.bitcoin_prevouts(item)
    verify_bitcoin(_sign("bitcoin", item, KEY), prevouts)
    with pytest.raises(Exception, match=r"(?i)verify|signature|false"):
        verify_bitcoin(_sign("bitcoin", item, OTHER), prevouts)


def test_tron_txid_and_signer_checks_fail_on_tampering() -> None:
    item = builders.tron_item(_key_message(KEY)).tron
    raw = json.loads(_sign("tron", item, KEY))
    assert tron_signer(json.dumps(raw)) == builders.address(_key_message(KEY), "tron", "nile")
    assert tron_signer(_sign("tron", item, OTHER)) != builders.address(
        _key_message(KEY), "tron", "nile"
    )
    raw["raw_data_hex"] = raw["raw_data_hex"][:-2] + "00"
    with pytest.raises(AssertionError):
        tron_signer(json.dumps(raw))
