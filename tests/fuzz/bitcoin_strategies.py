"""Hypothesis strategies for Bitcoin transactions (signer/chains/bitcoin.py)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.bitcoin import MAX_MONEY
from custos.signer.chains.bitcoin_address import NETWORKS as BTC_NETWORKS
from tests.fuzz.strategies import (
    BREAKS,
    BTC_PAYABLE,
    HEX_JUNK,
    INT64,
    KEY,
    ONE_IN_TEN,
    UINT32,
    any_address,
    fuzzed,
    hex_of,
    ints,
)
from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout, bitcoin_prevout_script

_BTC_NETWORK_NAMES = sorted(BTC_NETWORKS)
_BTC_AMOUNT = st.one_of(
    st.integers(1, 10**8), ints(INT64, MAX_MONEY, MAX_MONEY + 1, MAX_MONEY - 1, 546)
)
_SCRIPT_TYPES = st.sampled_from(("p2wpkh", "p2pkh"))
_BTC_SCRIPT_TYPE = fuzzed(_SCRIPT_TYPES)
_BTC_TXID = st.one_of(
    fuzzed(hex_of(32)),
    hex_of(32).map(str.upper),
    st.sampled_from(("0" * 64, "F" * 64, "0" * 63 + "1")),
    HEX_JUNK,
)
_UINT32 = ints(UINT32)
_OPT_UINT32 = st.none() | _UINT32
_BTC_NETWORK = fuzzed(st.sampled_from([*_BTC_NETWORK_NAMES, "main", "bitcoin"]))
# For the all-hostile generators: a field checked first, if nearly always wrong,
# would keep every later check from being reached.
_BTC_NETWORK_OFTEN_VALID = st.sampled_from(_BTC_NETWORK_NAMES) | _BTC_NETWORK
_BTC_ADDRESS = {network: any_address(BTC_PAYABLE[network]) for network in BTC_NETWORKS}
_BTC_ANY_ADDRESS = any_address(BTC_PAYABLE["testnet"])
_BTC_PAYEE = {network: st.sampled_from(BTC_PAYABLE[network]) for network in BTC_NETWORKS}
_MANY = st.sampled_from((999, 1000, 1001)) | st.integers(300, 1100)
_KEY_SCRIPTS = {t: bitcoin_prevout_script(KEY.info.public_key, t) for t in ("p2wpkh", "p2pkh")}
_DECOY_OUTPUT = (777, bytes.fromhex("0014") + bytes(range(20)))


# python-bitcointx takes about 4 ms to build a previous transaction and as long
# again to read its txid back; the Bitcoin fuzz tests draw tens of thousands.
# So python-bitcointx builds one template per shape (script type, vout, witness)
# and a draw patches the two things that vary, the spent outpoint's hash and the
# paying output's value, into it. Each template is checked at build time: for
# other values, the patched bytes and txid equal what python-bitcointx makes.
_TEMPLATE_VALUE = 0x0102030405060708  # distinctive bytes to find in the serialization
_TEMPLATE_SEED = "custos fuzz template"


@dataclass(frozen=True)
class _FundingTemplate:
    """A previous transaction's bytes, split around the outpoint hash and the value."""

    raw: tuple[bytes, bytes, bytes]  # before the hash, between hash and value, after the value
    stripped: tuple[bytes, bytes, bytes]  # the same without the witness: what the txid hashes

    def build(self, value: int, seed: str) -> tuple[bytes, str]:
        """(serialized transaction, txid as explorers show it)."""
        outpoint, amount = hashlib.sha256(seed.encode()).digest(), value.to_bytes(8, "little")
        raw = self.raw[0] + outpoint + self.raw[1] + amount + self.raw[2]
        stripped = self.stripped[0] + outpoint + self.stripped[1] + amount + self.stripped[2]
        txid = hashlib.sha256(hashlib.sha256(stripped).digest()).digest()[::-1].hex()
        return raw, txid


def _split(raw: bytes) -> tuple[bytes, bytes, bytes]:
    outpoint = hashlib.sha256(_TEMPLATE_SEED.encode()).digest()
    amount = _TEMPLATE_VALUE.to_bytes(8, "little")
    assert raw.count(outpoint) == 1
    assert raw.count(amount) == 1
    head, _, rest = raw.partition(outpoint)
    middle, _, tail = rest.partition(amount)
    return head, middle, tail


