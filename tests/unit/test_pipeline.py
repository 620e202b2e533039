"""The signing pipeline with a software signer: decoded at the edge, judged, signed, replayed.

Fast (no SoftHSM): tests/fast_env.py wires a real SqliteStore, policy and keys
as the server does. Every signature is checked by a second implementation.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains import items
from custos.signer.edge import requests
from custos.signer.edge.errors import (
    AlreadyExists,
    BudgetExceeded,
    InvalidRequest,
    PermissionDenied,
)
from tests import builders
from tests.fast_env import ETH, FastEnv, fast_env
from tests.second_impl import evm_message_signer, evm_sender, tron_signer


@pytest.fixture
def env(tmp_path: Path) -> Iterator[FastEnv]:
    env = fast_env(tmp_path)
    yield env
    env.store.close()


def _address(env: FastEnv, chain: str, network: str) -> str:
    return builders.address(env.key, chain, network)


def test_a_mixed_batch_is_signed_recorded_and_replayed_byte_for_byte(env: FastEnv) -> None:
    message = b"custos fast pipeline test"
    personal = pb.SignItem(
        key_id=env.key.key_id,
        evm_message=pb.EvmPersonalMessage(chain_id=11155111, message=message),
    )
    response = env.sign(
        "mixed",
        builders.evm_item(env.key, chain_id=17000),
        builders.tron_item(env.key),
        personal,
    )
    assert response.status == pb.BATCH_STATUS_SIGNED
    evm, tron, signed_message = response.items
    assert evm_sender(evm.raw_tx) == _address(env, "ethereum", "holesky")
    assert tron_signer(tron.raw_tx) == _address(env, "tron", "nile")
    signer = evm_message_signer(message, signed_message.raw_tx)
    assert signer == _address(env, "ethereum", "sepolia")
    assert len(env.hsm.signed) == 3
    # The authorization was recorded before the signatures (DESIGN.md invariant 1).
    assert env.kinds("mixed") == ["sign.authorized", "sign.signed"]

    replay = env.sign(
        "mixed",
        builders.evm_item(env.key, chain_id=17000),
        builders.tron_item(env.key),
        personal,
    )
    assert replay.replayed
    replay.replayed = False
    assert replay.SerializeToString(deterministic=True) == response.SerializeToString(
        deterministic=True
    )
    assert len(env.hsm.signed) == 3  # nothing signed twice
    with pytest.raises(AlreadyExists, match="already used with different items"):
        env.sign("mixed", builders.evm_item(env.key, chain_id=17000, nonce=1))


def test_errors_name_the_field_in_the_order_the_pipeline_checks(env: FastEnv) -> None:
    no_tx = pb.SignItem(key_id=env.key.key_id)
    with pytest.raises(InvalidRequest, match=r"^items\[1\]\.tx: no transaction or message \("):
        env.sign("no-tx", builders.evm_item(env.key), no_tx)
    # Grants are checked for every item before any item's content.
    other = pb.SignItem(key_id="other-key", evm=pb.EvmTransaction())
    with pytest.raises(PermissionDenied, match=r"^items\[1\]\.key_id: key 'other-key'"):
        env.sign("not-granted", no_tx, other)
    bad_gas = builders.evm_item(env.key)
    bad_gas.evm.gas_limit = 20_999
    with pytest.raises(InvalidRequest, match=r"^items\[0\]\.evm\.gas_limit: must be at least"):
        env.sign("bad-gas", bad_gas)
    assert env.hsm.signed == []
    assert env.kinds("bad-gas") == ["sign.refused"]


def test_an_unknown_evm_type_number_is_refused_as_no_type(env: FastEnv) -> None:
    item = builders.evm_item(env.key)
    item.evm.type = 99  # type: ignore[assignment]  # an open proto3 enum carries any number
    known = requests.transaction(builders.evm_item(env.key).evm)
    assert isinstance(known, items.EvmTransaction)
    unspecified = dataclasses.replace(known, type=items.EvmTxType.UNSPECIFIED)
    assert requests.transaction(item.evm) == unspecified
    with pytest.raises(InvalidRequest, match=r"^items\[0\]\.evm\.type: transaction type must be"):
        env.sign("type-99", item)


def test_a_held_batch_is_stored_as_its_request_bytes(env: FastEnv) -> None:
    request = pb.SignBatchRequest(
        request_id="held", items=[builders.evm_item(env.key, value=str(2 * ETH))]
    )
    held = env.pipeline.sign_batch(env.caller, requests.sign_batch(request))
    assert held.status == pb.BATCH_STATUS_PENDING_APPROVAL
    row = env.store.get_pending(held.approval_id)
    assert row is not None
    assert row.request == request.SerializeToString(deterministic=True)
    batch = env.store.get_batch(env.caller.subject, "held")
    assert batch is not None
    items_only = pb.SignBatchRequest(items=request.items).SerializeToString(deterministic=True)
    assert batch.payload_digest == hashlib.sha256(items_only).digest()
    assert requests.stored_batch(row.request) == requests.sign_batch(request)
    assert env.hsm.signed == []


def test_a_batch_larger_than_a_whole_limit_is_refused_before_the_store_is_asked(
    env: FastEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The development policy allows 1 ETH an hour on Holesky per key: two items of
    # 0.6 ETH can never fit, whatever the budget holds, so no claim is tried.
    def no_claim(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a batch that can never fit reached the store's claim")

    monkeypatch.setattr(env.store, "claim_batch", no_claim)
    item = builders.evm_item(env.key, chain_id=17000, value=str(6 * ETH // 10))
    second = builders.evm_item(env.key, chain_id=17000, nonce=1, value=str(6 * ETH // 10))
    with pytest.raises(BudgetExceeded, match="holesky-hourly-per-key"):
        env.sign("too-big", item, second)
    assert env.hsm.signed == []
    assert env.kinds("too-big") == ["sign.refused"]
