"""What approvers read about an item: amounts in base units and in the asset's units."""

from __future__ import annotations

import dataclasses

import pytest

from custos.common.intent import ContractCall, Intent, Multisig, Transfer
from custos.proto.custos.v1 import policy_pb2
from custos.signer.tools.cli_policy import _print_batch
from custos.signer.usecases.approval_view import _item, asset_units, in_units

USDT_TRON = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
SPENDER = "0x" + "ab" * 20


def test_units_are_exact_decimals_without_rounding() -> None:
    assert in_units(10**18, 18) == "1"
    assert in_units(1, 18) == "0.000000000000000001"
    assert in_units(123_456_789, 8) == "1.23456789"
    assert in_units(0, 6) == "0"
    assert in_units(10**30, 6) == "1000000000000000000000000"


def test_known_assets_only() -> None:
    assert asset_units("tron", USDT_TRON) == ("USDT", 6)
    assert asset_units("ethereum", "native") == ("ETH", 18)
    assert asset_units("ethereum", "0x" + "12" * 20) is None


def test_an_allowance_shows_spender_and_amount_and_the_maximum_fee() -> None:
    intent = Intent(
        chain="ethereum",
        network="mainnet",
        key_id="hot-1",
        from_address="0x" + "01" * 20,
        transfers=(),
        fee=21_000 * 10**9,
        contract_call=ContractCall(
            "0xdAC17F958D2ee523a2206206994597C13D831ec7",
            "approve",
            (("spender", SPENDER), ("amount", str(5 * 10**6))),
        ),
    )
    item = _item(intent)
    assert item.method == "approve"
    assert list(item.args) == [f"spender={SPENDER}", "amount=5000000"]
    assert item.fee == str(21_000 * 10**9)
    assert item.fee_units == "0.000021 ETH"
    assert item.lock_time == ""


def test_a_token_transfer_in_units_where_decimals_are_known() -> None:
    intent = Intent(
        "tron",
        "mainnet",
        "hot-1",
        "T" + "1" * 33,
        (Transfer("T" + "2" * 33, USDT_TRON, 2_500_000),),
        30,
    )
    (t,) = _item(intent).transfers
    assert (t.amount, t.amount_units, t.symbol) == ("2500000", "2.5", "USDT")


def test_a_lock_time_is_shown_as_what_it_is() -> None:
    base = Intent(
        chain="bitcoin",
        network="mainnet",
        key_id="hot-1",
        from_address="bc1q",
        transfers=(),
        fee=1_000,
    )
    assert _item(dataclasses.replace(base, lock_time=840_100)).lock_time == "height 840100"
    assert (
        _item(dataclasses.replace(base, lock_time=1_900_000_000)).lock_time
        == "unix time 1900000000"
    )
    tron = dataclasses.replace(base, chain="tron", expiration_ms=1_900_000_000_000)
    assert _item(tron).lock_time == "expires at unix ms 1900000000000"


def test_the_multisigs_a_psbt_spends_are_shown() -> None:
    cosigners = ("02" + "a" * 64, "03" + "b" * 64)
    intent = Intent(
        chain="bitcoin",
        network="mainnet",
        key_id="treasury-ms",
        from_address="bc1q",
        transfers=(Transfer("bc1qcold", "native", 10**6), Transfer("bc1qms", "native", 10, True)),
        fee=1_000,
        multisig=(Multisig(2, 3, cosigners),),
    )
    (shown,) = _item(intent).multisigs
    assert (shown.threshold, shown.total, tuple(shown.cosigners)) == (2, 3, cosigners)
    assert [t.is_change for t in _item(intent).transfers] == [False, True]


def test_approvals_show_prints_the_multisig(capsys: pytest.CaptureFixture[str]) -> None:
    intent = Intent(
        chain="bitcoin",
        network="mainnet",
        key_id="treasury-ms",
        from_address="bc1q",
        transfers=(Transfer("bc1qcold", "native", 10**6),),
        fee=1_000,
        multisig=(Multisig(2, 3, ("02" + "a" * 64, "03" + "b" * 64)),),
    )
    batch = policy_pb2.PendingBatch(approval_id="a-1", state="pending", items=[_item(intent)])
    _print_batch(batch, full=True)
    out = capsys.readouterr().out
    assert f"cosigns a 2-of-3 multisig with 02{'a' * 64}, 03{'b' * 64}" in out