@functools.cache
def _funding_template(script_type: str, vout: int, segwit: bool) -> _FundingTemplate:
    outputs = [_DECOY_OUTPUT] * vout + [(_TEMPLATE_VALUE, _KEY_SCRIPTS[script_type])]
    template = _FundingTemplate(
        _split(bitcoin_funding_tx(outputs, _TEMPLATE_SEED, segwit)),
        _split(bitcoin_funding_tx(outputs, _TEMPLATE_SEED, False)),
    )
    for value, seed in ((1, "check-1"), (MAX_MONEY, "check-2")):
        outputs[-1] = (value, _KEY_SCRIPTS[script_type])
        raw, txid = template.build(value, seed)
        assert raw == bitcoin_funding_tx(outputs, seed, segwit)
        assert bitcoin_prevout(raw, vout)[:2] == (txid, value)
    return template


def _funding(
    value: int, script_type: str, seed: str, vout: int = 0, segwit: bool = False
) -> tuple[bytes, str]:
    """A previous transaction paying the fuzz key `value` at `vout`, and its txid."""
    return _funding_template(script_type, vout, segwit).build(value, seed)


@functools.cache
def _many_prev(script_type: str) -> list[tuple[str, bytes]]:
    """(txid, prev_tx) for the huge-input cases: built once, when first drawn."""
    funded = (_funding(10_000, script_type, f"huge-{script_type}-{i}") for i in range(1100))
    return [(txid, raw) for raw, txid in funded]


@st.composite
def _huge_inputs(draw: st.DrawFn) -> list[pb.BitcoinInput]:
    """Hundreds to over a thousand inputs (the limit is 1000), distinct outpoints."""
    count = draw(_MANY)
    script_type = draw(_SCRIPT_TYPES)
    return [
        pb.BitcoinInput(txid=txid, vout=0, prev_tx=raw)
        for txid, raw in _many_prev(script_type)[:count]
    ]


@st.composite
def _huge_outputs(draw: st.DrawFn, network: str) -> list[pb.BitcoinOutput]:
    count = draw(_MANY)
    address = draw(_BTC_PAYEE[network])
    return [pb.BitcoinOutput(address=address, value=1000) for _ in range(count)]


_SEEDS = st.lists(st.binary(min_size=8, max_size=8), min_size=1, max_size=4, unique=True)
# Sequences that lock nothing beyond the default limits (BIP68 is off when bit 31
# is set; small relative locks are allowed) and lock times in the past.
_VALID_SEQUENCE = st.none() | st.integers(0x80000000, 2**32 - 1) | st.integers(0, 144)
_PAST_LOCK_TIME = st.sampled_from((0, 800_000, 1_700_000_000)) | st.integers(0, 800_000)


@st.composite
def _valid_input(draw: st.DrawFn, seed: bytes) -> tuple[pb.BitcoinInput, int]:
    value = draw(st.integers(10_000, 10**8))
    script_type = draw(_SCRIPT_TYPES)
    vout = draw(st.integers(0, 3))
    raw, txid = _funding(value, script_type, seed.hex(), vout, draw(st.booleans()))
    message = pb.BitcoinInput(txid=txid, vout=vout, prev_tx=raw)
    if draw(st.booleans()):  # the optional cross-checks
        message.value, message.script_type = value, script_type
    sequence = draw(_VALID_SEQUENCE)
    if sequence is not None:
        message.sequence = sequence
    return message, value


