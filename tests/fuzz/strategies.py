"""Hypothesis strategies for the fuzz suite: hostile field values, valid seeds, byte mutations.

Every chain has two generators. `*_tx()` starts from a transaction that
should sign and breaks up to three of its fields (zero breaks keeps the
signing path covered too); `*_random()` fills every field with hostile values.
`mutated()` works below the schema, on the bytes of a serialized message.

Strategies are built once, at import: building one inside a draw costs more
than drawing from it, and the suite draws a few hundred thousand values.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from hsm.secp256k1 import compressed
from proto.custos.v1 import keys_pb2
from proto.custos.v1 import signer_pb2 as pb
from signer.chains.bitcoin import MAX_MONEY
from signer.chains.bitcoin_address import NETWORKS as BTC_NETWORKS
from signer.chains.bitcoin_address import b58check_encode, encode_segwit
from signer.chains.evm import CHAINS, UINT256_MAX, checksum_address
from signer.chains.limits import DEFAULT_LIMITS
from signer.chains.registry import all_addresses
from signer.chains.tron import (
    MAX_FEE_LIMIT,
    MAX_LIFETIME_MS,
    MAX_LOCK_PERIOD,
    MAX_VOTES,
    MIN_STAKE_SUN,
    RESOURCES,
    to_base58,
)
from signer.chains.tron import NETWORKS as TRON_NETWORKS
from tests import builders
from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout, bitcoin_prevout_script
from tests.support import LocalKey

KEY = LocalKey(hashlib.sha256(b"custos fuzz key").digest(), key_id="fuzz-a")
OTHER = LocalKey(hashlib.sha256(b"custos fuzz other key").digest(), key_id="fuzz-b")
LOCAL_KEYS = (KEY, OTHER)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)


def key_message(local: LocalKey) -> keys_pb2.Key:
    """The Key message the service would return for this key (what tests/builders.py reads)."""
    return keys_pb2.Key(
        key_id=local.info.key_id,
        algorithm="secp256k1",
        public_key=compressed(local.info.public_key).hex(),
        addresses=[
            keys_pb2.Address(chain=a.chain, network=a.network, kind=a.kind, address=a.address)
            for a in all_addresses(local.info.public_key)
        ],
    )


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


# ---- hostile primitives ---------------------------------------------------------

# Protobuf refuses to hold a lone surrogate (not UTF-8); everything else goes.
_CHARS = st.characters(exclude_categories=("Cs",))
_TRICKY = st.sampled_from(
    list("\x00\t\n\r \x7f\u00a0\u200b\u200e\u202e\ufeff\u0130\u0131\u00df\uff10\u0661\u00b2")
)


def ints(bounds: tuple[int, int], *interesting: int) -> SearchStrategy[int]:
    """Integers of a proto type's range, with its boundaries and `interesting` values favoured."""
    lo, hi = bounds
    special = sorted({v for v in (lo, hi, lo + 1, hi - 1, 0, 1, -1, *interesting) if lo <= v <= hi})
    return st.one_of(st.sampled_from(special), st.integers(lo, hi))


# Huge repeated fields are slow to build and to parse; they come up one time in ten.
_ONE_IN_TEN = st.integers(0, 9).map(lambda n: n == 0)


def _huge(text: str, count: int) -> str:
    return text * count


# Any text: unicode, control and invisible characters, and now and then a huge string.
JUNK_TEXT = st.one_of(
    st.text(_CHARS, max_size=40),
    st.text(st.one_of(_TRICKY, st.characters(max_codepoint=0x20)), max_size=12),
    st.builds(_huge, st.text(_CHARS, min_size=1, max_size=3), st.integers(500, 120_000)),
)
_NEAR_MISS_OPS = st.sampled_from(
    ("upper", "lower", "swap", "insert", "delete", "replace", "pad", "cut", "double")
)
_PADDING = st.sampled_from((" ", "\n", "\x00", "\u200b"))
_ANY_CHAR = st.one_of(_TRICKY, _CHARS)


