"""Hypothesis strategies for EVM transactions (signer/chains/evm.py)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.evm import CHAINS, UINT256_MAX, checksum_address
from custos.signer.chains.limits import DEFAULT_LIMITS
from tests.fuzz.strategies import (
    BREAKS,
    DECIMAL_JUNK,
    EVM_ADDRESSES,
    HEX_JUNK,
    INT32,
    ONE_IN_TEN,
    UINT64,
    any_address,
    hex_of,
    ints,
)

_EVM_TYPES = st.sampled_from(
    (pb.EVM_TX_TYPE_LEGACY, pb.EVM_TX_TYPE_EIP2930, pb.EVM_TX_TYPE_EIP1559)
)
_RAW20 = st.binary(min_size=20, max_size=20)
_EVM_ADDRESS = st.one_of(
    st.sampled_from(EVM_ADDRESSES),
    _RAW20.map(checksum_address),
    _RAW20.map(lambda b: "0x" + b.hex()),
    _RAW20.map(lambda b: "0x" + b.hex().upper()),
)
_EVM_ANY_ADDRESS = any_address(EVM_ADDRESSES)
_UINT256 = ints((0, UINT256_MAX), 10**18, 2**64)
_UINT256_TEXT = _UINT256.map(str)
_CALLDATA = st.one_of(
    st.just(""),
    st.builds(
        lambda selector, party, amount: "0x" + selector + party.hex().rjust(64, "0") + amount.hex(),
        st.sampled_from(("a9059cbb", "095ea7b3")),
        _RAW20,
        st.binary(min_size=32, max_size=32),
    ),
    st.binary(min_size=4, max_size=200).map(lambda b: "0x" + b.hex()),
)
_STORAGE_KEY = hex_of(32).map("0x".__add__)
_ACCESS_ENTRY = st.builds(
    pb.EvmAccessListEntry, address=_EVM_ADDRESS, storage_keys=st.lists(_STORAGE_KEY, max_size=3)
)
_ACCESS_ENTRY_JUNK = st.builds(
    pb.EvmAccessListEntry, address=_EVM_ANY_ADDRESS, storage_keys=st.lists(HEX_JUNK, max_size=3)
)
_CHAIN_IDS = st.sampled_from(sorted(CHAINS))
_NONCE = ints((0, 2**64 - 2))
_GAS_LIMIT = ints((21_000, 2**64 - 1), 21_000, 60_000)
_VALUE = st.just("") | _UINT256_TEXT
# Within the default [limits]: what evm_valid draws, the edges included.
_MAX_GAS = DEFAULT_LIMITS.ethereum_max_gas_limit
_VALID_VALUE = st.just("") | ints((0, DEFAULT_LIMITS.evm_max_value_ether * 10**18), 10**18).map(str)
_VALID_FEE = ints((0, DEFAULT_LIMITS.evm_max_fee_per_gas_gwei * 10**9), 30 * 10**9)


def _intrinsic_gas(data: str, access_list: Sequence[pb.EvmAccessListEntry]) -> int:
    """EIP-2028, EIP-2930 and EIP-7623 intrinsic gas, written out for the generator."""
    raw = bytes.fromhex(data[2:]) if data else b""
    zeros = raw.count(0)
    standard = 21_000 + 4 * zeros + 16 * (len(raw) - zeros)
    standard += sum(2400 + 1900 * len(entry.storage_keys) for entry in access_list)
    return max(standard, 21_000 + 10 * (zeros + 4 * (len(raw) - zeros)))


_ACCESS_LIST = st.lists(_ACCESS_ENTRY, max_size=3)


@st.composite
def evm_valid(draw: st.DrawFn) -> pb.EvmTransaction:
    tx_type = draw(_EVM_TYPES)
    tx = pb.EvmTransaction(
        chain_id=draw(_CHAIN_IDS),
        type=tx_type,
        nonce=draw(_NONCE),
        to=draw(_EVM_ADDRESS),
        value=draw(_VALID_VALUE),
        data=draw(_CALLDATA),
    )
    if tx_type == pb.EVM_TX_TYPE_EIP1559:
        max_fee = draw(_VALID_FEE)
        tx.max_fee_per_gas = str(max_fee)
        tx.max_priority_fee_per_gas = str(draw(st.integers(0, max_fee)))
    else:
        tx.gas_price = str(draw(_VALID_FEE))
    if tx_type != pb.EVM_TX_TYPE_LEGACY:
        tx.access_list.extend(draw(_ACCESS_LIST))
    least = _intrinsic_gas(tx.data, tx.access_list)
    tx.gas_limit = draw(ints((least, _MAX_GAS), least, _MAX_GAS))
    return tx


_EVM_TARGETS = st.sampled_from(
    (
        "chain_id", "type", "nonce", "to", "value", "data", "gas_limit", "gas_price",
        "max_fee_per_gas", "max_priority_fee_per_gas", "access_address", "access_key",
        "huge_access_list", "empty_access_list",
    )
)  # fmt: skip
_ANY_CHAIN_ID = ints(UINT64, *CHAINS)
_ANY_TYPE = ints(INT32, 1, 2, 3, 4)
_ANY_NONCE = ints(UINT64, 2**64 - 2)
_ANY_GAS_LIMIT = ints(UINT64, 21_000, 20_999)
_FEE_JUNK = st.just("") | DECIMAL_JUNK
_CHAIN_ID_OFTEN_VALID = _CHAIN_IDS | _ANY_CHAIN_ID
_EVM_ADDRESS_OFTEN_VALID = _EVM_ADDRESS | _EVM_ANY_ADDRESS
_TYPE_OFTEN_VALID = _EVM_TYPES | _ANY_TYPE


def _break_evm(draw: st.DrawFn, tx: pb.EvmTransaction) -> None:
    target = draw(_EVM_TARGETS)
    if target == "chain_id":
        tx.chain_id = draw(_ANY_CHAIN_ID)
    elif target == "type":
        tx.type = draw(_ANY_TYPE)
    elif target == "nonce":
        tx.nonce = draw(_ANY_NONCE)
    elif target == "to":
        tx.to = draw(_EVM_ANY_ADDRESS)
    elif target in ("value", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas"):
        setattr(tx, target, draw(DECIMAL_JUNK))
    elif target == "data":
        tx.data = draw(HEX_JUNK)
    elif target == "gas_limit":
        tx.gas_limit = draw(_ANY_GAS_LIMIT)
    elif target == "access_address":
        tx.access_list.add(address=draw(_EVM_ANY_ADDRESS))
    elif target == "access_key":
        entry = tx.access_list.add(address=draw(_EVM_ADDRESS))
        entry.storage_keys.append(draw(HEX_JUNK))
    elif target == "huge_access_list":
        if draw(ONE_IN_TEN):
            tx.access_list.extend([draw(_ACCESS_ENTRY)] * draw(st.integers(100, 3000)))
    else:
        del tx.access_list[:]


@st.composite
def evm_tx(draw: st.DrawFn) -> pb.EvmTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(evm_valid())
    for _ in range(draw(BREAKS)):
        _break_evm(draw, tx)
    return tx


@st.composite
def evm_random(draw: st.DrawFn) -> pb.EvmTransaction:
    """Every field hostile."""
    return pb.EvmTransaction(
        chain_id=draw(_CHAIN_ID_OFTEN_VALID),
        type=draw(_TYPE_OFTEN_VALID),
        nonce=draw(_ANY_NONCE),
        to=draw(_EVM_ADDRESS_OFTEN_VALID),
        value=draw(DECIMAL_JUNK),
        data=draw(HEX_JUNK),
        gas_limit=draw(_ANY_GAS_LIMIT),
        gas_price=draw(_FEE_JUNK),
        max_fee_per_gas=draw(_FEE_JUNK),
        max_priority_fee_per_gas=draw(_FEE_JUNK),
        access_list=draw(st.lists(_ACCESS_ENTRY_JUNK, max_size=3)),
    )