@st.composite
def bitcoin_valid(draw: st.DrawFn) -> pb.BitcoinTransaction:
    """A transaction that should sign: distinct outpoints, outputs below inputs, sane fee."""
    network = draw(st.sampled_from(_BTC_NETWORK_NAMES))
    funded = [draw(_valid_input(seed)) for seed in draw(_SEEDS)]
    inputs = [message for message, _ in funded]
    spendable = sum(value for _, value in funded) - draw(st.integers(0, 5_000))  # the fee
    values = []
    for _ in range(draw(st.integers(0, 2))):
        value = draw(st.integers(1, max(1, spendable // 2)))
        values.append(value)
        spendable -= value
    values.append(spendable)
    payee = _BTC_PAYEE[network]
    return pb.BitcoinTransaction(
        network=network,
        version=draw(st.sampled_from((0, 1, 2))),
        lock_time=draw(_PAST_LOCK_TIME),
        inputs=inputs,
        outputs=[pb.BitcoinOutput(address=draw(payee), value=value) for value in values],
    )


_BTC_TARGETS = st.sampled_from(
    (
        "network", "version", "lock_time", "txid", "vout", "value", "script_type", "sequence",
        "address", "out_value", "no_inputs", "no_outputs", "huge_inputs", "huge_outputs",
        "dup_input", "unset_sequence", "prev_tx", "prev_tx_swap",
    )
)  # fmt: skip
_VERSION = ints(UINT32, 2, 3)


def _break_bitcoin(draw: st.DrawFn, tx: pb.BitcoinTransaction) -> None:
    target = draw(_BTC_TARGETS)
    i = draw(st.integers(0, max(len(tx.inputs) - 1, 0)))
    o = draw(st.integers(0, max(len(tx.outputs) - 1, 0)))
    has_in, has_out = bool(tx.inputs), bool(tx.outputs)
    if target == "network":
        tx.network = draw(_BTC_NETWORK)
    elif target == "version":
        tx.version = draw(_VERSION)
    elif target == "lock_time":
        tx.lock_time = draw(_UINT32)
    elif target == "txid" and has_in:
        tx.inputs[i].txid = draw(_BTC_TXID)
    elif target == "vout" and has_in:
        tx.inputs[i].vout = draw(_UINT32)
    elif target == "value" and has_in:
        tx.inputs[i].value = draw(_BTC_AMOUNT)
    elif target == "script_type" and has_in:
        tx.inputs[i].script_type = draw(_BTC_SCRIPT_TYPE)
    elif target == "sequence" and has_in:
        tx.inputs[i].sequence = draw(_UINT32)
    elif target == "unset_sequence" and has_in:
        tx.inputs[i].ClearField("sequence")
    elif target == "address" and has_out:
        tx.outputs[o].address = draw(_BTC_ADDRESS.get(tx.network, _BTC_ANY_ADDRESS))
    elif target == "out_value" and has_out:
        tx.outputs[o].value = draw(_BTC_AMOUNT)
    elif target == "no_inputs":
        del tx.inputs[:]
    elif target == "no_outputs":
        del tx.outputs[:]
    elif target == "huge_inputs" and draw(ONE_IN_TEN):
        del tx.inputs[:]
        tx.inputs.extend(draw(_huge_inputs()))
    elif target == "huge_outputs" and tx.network in BTC_NETWORKS and draw(ONE_IN_TEN):
        del tx.outputs[:]
        tx.outputs.extend(draw(_huge_outputs(tx.network)))
    elif target == "dup_input" and has_in:
        tx.inputs.add().CopyFrom(tx.inputs[i])
    elif target == "prev_tx" and has_in:
        tx.inputs[i].prev_tx = draw(_PREV_TX_JUNK(tx.inputs[i].prev_tx))
    elif target == "prev_tx_swap" and len(tx.inputs) > 1:
        # Another input's previous transaction: well formed, but the wrong txid.
        tx.inputs[i].prev_tx = tx.inputs[(i + 1) % len(tx.inputs)].prev_tx


def _PREV_TX_JUNK(raw: bytes) -> SearchStrategy[bytes]:  # noqa: N802
    """A previous transaction broken: truncated, extended, one byte changed, or noise."""
    return st.one_of(
        st.integers(0, max(len(raw) - 1, 0)).map(lambda n: raw[:n]),
        st.binary(min_size=1, max_size=8).map(raw.__add__),
        st.tuples(st.integers(0, max(len(raw) - 1, 0)), st.integers(1, 255)).map(
            lambda p: raw[: p[0]] + bytes([raw[p[0]] ^ p[1]]) + raw[p[0] + 1 :] if raw else b""
        ),
        st.binary(max_size=300),
    )


@st.composite
def bitcoin_tx(draw: st.DrawFn) -> pb.BitcoinTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(bitcoin_valid())
    for _ in range(draw(BREAKS)):
        _break_bitcoin(draw, tx)
    return tx


@st.composite
def _btc_input_random(draw: st.DrawFn) -> pb.BitcoinInput:
    message = pb.BitcoinInput(
        txid=draw(_BTC_TXID),
        vout=draw(_UINT32),
        value=draw(_BTC_AMOUNT),
        script_type=draw(_BTC_SCRIPT_TYPE),
        prev_tx=draw(st.binary(max_size=300)),
    )
    sequence = draw(_OPT_UINT32)
    if sequence is not None:
        message.sequence = sequence
    return message


_BTC_RANDOM_INPUTS = st.lists(_btc_input_random(), max_size=4)
_BTC_RANDOM_OUTPUTS = st.lists(
    st.builds(pb.BitcoinOutput, address=_BTC_ANY_ADDRESS, value=_BTC_AMOUNT), max_size=4
)


@st.composite
def bitcoin_random(draw: st.DrawFn) -> pb.BitcoinTransaction:
    """Every field hostile."""
    return pb.BitcoinTransaction(
        network=draw(_BTC_NETWORK_OFTEN_VALID),
        version=draw(_VERSION),
        lock_time=draw(_UINT32),
        inputs=draw(_huge_inputs() if draw(ONE_IN_TEN) else _BTC_RANDOM_INPUTS),
        outputs=draw(_BTC_RANDOM_OUTPUTS),
    )