@st.composite
def near_miss(draw: st.DrawFn, valid: SearchStrategy[str]) -> str:
    """A valid value with one small defect: a case change, a character more, less or replaced."""
    text = draw(valid)
    op = draw(_NEAR_MISS_OPS)
    at = draw(st.integers(0, len(text)))
    if op == "upper":
        return text.upper()
    if op == "lower":
        return text.lower()
    if op == "swap":
        return text.swapcase()
    if op == "insert":
        return text[:at] + draw(_ANY_CHAR) + text[at:]
    if op == "delete":
        return text[:at] + text[at + 1 :]
    if op == "replace":
        return text[:at] + draw(_ANY_CHAR) + text[at + 1 :]
    if op == "pad":
        return draw(_PADDING) + text
    if op == "cut":
        return text[:at]
    return text + text


def fuzzed(valid: SearchStrategy[str]) -> SearchStrategy[str]:
    """Valid values, near misses of valid values, and junk."""
    return st.one_of(valid, near_miss(valid), JUNK_TEXT)


# Strings an integer parser must refuse or range-check.
DECIMAL_JUNK = st.one_of(
    st.from_regex(r"[-+]?[0-9]{0,100}", fullmatch=True),
    # Leading zeros, up to past int()'s 4300-digit limit: still small numbers.
    st.builds(_huge, st.just("0"), st.integers(1, 6000)).map(lambda zeros: zeros + "1"),
    st.sampled_from(
        [
            str(UINT256_MAX),
            str(UINT256_MAX + 1),
            str(2**64),
            str(2**63),
            "0" * 5000 + "1",  # over int()'s 4300-digit limit, yet a small number
            "9" * 5000,
            "0",
            "00",
            "01",
            "1e18",
            "0x10",
            " 1",
            "1 ",
            "1_000",
            "1.0",
            "\u0661\u0662",  # Arabic-Indic digits
            "\u00b2",  # superscript two
            "\uff11",  # fullwidth one
            "-0",
            "+1",
        ]
    ),
    JUNK_TEXT,
)
# Strings a hex field must refuse: odd length, no prefix, non-hex digits, huge.
HEX_JUNK = st.one_of(
    st.from_regex(r"(0x|0X)?[0-9a-fA-F]{0,160}", fullmatch=True),
    st.from_regex(r"0x[0-9a-gA-G ]{0,40}", fullmatch=True),
    st.builds(_huge, st.just("ab"), st.integers(1000, 200_000)).map("0x".__add__),
    JUNK_TEXT.map("0x".__add__),
    JUNK_TEXT,
)


def _hex_of(size: int) -> SearchStrategy[str]:
    return st.binary(min_size=size, max_size=size).map(bytes.hex)


# ---- addresses of every chain -----------------------------------------------------


def _bitcoin_addresses(network: str) -> list[str]:
    params = BTC_NETWORKS[network]
    program20, program32 = _digest(network, 20)[:20], _digest(network, 32)
    return [
        encode_segwit(params.hrp, 0, program20),  # P2WPKH
        encode_segwit(params.hrp, 0, program32),  # P2WSH
        encode_segwit(params.hrp, 1, program32),  # P2TR
        b58check_encode(bytes([params.p2pkh_version]) + program20),  # P2PKH
        b58check_encode(bytes([params.p2sh_version]) + program20),  # P2SH
    ]


BTC_PAYABLE: dict[str, list[str]] = {
    network: [
        *_bitcoin_addresses(network),
        *(
            a.address
            for local in LOCAL_KEYS
            for a in all_addresses(local.info.public_key)
            if a.chain == "bitcoin" and a.network == network
        ),
    ]
    for network in BTC_NETWORKS
}
BTC_PAYABLE["testnet"].append(builders.BTC_TESTNET_DEST)

EVM_ADDRESSES = sorted(
    {
        builders.EVM_DEST,
        checksum_address(_digest("evm")[:20]),
        *(
            a.address
            for local in LOCAL_KEYS
            for a in all_addresses(local.info.public_key)
            if a.address.startswith("0x")
        ),
    }
)
TRON_ADDRESSES = sorted(
    {
        builders.TRON_DEST,
        builders.TRON_USDT,
        *(
            a.address
            for local in LOCAL_KEYS
            for a in all_addresses(local.info.public_key)
            if a.chain == "tron"
        ),
    }
)

