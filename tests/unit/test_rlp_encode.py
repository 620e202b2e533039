"""The hand-written RLP encoder against the `rlp` package (the second implementation)."""

from __future__ import annotations

from typing import Any

import rlp
from hypothesis import given, settings
from hypothesis import strategies as st
from rlp.sedes import Binary, CountableList, List, big_endian_int, binary

from custos.common.secp256k1 import N, RecoverableSignature
from custos.signer.chains import rlp_encode
from custos.signer.chains.evm import EvmTx

# Lengths around every boundary of the format: 1 byte, 55/56 (short/long form),
# 255/256 (one or two length bytes), and beyond.
BYTES = st.one_of(
    st.binary(max_size=3),
    st.binary(min_size=54, max_size=58),
    st.binary(min_size=254, max_size=258),
    # Two and three length bytes; generated as runs, which hypothesis makes cheaply.
    st.integers(65534, 65537).map(lambda n: b"\xab" * n),
)
UINTS = st.one_of(
    st.integers(0, 300),
    st.integers(0, 2**256 - 1),
    st.sampled_from([0x7F, 0x80, 0xFF, 0x100, 2**64 - 1, 2**256 - 1]),
)


@settings(max_examples=300, deadline=None)
@given(value=UINTS)
def test_uint_matches_rlp(value: int) -> None:
    assert rlp_encode.uint(value) == rlp.encode(value, big_endian_int)


@settings(max_examples=200, deadline=None)
@given(data=BYTES)
def test_string_matches_rlp(data: bytes) -> None:
    assert rlp_encode.string(data) == rlp.encode(data, binary)


@settings(max_examples=100, deadline=None)
@given(items=st.lists(BYTES, max_size=6))
def test_lists_match_rlp(items: list[bytes]) -> None:
    assert rlp_encode.strings(items) == rlp.encode(items, CountableList(binary))
    nested = [items, [items, b"x"]]
    sedes = List([CountableList(binary), List([CountableList(binary), binary])])
    inner = rlp_encode.list_of(rlp_encode.strings(items) + rlp_encode.string(b"x"))
    assert rlp_encode.list_of(rlp_encode.strings(items) + inner) == rlp.encode(nested, sedes)


# The sedes the EVM adapter used with `rlp` before its encoding was written out.
_INT, _ADDR = big_endian_int, Binary.fixed_length(20)
_ACCESS_LIST = CountableList(List([_ADDR, CountableList(Binary.fixed_length(32))]))
_BODY: dict[int, list[Any]] = {
    0: [_INT, _INT, _INT, _ADDR, _INT, binary],
    1: [_INT, _INT, _INT, _INT, _ADDR, _INT, binary, _ACCESS_LIST],
    2: [_INT, _INT, _INT, _INT, _INT, _ADDR, _INT, binary, _ACCESS_LIST],
}


def _fields(tx: EvmTx) -> list[Any]:
    tail = [tx.gas_limit, tx.to, tx.value, tx.data]
    if tx.tx_type == 0:
        return [tx.nonce, tx.gas_price, *tail]
    fees = [tx.gas_price] if tx.tx_type == 1 else [tx.max_priority_fee_per_gas, tx.max_fee_per_gas]
    return [tx.chain_id, tx.nonce, *fees, *tail, tx.access_list]


@st.composite
def evm_txs(draw: st.DrawFn) -> EvmTx:
    tx_type = draw(st.sampled_from([0, 1, 2]))
    keys = st.lists(st.binary(min_size=32, max_size=32), max_size=4).map(tuple)
    access_list = st.lists(st.tuples(st.binary(min_size=20, max_size=20), keys), max_size=4)
    return EvmTx(
        tx_type=tx_type,
        chain_id=draw(st.sampled_from([1, 56, 97, 17000, 11155111, 2**64])),
        nonce=draw(st.integers(0, 2**64 - 2)),
        gas_price=draw(UINTS) if tx_type != 2 else 0,
        max_priority_fee_per_gas=draw(UINTS) if tx_type == 2 else 0,
        max_fee_per_gas=draw(UINTS) if tx_type == 2 else 0,
        gas_limit=draw(st.integers(21000, 2**64)),
        to=draw(st.binary(min_size=20, max_size=20)),
        value=draw(UINTS),
        data=draw(BYTES),
        access_list=tuple(draw(access_list)) if tx_type else (),
    )


@settings(max_examples=150, deadline=None)
@given(tx=evm_txs(), r=st.integers(1, N - 1), s=st.integers(1, N // 2), v=st.integers(0, 1))
def test_evm_payload_and_signed_encoding_match_rlp(tx: EvmTx, r: int, s: int, v: int) -> None:
    fields = _fields(tx)
    body = _BODY[tx.tx_type]
    signed_sedes = List([*body, _INT, _INT, _INT])
    signed = tx.signed(RecoverableSignature(r, s, v))
    if tx.tx_type == 0:
        assert tx.signing_payload() == rlp.encode([*fields, tx.chain_id, 0, 0], signed_sedes)
        expected = rlp.encode([*fields, v + 35 + 2 * tx.chain_id, r, s], signed_sedes)
        assert signed == expected
    else:
        type_byte = bytes([tx.tx_type])
        assert tx.signing_payload() == type_byte + rlp.encode(fields, List(body))
        assert signed == type_byte + rlp.encode([*fields, v, r, s], signed_sedes)
