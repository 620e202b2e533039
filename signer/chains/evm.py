"""Ethereum and BNB Smart Chain: legacy (EIP-155), EIP-2930 and EIP-1559 transactions.

This is the signing hot path, so the RLP encoding is written out
(signer.chains.rlp_encode) and done once per transaction: the signing payload
and the signed transaction share the encoding of the fields, so assembling a
signed transaction encodes only the signature. eth-account's helpers take
about 140 µs just to build and hash an unsigned transaction. The tests use
eth-account and `rlp` as the independent second implementations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from custos.common.secp256k1 import RecoverableSignature, uncompressed
from custos.signer.chains.base import (
    Address,
    ContractCall,
    Intent,
    InvalidField,
    KeyInfo,
    PreparedTx,
    SignedTx,
    Transfer,
)
from custos.signer.chains.items import EvmTransaction, EvmTxType
from custos.signer.chains.keccak import keccak
from custos.signer.chains.limits import DEFAULT_LIMITS, ITEM_UNITS, ChainLimits, WorkBudget
from custos.signer.chains.rlp_encode import list_of, string, strings, uint

CHAINS: dict[int, tuple[str, str]] = {
    1: ("ethereum", "mainnet"),
    11155111: ("ethereum", "sepolia"),
    17000: ("ethereum", "holesky"),
    56: ("bsc", "mainnet"),
    97: ("bsc", "testnet"),
}

# EIP-2718 type byte per transaction type; legacy has none and is marked 0.
_TX_TYPES: dict[EvmTxType, int] = {
    EvmTxType.LEGACY: 0,
    EvmTxType.EIP2930: 1,
    EvmTxType.EIP1559: 2,
}

UINT256_MAX = 2**256 - 1
# EIP-2681: a nonce of 2^64-1 could never be followed by another transaction.
NONCE_LIMIT = 2**64 - 1
MIN_GAS = 21000
# Intrinsic gas (Yellow Paper; EIP-2028 calldata; EIP-2930 access lists): a
# transaction whose gas_limit is below it is invalid, and one with a large
# access list or calldata that its gas cannot pay for is work for nothing.
GAS_PER_ZERO_BYTE = 4
GAS_PER_NONZERO_BYTE = 16
GAS_PER_ACCESS_ADDRESS = 2400
GAS_PER_STORAGE_KEY = 1900
# EIP-7623 (Ethereum Prague; BSC Pascal): calldata also has a floor price of 10
# gas per token (a zero byte is 1 token, another byte 4) that gas_limit must cover.
FLOOR_GAS_PER_TOKEN = 10
GWEI = 10**9
ETHER = 10**18
_UINT256_DIGITS = len(str(UINT256_MAX))
_HEX = re.compile(r"[0-9a-fA-F]*")
_ERC20_TRANSFER = bytes.fromhex("a9059cbb")
_ERC20_APPROVE = bytes.fromhex("095ea7b3")
_ERC20_TRANSFER_FROM = bytes.fromhex("23b872dd")  # transferFrom(address,address,uint256)
_ERC20_INCREASE_ALLOWANCE = bytes.fromhex("39509351")  # increaseAllowance(address,uint256)
_ERC20_METHODS = {
    _ERC20_TRANSFER: "transfer",
    _ERC20_APPROVE: "approve",
    _ERC20_TRANSFER_FROM: "transferFrom",
    _ERC20_INCREASE_ALLOWANCE: "increaseAllowance",
}


@lru_cache(maxsize=4096)
def checksum_address(raw: bytes) -> str:
    """EIP-55 mixed-case form of a 20-byte address."""
    lower = raw.hex()
    hashed = keccak(lower.encode("ascii")).hex()
    # Hex digit i is upper-cased when nibble i of the hash is 8 or more; the
    # hash has 64 nibbles, so zip stops at the 40 of the address.
    return "0x" + "".join(c.upper() if h > "7" else c for c, h in zip(lower, hashed, strict=False))


@lru_cache(maxsize=1024)
def key_address(public_key: bytes) -> str:
    """The checksummed account address of a SEC1 public key."""
    if len(public_key) != 65 or public_key[0] != 4:
        public_key = uncompressed(public_key)
    return checksum_address(keccak(public_key[1:])[12:])


@dataclass(frozen=True, slots=True)
class EvmTx:
    """A validated EVM transaction; produces its signing payload and signed encoding."""

    tx_type: int  # EIP-2718 type byte; 0 for legacy
    chain_id: int
    nonce: int
    gas_price: int  # legacy and EIP-2930 only
    max_priority_fee_per_gas: int  # EIP-1559 only
    max_fee_per_gas: int  # EIP-1559 only
    gas_limit: int
    to: bytes
    value: int
    data: bytes
    access_list: tuple[tuple[bytes, tuple[bytes, ...]], ...]

    # The RLP of the fields above in the transaction type's order, concatenated:
    # the head of both the signing payload and the signed transaction.
    encoded_fields: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "encoded_fields", self._encode_fields())

    def _encode_fields(self) -> bytes:
        tail = uint(self.gas_limit) + string(self.to) + uint(self.value) + string(self.data)
        if self.tx_type == 0:
            return uint(self.nonce) + uint(self.gas_price) + tail
        if self.tx_type == 1:
            fees = uint(self.gas_price)
        else:
            fees = uint(self.max_priority_fee_per_gas) + uint(self.max_fee_per_gas)
        access_list = list_of(
            b"".join(list_of(string(address) + strings(keys)) for address, keys in self.access_list)
        )
        return uint(self.chain_id) + uint(self.nonce) + fees + tail + access_list

    def signing_payload(self) -> bytes:
        if self.tx_type == 0:
            # EIP-155: chain id, 0, 0 in place of v, r, s.
            return list_of(self.encoded_fields + uint(self.chain_id) + b"\x80\x80")
        return bytes((self.tx_type,)) + list_of(self.encoded_fields)

    def signed(self, sig: RecoverableSignature) -> bytes:
        signature = uint(sig.r) + uint(sig.s)
        if self.tx_type == 0:
            v = sig.recovery_id + 35 + 2 * self.chain_id
            return list_of(self.encoded_fields + uint(v) + signature)
        body = list_of(self.encoded_fields + uint(sig.recovery_id) + signature)
        return bytes((self.tx_type,)) + body


def _show(text: str) -> str:
    # Error messages reach logs and callers; a huge field must not be echoed whole.
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _address(field: str, text: str) -> bytes:
    if len(text) != 42 or not text.startswith("0x") or not _HEX.fullmatch(text, 2):
        raise InvalidField(field, f"must be a 0x-prefixed 20-byte hex address, got {_show(text)}")
    body = text[2:]
    raw = bytes.fromhex(body)
    # All-lower and all-upper carry no checksum (EIP-55); mixed case must match it.
    # The message leaves out the right checksum: echoing it would invite callers
    # to paste it over a mistyped address, which the checksum exists to catch.
    if body != body.lower() and body != body.upper() and checksum_address(raw) != text:
        raise InvalidField(field, "bad checksum (EIP-55): mixed-case address is mistyped")
    return raw


def _hex_bytes(field: str, text: str) -> bytes:
    if not text:
        return b""
    if not text.startswith("0x"):
        raise InvalidField(field, "must be 0x-prefixed hex")
    if len(text) % 2:
        raise InvalidField(field, "hex has an odd number of digits")
    if not _HEX.fullmatch(text, 2):
        raise InvalidField(field, "contains characters that are not hex digits")
    return bytes.fromhex(text[2:])


def _uint256(field: str, text: str) -> int:
    if text.startswith("-"):
        raise InvalidField(field, f"must not be negative, got {_show(text)}")
    if text.startswith("+"):
        raise InvalidField(field, f"must be plain digits without a '+' sign, got {_show(text)}")
    # isascii() because str.isdigit() also accepts digits of other scripts and superscripts.
    if not (text.isascii() and text.isdigit()):
        raise InvalidField(
            field, f"must be a decimal integer of digits 0-9 only, got {_show(text)}"
        )
    # Checking the length first keeps int() away from huge strings. int() gets
    # the digits without leading zeros: it refuses strings over 4300 digits with
    # a ValueError, and "0" * 5000 + "1" is a small number (found by fuzzing).
    digits = text.lstrip("0") or "0"
    if len(digits) > _UINT256_DIGITS or int(digits) > UINT256_MAX:
        raise InvalidField(field, "overflows uint256 (must be at most 2^256-1)")
    return int(digits)


def _fee_field(field: str, text: str, tx_kind: str) -> int:
    if not text:
        raise InvalidField(field, f"required for {tx_kind} transactions")
    return _uint256(field, text)


def _refuse(field: str, text: str, reason: str) -> None:
    if text:
        raise InvalidField(field, reason)


def intrinsic_gas(data: bytes, access_list: Sequence[tuple[bytes, Sequence[bytes]]]) -> int:
    """The least gas a transaction (not a contract creation) can declare to be valid."""
    zeros = data.count(0)
    nonzero = len(data) - zeros
    gas = MIN_GAS + GAS_PER_ZERO_BYTE * zeros + GAS_PER_NONZERO_BYTE * nonzero
    gas += GAS_PER_ACCESS_ADDRESS * len(access_list)
    gas += GAS_PER_STORAGE_KEY * sum(len(keys) for _, keys in access_list)
    floor = MIN_GAS + FLOOR_GAS_PER_TOKEN * (zeros + 4 * nonzero)
    return max(gas, floor)


def _check_sizes(tx: EvmTransaction, limits: ChainLimits) -> None:
    """Bound the variable-size fields before any of them is decoded."""
    max_data = limits.evm_max_data_bytes
    if len(tx.data) > 2 + 2 * max_data:
        raise InvalidField(
            "evm.data",
            f"{(len(tx.data) - 2) // 2} bytes exceed limits.evm_max_data_bytes = {max_data}",
        )
    if len(tx.access_list) > limits.evm_max_access_list_addresses:
        raise InvalidField(
            "evm.access_list",
            f"{len(tx.access_list)} entries exceed limits.evm_max_access_list_addresses = "
            f"{limits.evm_max_access_list_addresses}",
        )
    keys = sum(len(entry.storage_keys) for entry in tx.access_list)
    if keys > limits.evm_max_access_list_storage_keys:
        raise InvalidField(
            "evm.access_list",
            f"{keys} storage keys exceed limits.evm_max_access_list_storage_keys = "
            f"{limits.evm_max_access_list_storage_keys}",
        )


def _at_most(field: str, value: int, limit: int, key: str, unit: int) -> int:
    if value > limit:
        raise InvalidField(field, f"{value} wei exceeds limits.{key} = {limit // unit:,}")
    return value


def _access_list(tx: EvmTransaction) -> tuple[tuple[bytes, tuple[bytes, ...]], ...]:
    entries = []
    for i, entry in enumerate(tx.access_list):
        path = f"evm.access_list[{i}]"
        address = _address(f"{path}.address", entry.address)
        keys = []
        for j, key_text in enumerate(entry.storage_keys):
            key = _hex_bytes(f"{path}.storage_keys[{j}]", key_text)
            if len(key) != 32:
                raise InvalidField(
                    f"{path}.storage_keys[{j}]", f"must be 32 bytes of hex, got {len(key)} bytes"
                )
            keys.append(key)
        entries.append((address, tuple(keys)))
    return tuple(entries)


def _decode_call(to: str, data: bytes) -> tuple[ContractCall | None, Transfer | None]:
    if not data:
        return None, None
    if len(data) < 4:
        raise InvalidField("evm.data", "calldata is shorter than a 4-byte function selector")
    selector = data[:4]
    method = _ERC20_METHODS.get(selector)
    if method is None:
        # Not decoded: policy treats what it moves as unknown (common.intent).
        return ContractCall(to, "0x" + selector.hex()), None
    # Policy acts on the decoded arguments, so anything a lenient ABI decoder
    # would accept but read differently (trailing bytes, dirty padding) is refused.
    addresses = 2 if method == "transferFrom" else 1
    size = 4 + 32 * (addresses + 1)
    if len(data) != size:
        raise InvalidField(
            "evm.data", f"ERC-20 {method} calldata must be {size} bytes, got {len(data)}"
        )
    words = [data[4 + 32 * i : 36 + 32 * i] for i in range(addresses + 1)]
    if any(any(word[:12]) for word in words[:addresses]):
        raise InvalidField(
            "evm.data", f"ERC-20 {method} address argument has non-zero padding bytes"
        )
    parties = [checksum_address(word[12:]) for word in words[:addresses]]
    amount = int.from_bytes(words[-1], "big")
    if method == "transfer":
        call = ContractCall(to, method, (("to", parties[0]), ("amount", str(amount))))
        return call, Transfer(parties[0], to, amount)
    if method == "transferFrom":
        # Moves another account's tokens with this key's allowance: a known
        # amount of the token, paid to `to`.
        args = (("from", parties[0]), ("to", parties[1]), ("amount", str(amount)))
        return ContractCall(to, method, args), Transfer(parties[1], to, amount)
    return ContractCall(to, method, (("spender", parties[0]), ("amount", str(amount)))), None


def _fees(
    tx: EvmTransaction, tx_type: int, limits: ChainLimits
) -> tuple[int, int, int, tuple[tuple[str, int], ...]]:
    """(gas_price, max_fee_per_gas, max_priority_fee_per_gas, fee_details), each bounded."""
    max_price = limits.evm_max_fee_per_gas_gwei * GWEI
    price_key = "evm_max_fee_per_gas_gwei"
    gas_price = max_fee = priority_fee = 0
    fee_details: tuple[tuple[str, int], ...]
    if tx_type == 2:
        _refuse("evm.gas_price", tx.gas_price, "not used by EIP-1559; set max_fee_per_gas")
        max_fee = _fee_field("evm.max_fee_per_gas", tx.max_fee_per_gas, "EIP-1559")
        _at_most("evm.max_fee_per_gas", max_fee, max_price, price_key, GWEI)
        priority_fee = _fee_field(
            "evm.max_priority_fee_per_gas", tx.max_priority_fee_per_gas, "EIP-1559"
        )
        if priority_fee > max_fee:
            raise InvalidField("evm.max_priority_fee_per_gas", "must not exceed max_fee_per_gas")
        fee_details = (
            ("gas_limit", tx.gas_limit),
            ("max_fee_per_gas", max_fee),
            ("max_priority_fee_per_gas", priority_fee),
        )
    else:
        label = "legacy" if tx_type == 0 else "EIP-2930"
        only_1559 = f"only for EIP-1559 transactions; {label} uses gas_price"
        _refuse("evm.max_fee_per_gas", tx.max_fee_per_gas, only_1559)
        _refuse("evm.max_priority_fee_per_gas", tx.max_priority_fee_per_gas, only_1559)
        gas_price = _fee_field("evm.gas_price", tx.gas_price, label)
        _at_most("evm.gas_price", gas_price, max_price, price_key, GWEI)
        fee_details = (("gas_limit", tx.gas_limit), ("gas_price", gas_price))
    return gas_price, max_fee, priority_fee, fee_details


class EvmAdapter:
    """Ethereum and BNB Smart Chain signing: legacy (EIP-155), EIP-2930 and EIP-1559."""

    kind = "evm"

    def __init__(self, limits: ChainLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def addresses(self, public_key: bytes) -> list[Address]:
        address = key_address(public_key)
        return [Address(chain, net, "account", address) for chain, net in CHAINS.values()]

    def prepare(
        self, tx: EvmTransaction, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        limits = self._limits
        if budget is not None:
            budget.charge(ITEM_UNITS + tx.wire_size, "evm")
        chain_net = CHAINS.get(tx.chain_id)
        if chain_net is None:
            known = ", ".join(str(c) for c in CHAINS)
            raise InvalidField("evm.chain_id", f"unknown chain id {tx.chain_id} (known: {known})")
        tx_type = _TX_TYPES.get(tx.type)
        if tx_type is None:
            raise InvalidField("evm.type", "transaction type must be LEGACY, EIP2930 or EIP1559")
        if tx.nonce >= NONCE_LIMIT:
            raise InvalidField("evm.nonce", "must be below 2^64-1 (EIP-2681)")
        if not tx.to:
            raise InvalidField("evm.to", "required: contract creation is not supported")
        _check_sizes(tx, limits)
        to_raw = _address("evm.to", tx.to)
        max_value = limits.evm_max_value_ether * ETHER
        value = _uint256("evm.value", tx.value) if tx.value else 0
        _at_most("evm.value", value, max_value, "evm_max_value_ether", ETHER)
        data = _hex_bytes("evm.data", tx.data)
        if tx.gas_limit < MIN_GAS:
            raise InvalidField(
                "evm.gas_limit", f"must be at least {MIN_GAS}, the gas of a plain transfer"
            )
        gas_key = f"{chain_net[0]}_max_gas_limit"
        max_gas: int = getattr(limits, gas_key)
        if tx.gas_limit > max_gas:
            raise InvalidField(
                "evm.gas_limit", f"{tx.gas_limit} exceeds limits.{gas_key} = {max_gas}"
            )

        gas_price, max_fee, priority_fee, fee_details = _fees(tx, tx_type, limits)
        if tx_type == 0 and len(tx.access_list):
            raise InvalidField("evm.access_list", "must be empty for legacy transactions")
        access_list = _access_list(tx)
        needed = intrinsic_gas(data, access_list)
        if tx.gas_limit < needed:
            raise InvalidField(
                "evm.gas_limit",
                f"{tx.gas_limit} is below the transaction's intrinsic gas {needed} "
                "(21000 plus calldata (EIP-2028, EIP-7623) plus access list (EIP-2930))",
            )

        to = checksum_address(to_raw)
        call, token_transfer = _decode_call(to, data)
        transfers: list[Transfer] = []
        if value:
            transfers.append(Transfer(to, "native", value))
        if token_transfer is not None:
            transfers.append(token_transfer)

        parsed = EvmTx(
            tx_type=tx_type,
            chain_id=tx.chain_id,
            nonce=tx.nonce,
            gas_price=gas_price,
            max_priority_fee_per_gas=priority_fee,
            max_fee_per_gas=max_fee,
            gas_limit=tx.gas_limit,
            to=to_raw,
            value=value,
            data=data,
            access_list=access_list,
        )
        intent = Intent(
            chain=chain_net[0],
            network=chain_net[1],
            key_id=key.key_id,
            from_address=key_address(key.public_key),
            transfers=tuple(transfers),
            fee=tx.gas_limit * (max_fee if tx_type == 2 else gas_price),
            contract_call=call,
            fee_details=fee_details,
        )
        return PreparedTx(intent, (keccak(parsed.signing_payload()),), parsed)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        if not isinstance(prepared.unsigned, EvmTx):
            raise TypeError("assemble() needs a PreparedTx made by EvmAdapter.prepare()")
        if len(signatures) != 1:
            raise ValueError(f"an EVM transaction takes 1 signature, got {len(signatures)}")
        sig = signatures[0]
        if sig.recovery_id not in (0, 1):
            raise ValueError(f"recovery id must be 0 or 1, got {sig.recovery_id}")
        raw = prepared.unsigned.signed(sig)
        intent = prepared.intent
        return SignedTx(
            chain=intent.chain,
            network=intent.network,
            address=intent.from_address,
            tx_id="0x" + keccak(raw).hex(),
            raw_tx="0x" + raw.hex(),
            max_fee=intent.fee,
        )