# Well-formed strings of other kinds: other chains, other networks, unsupported types.
FOREIGN_ADDRESSES = sorted(
    {
        *(a for addresses in BTC_PAYABLE.values() for a in addresses),
        *EVM_ADDRESSES,
        *(a.lower() for a in EVM_ADDRESSES),
        *("0x" + a[2:].upper() for a in EVM_ADDRESSES),
        *TRON_ADDRESSES,
        to_base58(b"\x00" + _digest("tron-v0")[:20]),  # base58check, version byte not 0x41
        to_base58(b"\x41" + _digest("tron-short")[:19]),  # 20 bytes
        encode_segwit("bc", 2, _digest("v2")[:16]),  # witness v2: valid, not payable
        encode_segwit("bc", 1, _digest("v1-20")[:20]),  # v1 of the wrong length
        encode_segwit("ltc", 0, _digest("ltc")[:20]),  # another coin's hrp
        "0x" + _digest("evm-short")[:19].hex(),
        "",
    }
)
_FOREIGN = st.sampled_from(FOREIGN_ADDRESSES)


def any_address(valid: Sequence[str]) -> SearchStrategy[str]:
    """Valid addresses, near misses of them, addresses of every chain, and junk."""
    return st.one_of(fuzzed(st.sampled_from(list(valid))), _FOREIGN)


# ---- Bitcoin -------------------------------------------------------------------------

_BTC_NETWORK_NAMES = sorted(BTC_NETWORKS)
_BTC_AMOUNT = st.one_of(
    st.integers(1, 10**8), ints(INT64, MAX_MONEY, MAX_MONEY + 1, MAX_MONEY - 1, 546)
)
_SCRIPT_TYPES = st.sampled_from(("p2wpkh", "p2pkh"))
_BTC_SCRIPT_TYPE = fuzzed(_SCRIPT_TYPES)
_BTC_TXID = st.one_of(
    fuzzed(_hex_of(32)),
    _hex_of(32).map(str.upper),
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
    elif target == "huge_inputs" and draw(_ONE_IN_TEN):
        del tx.inputs[:]
        tx.inputs.extend(draw(_huge_inputs()))
    elif target == "huge_outputs" and tx.network in BTC_NETWORKS and draw(_ONE_IN_TEN):
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


_BREAKS = st.sampled_from((0, 1, 1, 2, 3))


@st.composite
def bitcoin_tx(draw: st.DrawFn) -> pb.BitcoinTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(bitcoin_valid())
    for _ in range(draw(_BREAKS)):
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
        inputs=draw(_huge_inputs() if draw(_ONE_IN_TEN) else _BTC_RANDOM_INPUTS),
        outputs=draw(_BTC_RANDOM_OUTPUTS),
    )


# ---- EVM -----------------------------------------------------------------------------

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
_STORAGE_KEY = _hex_of(32).map("0x".__add__)
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
        if draw(_ONE_IN_TEN):
            tx.access_list.extend([draw(_ACCESS_ENTRY)] * draw(st.integers(100, 3000)))
    else:
        del tx.access_list[:]


@st.composite
def evm_tx(draw: st.DrawFn) -> pb.EvmTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(evm_valid())
    for _ in range(draw(_BREAKS)):
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


# ---- Tron ----------------------------------------------------------------------------

