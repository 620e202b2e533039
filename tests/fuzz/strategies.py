"""Hypothesis strategies shared by the fuzz suite: keys, hostile values, every chain's addresses.

Each chain family has its own module (bitcoin_strategies, evm_strategies,
tron_strategies; message_strategies and psbt_strategies for the other item
kinds); wire_mutation edits serialized messages below the schema.

Every chain has two generators. `*_tx()` starts from a transaction that
should sign and breaks up to three of its fields (zero breaks keeps the
signing path covered too); `*_random()` fills every field with hostile values.

Strategies are built once, at import: building one inside a draw costs more
than drawing from it, and the suite draws a few hundred thousand values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from custos.common.secp256k1 import compressed
from custos.proto.custos.v1 import keys_pb2
from custos.signer.chains.bitcoin_address import NETWORKS as BTC_NETWORKS
from custos.signer.chains.bitcoin_address import b58check_encode, encode_segwit
from custos.signer.chains.evm import UINT256_MAX, checksum_address
from custos.signer.chains.registry import all_addresses
from custos.signer.chains.tron import to_base58
from tests import builders
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
ONE_IN_TEN = st.integers(0, 9).map(lambda n: n == 0)


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


def hex_of(size: int) -> SearchStrategy[str]:
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


# How many fields a `*_tx()` generator breaks in a valid transaction.
BREAKS = st.sampled_from((0, 1, 1, 2, 3))