_TRON_PAYEES = st.sampled_from([a for a in TRON_ADDRESSES if a != builders.TRON_USDT])
_TRON_TOKENS = st.sampled_from(TRON_ADDRESSES)
_TRON_ANY_ADDRESS = any_address(TRON_ADDRESSES)
_TRON_NETWORK_NAMES = st.sampled_from(TRON_NETWORKS)
_TRON_NETWORK = fuzzed(_TRON_NETWORK_NAMES)
_TRON_NETWORK_OFTEN_VALID = _TRON_NETWORK_NAMES | _TRON_NETWORK
_REF_BYTES = st.one_of(_hex_of(2), _hex_of(2).map(str.upper))
_REF_HASH = st.one_of(_hex_of(8), _hex_of(8).map(str.upper))
_REF_BYTES_JUNK = fuzzed(_REF_BYTES) | HEX_JUNK
_REF_HASH_JUNK = fuzzed(_REF_HASH) | HEX_JUNK
_LIFETIME = ints((1, MAX_LIFETIME_MS), 60_000)
_TOKEN_AMOUNT = ints((1, UINT256_MAX)).map(str)
_FEE_LIMIT = ints((1, MAX_FEE_LIMIT), 30_000_000)
_INT64 = ints(INT64)
_ANY_FEE_LIMIT = ints(INT64, MAX_FEE_LIMIT, MAX_FEE_LIMIT + 1)
_ANY_TIMESTAMP = ints(INT64, 10**12 - 1, 10**12)
_TRON_TARGETS = st.sampled_from(
    (
        "network", "to", "trx_amount", "contract", "trc20_amount", "no_contract",
        "ref_block_bytes", "ref_block_hash", "expiration", "timestamp", "fee_limit",
        "empty_trx", "empty_trc20",
        "resource", "stake_amount", "receiver", "lock", "lock_period", "votes",
        "vote_witness", "vote_count",
    )
)  # fmt: skip
# Staking and voting (the oneof names of pb.TronTransaction) and their fields.
TRON_STAKING = (
    "freeze_balance_v2", "unfreeze_balance_v2", "delegate_resource", "undelegate_resource",
    "withdraw_expire_unfreeze", "vote_witness",
)  # fmt: skip
_RESOURCE = st.sampled_from(RESOURCES)
_RESOURCE_JUNK = _RESOURCE | fuzzed(_RESOURCE) | st.sampled_from(("TRON_POWER", "energy", ""))
_STAKE_SUN = ints((MIN_STAKE_SUN, DEFAULT_LIMITS.tron_max_amount_sun))
_LOCK_PERIOD = ints((0, MAX_LOCK_PERIOD), 86_400)
_ANY_LOCK_PERIOD = ints(INT64, MAX_LOCK_PERIOD, MAX_LOCK_PERIOD + 1)
_VOTE_COUNT = ints((1, DEFAULT_LIMITS.tron_max_amount_sun // 1_000_000))
_ANY_VOTE_COUNT = ints(INT64, DEFAULT_LIMITS.tron_max_amount_sun // 1_000_000 + 1)


# Times in the past and amounts within the default [limits], for tron_valid.
_TRON_CONTRACTS = st.sampled_from(("trx", "trc20", "none", *TRON_STAKING))
# Half transfers, half staking and voting.
_TRON_VALID_CONTRACTS = st.one_of(st.sampled_from(("trx", "trc20")), st.sampled_from(TRON_STAKING))
_PAST_TIMESTAMP = ints((10**12, 1_760_000_000_000), 1_700_000_000_000)
_VALID_SUN = ints((1, DEFAULT_LIMITS.tron_max_amount_sun))


@st.composite
def tron_valid(draw: st.DrawFn) -> pb.TronTransaction:
    timestamp = draw(_PAST_TIMESTAMP)
    tx = pb.TronTransaction(
        network=draw(_TRON_NETWORK_NAMES),
        ref_block_bytes=draw(_REF_BYTES),
        ref_block_hash=draw(_REF_HASH),
        timestamp=timestamp,
        expiration=timestamp + draw(_LIFETIME),
    )
    which = draw(_TRON_VALID_CONTRACTS)
    if which == "trx":
        tx.trx_transfer.to = draw(_TRON_PAYEES)
        tx.trx_transfer.amount = draw(_VALID_SUN)
    elif which == "trc20":
        tx.trc20_transfer.contract = draw(_TRON_TOKENS)
        tx.trc20_transfer.to = draw(_TRON_PAYEES)
        tx.trc20_transfer.amount = draw(_TOKEN_AMOUNT)
        tx.fee_limit = draw(_FEE_LIMIT)
    else:
        _tron_staking(draw, tx, which, valid=True)
    return tx


def _tron_staking(draw: st.DrawFn, tx: pb.TronTransaction, which: str, *, valid: bool) -> None:
    """Set the staking or voting contract `which`: valid values, or hostile ones."""
    contract = getattr(tx, which)
    contract.SetInParent()  # withdraw_expire_unfreeze has no fields
    address = _TRON_PAYEES if valid else _TRON_ANY_ADDRESS
    if which == "vote_witness":
        witnesses = draw(st.lists(address, min_size=1, max_size=MAX_VOTES, unique=valid))
        count = _VOTE_COUNT if valid else _ANY_VOTE_COUNT
        contract.votes.extend(pb.TronVote(witness=w, count=draw(count)) for w in witnesses)
        return
    if which == "withdraw_expire_unfreeze":
        return
    contract.resource = draw(_RESOURCE if valid else _RESOURCE_JUNK)
    contract.amount = draw(_STAKE_SUN if valid else _INT64)
    if which in ("delegate_resource", "undelegate_resource"):
        contract.receiver = draw(address)
    if which == "delegate_resource" and draw(st.booleans()):
        contract.lock = True
        contract.lock_period = draw(_LOCK_PERIOD if valid else _ANY_LOCK_PERIOD)


def tron_staking_seeds(key: keys_pb2.Key) -> list[pb.TronTransaction]:
    """One valid transaction per staking and voting contract (mutation seeds)."""
    contracts: list[dict[str, Any]] = [
        {"freeze_balance_v2": pb.TronFreezeBalanceV2(amount=5_000_000, resource="ENERGY")},
        {"unfreeze_balance_v2": pb.TronUnfreezeBalanceV2(amount=1, resource="BANDWIDTH")},
        {
            "delegate_resource": pb.TronDelegateResource(
                receiver=builders.TRON_DEST, amount=2_000_000, resource="ENERGY", lock=True,
                lock_period=86_400,
            )
        },
        {
            "undelegate_resource": pb.TronUnDelegateResource(
                receiver=builders.TRON_DEST, amount=2_000_000, resource="ENERGY"
            )
        },
        {"withdraw_expire_unfreeze": pb.TronWithdrawExpireUnfreeze()},
        {
            "vote_witness": pb.TronVoteWitness(
                votes=[
                    pb.TronVote(witness=builders.TRON_DEST, count=10),
                    pb.TronVote(witness=builders.TRON_USDT, count=1),
                ]
            )
        },
    ]  # fmt: skip
    seeds = []
    for contract in contracts:
        tx = pb.TronTransaction()
        tx.CopyFrom(builders.tron_item(key).tron)
        tx.ClearField("contract")
        tx.MergeFrom(pb.TronTransaction(**contract))
        seeds.append(tx)
    return seeds


def _break_tron(draw: st.DrawFn, tx: pb.TronTransaction) -> None:
    target = draw(_TRON_TARGETS)
    which = tx.WhichOneof("contract")
    if target == "network":
        tx.network = draw(_TRON_NETWORK)
    elif target == "to" and which in ("trx_transfer", "trc20_transfer"):
        getattr(tx, which).to = draw(_TRON_ANY_ADDRESS)
    elif target == "trx_amount":
        tx.trx_transfer.amount = draw(_INT64)
    elif target == "contract":
        tx.trc20_transfer.contract = draw(_TRON_ANY_ADDRESS)
    elif target == "trc20_amount":
        tx.trc20_transfer.amount = draw(DECIMAL_JUNK)
    elif target == "no_contract":
        tx.ClearField("contract")
    elif target == "ref_block_bytes":
        tx.ref_block_bytes = draw(_REF_BYTES_JUNK)
    elif target == "ref_block_hash":
        tx.ref_block_hash = draw(_REF_HASH_JUNK)
    elif target == "expiration":
        # Around the bounds relative to timestamp: equal, one past 24 hours, and anything.
        edge = st.sampled_from((tx.timestamp, tx.timestamp + MAX_LIFETIME_MS + 1))
        tx.expiration = min(draw(edge | _INT64), INT64[1])
    elif target == "timestamp":
        tx.timestamp = draw(_ANY_TIMESTAMP | st.just(tx.expiration))
    elif target == "fee_limit":
        tx.fee_limit = draw(_ANY_FEE_LIMIT)
    elif target == "empty_trx":
        tx.trx_transfer.SetInParent()
    elif target == "empty_trc20":
        tx.trc20_transfer.SetInParent()
    elif which in TRON_STAKING:
        _break_tron_staking(draw, tx, which, target)


def _break_tron_staking(draw: st.DrawFn, tx: pb.TronTransaction, which: str, target: str) -> None:
    contract = getattr(tx, which)
    fields = contract.DESCRIPTOR.fields_by_name
    if target == "resource" and "resource" in fields:
        contract.resource = draw(_RESOURCE_JUNK)
    elif target == "stake_amount" and "amount" in fields:
        contract.amount = draw(_INT64)
    elif target == "receiver" and "receiver" in fields:
        contract.receiver = draw(_TRON_ANY_ADDRESS)
    elif target == "lock" and "lock" in fields:
        contract.lock = not contract.lock
    elif target == "lock_period" and "lock_period" in fields:
        contract.lock_period = draw(_ANY_LOCK_PERIOD)
    elif target == "votes" and "votes" in fields:
        # None, more than java-tron takes, or one witness twice.
        if draw(st.booleans()):
            del contract.votes[:]
        elif contract.votes:
            contract.votes.extend([contract.votes[0]] * draw(st.sampled_from((1, MAX_VOTES))))
    elif target == "vote_witness" and "votes" in fields and contract.votes:
        contract.votes[draw(st.integers(0, len(contract.votes) - 1))].witness = draw(
            _TRON_ANY_ADDRESS
        )
    elif target == "vote_count" and "votes" in fields and contract.votes:
        contract.votes[draw(st.integers(0, len(contract.votes) - 1))].count = draw(_ANY_VOTE_COUNT)


@st.composite
def tron_tx(draw: st.DrawFn) -> pb.TronTransaction:
    """A valid transaction with zero to three fields broken."""
    tx = draw(tron_valid())
    for _ in range(draw(_BREAKS)):
        _break_tron(draw, tx)
    return tx


@st.composite
def tron_random(draw: st.DrawFn) -> pb.TronTransaction:
    """Every field hostile."""
    tx = pb.TronTransaction(
        network=draw(_TRON_NETWORK_OFTEN_VALID),
        ref_block_bytes=draw(_REF_BYTES_JUNK),
        ref_block_hash=draw(_REF_HASH_JUNK),
        expiration=draw(_INT64),
        timestamp=draw(_ANY_TIMESTAMP),
        fee_limit=draw(_ANY_FEE_LIMIT),
    )
    which = draw(_TRON_CONTRACTS)
    if which == "trx":
        tx.trx_transfer.to = draw(_TRON_ANY_ADDRESS)
        tx.trx_transfer.amount = draw(_INT64)
    elif which == "trc20":
        tx.trc20_transfer.contract = draw(_TRON_ANY_ADDRESS)
        tx.trc20_transfer.to = draw(_TRON_ANY_ADDRESS)
        tx.trc20_transfer.amount = draw(DECIMAL_JUNK)
    elif which != "none":
        _tron_staking(draw, tx, which, valid=False)
    return tx


# ---- byte mutation -------------------------------------------------------------------
#
# Most random edits of a serialized message break its framing (a length prefix
# no longer matches), and protobuf refuses it before any parser runs: one raw
# edit leaves about 20% of these messages decodable. So most edits go through
# the wire format instead: the bytes are split into (field number, wire type,
# value) records, nested messages too; one record's value, or the record list,
# is edited; and the records are written back with correct lengths. The values
# themselves (the bytes of a string, a varint) get the same flips, inserts and
# deletions. Raw edits of the final bytes still happen, at a lower rate.

_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x1A, 0x22, 0x08, 0x10)
_INTERESTING_VARINTS = (
    0, 1, 2, 3, 127, 128, 20_999, 21_000, 2**31 - 1, 2**31, 2**32 - 1, 2**32,
    2**53, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1,
)  # fmt: skip


_BYTE_OPS = st.sampled_from(("flip", "set", "insert", "delete", "repeat", "truncate", "append"))
_BYTE = st.sampled_from(_INTERESTING_BYTES) | st.integers(0, 255)
_SOME_BYTES = st.binary(min_size=1, max_size=16)
_RECORD_OPS = st.sampled_from(
    ("value", "value", "value", "delete", "duplicate", "swap", "insert", "wire_type")
)
_FIELD_NUMBER = st.integers(1, 16) | st.integers(1, 2**29 - 1)
_WIRE_TYPES = st.sampled_from((0, 1, 2, 5))
_OTHER_WIRE_TYPE = {w: st.sampled_from([v for v in (0, 1, 2, 5) if v != w]) for w in (0, 1, 2, 5)}
_VARINT = st.sampled_from(_INTERESTING_VARINTS) | st.integers(0, 2**64 - 1)
_WIRE_VALUE: dict[int, SearchStrategy[int] | SearchStrategy[bytes]] = {
    0: _VARINT,
    1: st.binary(min_size=8, max_size=8),
    2: st.binary(max_size=40),
    5: st.binary(min_size=4, max_size=4),
}
_EDIT_COUNT = st.sampled_from((1, 1, 1, 2, 2, 3, 4))


@dataclass
class _Record:
    number: int
    wire: int  # 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
    value: int | bytes


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        shift += 7
        if not byte & 0x80:
            return result, pos


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _parse_wire(data: bytes) -> list[_Record] | None:
    """The records of a serialized message, or None if it is not well framed."""
    records: list[_Record] = []
    pos = 0
    try:
        while pos < len(data):
            key, pos = _read_varint(data, pos)
            number, wire = key >> 3, key & 7
            if number == 0:
                return None
            value: int | bytes
            if wire == 0:
                value, pos = _read_varint(data, pos)
            elif wire in (1, 5):
                size = 8 if wire == 1 else 4
                value, pos = data[pos : pos + size], pos + size
            elif wire == 2:
                length, pos = _read_varint(data, pos)
                value, pos = data[pos : pos + length], pos + length
            else:
                return None
            if pos > len(data):
                return None
            records.append(_Record(number, wire, value))
    except ValueError:
        return None
    return records


def _write_wire(records: Sequence[_Record]) -> bytes:
    out = bytearray()
    for record in records:
        out += _varint(record.number << 3 | record.wire)
        if isinstance(record.value, int):
            out += _varint(record.value)
        elif record.wire == 2:
            out += _varint(len(record.value)) + record.value
        else:
            out += record.value
    return bytes(out)


def _edit_bytes(draw: st.DrawFn, value: bytes) -> bytes:
    """One raw edit: flip a bit, set, insert, delete or repeat bytes, truncate, append."""
    data = bytearray(value)
    op = draw(_BYTE_OPS)
    at = draw(st.integers(0, len(data)))
    if op == "flip" and at < len(data):
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "set" and at < len(data):
        data[at] = draw(_BYTE)
    elif op == "insert":
        data[at:at] = draw(_SOME_BYTES)
    elif op == "delete":
        del data[at : at + draw(st.integers(1, 16))]
    elif op == "repeat":
        end = min(len(data), at + draw(st.integers(1, 64)))
        data[at:at] = data[at:end] * draw(st.integers(1, 4))
    elif op == "truncate":
        del data[at:]
    else:
        data += draw(_SOME_BYTES)
    return bytes(data)


def _edit_records(draw: st.DrawFn, records: list[_Record], depth: int = 0) -> None:
    """One edit somewhere in `records`: of a value, or of the list itself."""
    op = draw(_RECORD_OPS)
    if not records or op == "insert":
        wire = draw(_WIRE_TYPES)
        record = _Record(draw(_FIELD_NUMBER), wire, draw(_WIRE_VALUE[wire]))
        records.insert(draw(st.integers(0, len(records))), record)
        return
    at = draw(st.integers(0, len(records) - 1))
    record = records[at]
    if op == "delete":
        del records[at]
    elif op == "duplicate":
        records.insert(draw(st.integers(0, len(records))), _Record(**vars(record)))
    elif op == "swap":
        other = draw(st.integers(0, len(records) - 1))
        records[at], records[other] = records[other], records[at]
    elif op == "wire_type":
        record.wire = draw(_OTHER_WIRE_TYPE[record.wire])
        record.value = draw(_WIRE_VALUE[record.wire])
    elif isinstance(record.value, int):
        flip = draw(st.booleans())
        record.value = record.value ^ (1 << draw(st.integers(0, 63))) if flip else draw(_VARINT)
    elif record.wire == 2:
        nested = _parse_wire(record.value) if depth < 4 else None
        if nested and draw(st.booleans()):
            _edit_records(draw, nested, depth + 1)
            record.value = _write_wire(nested)
        else:
            record.value = _edit_bytes(draw, record.value)
    else:  # fixed-size: keep the size
        size = len(record.value)
        record.value = _edit_bytes(draw, record.value)[:size].ljust(size, b"\0")


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """`seed` after one to four edits, most through the wire format, some raw."""
    data = seed
    for _ in range(draw(_EDIT_COUNT)):
        records = _parse_wire(data)
        if records is not None and draw(st.integers(0, 9)) < 8:
            _edit_records(draw, records)
            data = _write_wire(records)
        else:
            data = _edit_bytes(draw, data)
    return data


def mutations_of(
    seeds: Sequence[bytes], valid: SearchStrategy[Message] | None = None
) -> SearchStrategy[bytes]:
    """Mutated serializations of fixed seeds and (if given) of generated valid messages."""
    source: SearchStrategy[bytes] = st.sampled_from(list(seeds))
    if valid is not None:
        serialize: Callable[[Message], bytes] = operator.methodcaller("SerializeToString")
        source = source | valid.map(serialize)
    return source.flatmap(mutated)
