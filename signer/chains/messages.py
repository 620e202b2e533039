"""Message signing: EIP-191 personal_sign, EIP-712 typed data, Tron (TIP-191), Bitcoin.

Each adapter computes the digest itself from the message (a caller never
supplies a hash) and answers the signature in the form the ecosystem's
verifiers take: 0x r||s||v with v = 27/28 for EVM and Tron (ethers'
verifyMessage, eth-account's recover_message, TronWeb's verifyMessageV2),
base64 of a 65-byte compact signature with a BIP137 header for Bitcoin
(Bitcoin Core's verifymessage for P2PKH; BIP137 wallets for P2WPKH).

Typed data that grants spending is decoded into `Message.grants` so that
policy judges spender, token and amount, and velocity limits charge them,
as for an ERC-20 approve: EIP-2612 `Permit` (and DAI's `allowed` variant),
Uniswap Permit2 `PermitSingle`, `PermitBatch`, `PermitTransferFrom` and
`PermitBatchTransferFrom`. A document of one of those primary types that does
not have the expected fields is refused, never signed undecoded.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from eth_hash.auto import keccak

from custos.common.intent import ContractCall, Message
from custos.common.secp256k1 import RecoverableSignature, compressed
from custos.signer.chains import eip712
from custos.signer.chains import tron as tron_chain
from custos.signer.chains.base import Address, Intent, InvalidField, KeyInfo, PreparedTx, SignedTx
from custos.signer.chains.bitcoin_address import NETWORKS as BITCOIN_NETWORKS
from custos.signer.chains.bitcoin_address import p2pkh_address, p2wpkh_address
from custos.signer.chains.evm import CHAINS, key_address
from custos.signer.chains.items import BitcoinMessage, EvmPersonalMessage, EvmTypedData, TronMessage
from custos.signer.chains.limits import (
    DEFAULT_LIMITS,
    ITEM_UNITS,
    PARSE_WEIGHT,
    ChainLimits,
    WorkBudget,
)

UINT256_MAX = 2**256 - 1
EIP191_PREFIX = b"\x19Ethereum Signed Message:\n"
TRON_PREFIX = b"\x19TRON Signed Message:\n"
BITCOIN_MAGIC = b"Bitcoin Signed Message:\n"
# BIP137 header bytes: 27 + recovery id, + 4 for a compressed key's P2PKH
# address, + 12 for its P2WPKH address (+ 8 would be P2SH-P2WPKH).
BIP137_HEADER = {"p2pkh": 31, "p2wpkh": 39}


@dataclass(frozen=True, slots=True)
class _Unsigned:
    """What assemble() needs: the digest, the address, and how to spell the signature."""

    digest: bytes
    address: str
    style: str  # "eth" (0x r||s||v, v 27/28) or p2pkh / p2wpkh (BIP137 base64)
    tx_id: str


def eip191_digest(message: bytes) -> bytes:
    return keccak(EIP191_PREFIX + str(len(message)).encode() + message)


def tron_digest(message: bytes) -> bytes:
    return keccak(TRON_PREFIX + str(len(message)).encode() + message)


def _compact_size(n: int) -> bytes:
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFFFFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def bitcoin_message_digest(message: bytes) -> bytes:
    """Double SHA-256 of the serialized magic and message (Bitcoin Core's MessageHash)."""
    data = _compact_size(len(BITCOIN_MAGIC)) + BITCOIN_MAGIC + _compact_size(len(message)) + message
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _message_bytes(field: str, data: bytes, limits: ChainLimits) -> bytes:
    if not data:
        raise InvalidField(field, "required: the message to sign (raw bytes)")
    if len(data) > limits.message_max_bytes:
        raise InvalidField(
            field,
            f"{len(data)} bytes exceed limits.message_max_bytes = {limits.message_max_bytes}",
        )
    return bytes(data)


def _evm_chain(field: str, chain_id: int) -> tuple[str, str]:
    chain_net = CHAINS.get(chain_id)
    if chain_net is None:
        known = ", ".join(str(c) for c in CHAINS)
        raise InvalidField(field, f"unknown chain id {chain_id} (known: {known})")
    return chain_net


def _charge(budget: WorkBudget | None, units: int, field: str) -> None:
    if budget is not None:
        budget.charge(ITEM_UNITS + units, field)


def _assemble(prepared: PreparedTx, signatures: Sequence[RecoverableSignature]) -> SignedTx:
    unsigned = prepared.unsigned
    if not isinstance(unsigned, _Unsigned):
        raise TypeError("assemble() needs a PreparedTx made by a message adapter")
    if len(signatures) != 1:
        raise ValueError(f"a message takes 1 signature, got {len(signatures)}")
    sig = signatures[0]
    if sig.recovery_id not in (0, 1):
        raise ValueError(f"recovery id must be 0 or 1, got {sig.recovery_id}")
    if unsigned.style == "eth":
        raw = "0x" + (sig.compact() + bytes([27 + sig.recovery_id])).hex()
    else:
        header = BIP137_HEADER[unsigned.style] + sig.recovery_id
        raw = base64.b64encode(bytes([header]) + sig.compact()).decode("ascii")
    intent = prepared.intent
    return SignedTx(
        chain=intent.chain,
        network=intent.network,
        address=unsigned.address,
        tx_id=unsigned.tx_id,
        raw_tx=raw,
    )


def _message_intent(
    chain: str, network: str, key: KeyInfo, address: str, message: Message
) -> Intent:
    return Intent(
        chain=chain,
        network=network,
        key_id=key.key_id,
        from_address=address,
        transfers=(),
        fee=0,
        message=message,
    )


class EvmMessageAdapter:
    """EIP-191 personal_sign (version 0x45) on Ethereum and BNB Smart Chain keys."""

    kind = "evm_message"

    def __init__(self, limits: ChainLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def addresses(self, public_key: bytes) -> list[Address]:
        return []  # the EVM transaction adapter lists the key's accounts

    def prepare(
        self, tx: EvmPersonalMessage, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        _charge(budget, tx.wire_size, self.kind)
        chain, network = _evm_chain("evm_message.chain_id", tx.chain_id)
        data = _message_bytes("evm_message.message", tx.message, self._limits)
        digest = eip191_digest(data)
        address = key_address(key.public_key)
        intent = _message_intent(chain, network, key, address, Message("personal_sign", len(data)))
        return PreparedTx(intent, (digest,), _Unsigned(digest, address, "eth", "0x" + digest.hex()))

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        return _assemble(prepared, signatures)


# ---- EIP-712 spending grants ----------------------------------------------

_EIP2612 = {"owner": "address", "spender": "address", "value": "uint256", "nonce": "uint256",
            "deadline": "uint256"}  # fmt: skip
_DAI = {"holder": "address", "spender": "address", "nonce": "uint256", "expiry": "uint256",
        "allowed": "bool"}  # fmt: skip
_PERMIT2_DETAILS = {"token": "address", "amount": "uint160", "expiration": "uint48",
                    "nonce": "uint48"}  # fmt: skip
_TOKEN_PERMISSIONS = {"token": "address", "amount": "uint256"}
GRANT_TYPES = frozenset(
    {"Permit", "PermitSingle", "PermitBatch", "PermitTransferFrom", "PermitBatchTransferFrom"}
)


def _fields(types: dict[str, list[tuple[str, str]]], name: str) -> dict[str, str]:
    return dict(types.get(name, ()))


def _grant(token: str, spender: str, amount: int) -> ContractCall:
    return ContractCall(token, "permit", (("spender", spender), ("amount", str(amount))))


def _grants(
    doc: eip712.TypedData, types: dict[str, list[tuple[str, str]]], field: str
) -> tuple[ContractCall, ...]:
    """The allowances a spending typed-data document grants; InvalidField if its shape is off."""
    primary, message = doc.primary_type, doc.message
    shape = _fields(types, primary)
    where = f"{field}.types.{primary}"
    if primary == "Permit":
        token = doc.domain.get("verifyingContract")
        if token is None:
            raise InvalidField(
                f"{field}.domain.verifyingContract", "required for a Permit: it is the token"
            )
        if shape == _EIP2612:
            return (_grant(token, message["spender"], message["value"]),)
        if shape == _DAI:
            # DAI's permit grants all or nothing.
            return (_grant(token, message["spender"], UINT256_MAX if message["allowed"] else 0),)
        raise InvalidField(
            where, "a Permit must have EIP-2612's fields (owner, spender, value, nonce, deadline)"
        )
    if primary in ("PermitSingle", "PermitBatch"):
        details_type = shape.get("details", "")
        single = primary == "PermitSingle"
        expected = {
            "details": "PermitDetails" if single else "PermitDetails[]",
            "spender": "address",
            "sigDeadline": "uint256",
        }
        if shape != expected or _fields(types, "PermitDetails") != _PERMIT2_DETAILS:
            raise InvalidField(where, f"not Permit2's {primary} (details, spender, sigDeadline)")
        details = [message["details"]] if details_type == "PermitDetails" else message["details"]
        return tuple(_grant(d["token"], message["spender"], d["amount"]) for d in details)
    single = primary == "PermitTransferFrom"
    expected = {
        "permitted": "TokenPermissions" if single else "TokenPermissions[]",
        "spender": "address",
        "nonce": "uint256",
        "deadline": "uint256",
    }
    if shape != expected or _fields(types, "TokenPermissions") != _TOKEN_PERMISSIONS:
        raise InvalidField(where, f"not Permit2's {primary} (permitted, spender, nonce, deadline)")
    permitted = [message["permitted"]] if single else message["permitted"]
    return tuple(_grant(p["token"], message["spender"], p["amount"]) for p in permitted)


class EvmTypedDataAdapter:
    """EIP-712 typed data (eth_signTypedData_v4) on Ethereum and BNB Smart Chain keys."""

    kind = "evm_typed_data"

    def __init__(self, limits: ChainLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def addresses(self, public_key: bytes) -> list[Address]:
        return []

    def prepare(
        self, tx: EvmTypedData, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        limits = self._limits
        # Parsing and hashing JSON costs about as much per byte as Bitcoin's parsing.
        _charge(budget, PARSE_WEIGHT * tx.wire_size, self.kind)
        chain, network = _evm_chain("evm_typed_data.chain_id", tx.chain_id)
        field = "evm_typed_data.typed_data"
        doc = eip712.parse_typed_data(
            tx.typed_data, field, limits.typed_data_max_bytes, limits.typed_data_max_depth
        )
        domain_chain = doc.domain.get("chainId")
        if domain_chain is not None:
            if domain_chain not in CHAINS:
                known = ", ".join(str(c) for c in CHAINS)
                raise InvalidField(
                    f"{field}.domain.chainId",
                    f"unknown EVM chain id {domain_chain} (known: {known})",
                )
            if domain_chain != tx.chain_id:
                # The signature commits to the domain's chain: the item must name
                # the same one, so that policy judges the chain the grant is valid on.
                raise InvalidField(
                    f"{field}.domain.chainId",
                    f"is {domain_chain} but the item's chain_id is {tx.chain_id}; they must agree",
                )
        grants: tuple[ContractCall, ...] = ()
        if doc.primary_type in GRANT_TYPES:
            if domain_chain is None:
                raise InvalidField(
                    f"{field}.domain.chainId",
                    f"required for {doc.primary_type}: a spending grant must name its chain",
                )
            grants = _grants(doc, doc.types, field)
        address = key_address(key.public_key)
        facts = Message(
            kind="typed_data",
            size=doc.size,
            domain_name=doc.domain.get("name"),
            domain_version=doc.domain.get("version"),
            chain_id=domain_chain,
            verifying_contract=doc.domain.get("verifyingContract"),
            primary_type=doc.primary_type,
            grants=grants,
        )
        intent = _message_intent(chain, network, key, address, facts)
        unsigned = _Unsigned(doc.digest, address, "eth", "0x" + doc.digest.hex())
        return PreparedTx(intent, (doc.digest,), unsigned)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        return _assemble(prepared, signatures)


class TronMessageAdapter:
    """TIP-191 messages, as TronWeb's signMessageV2 signs and verifyMessageV2 checks."""

    kind = "tron_message"

    def __init__(self, limits: ChainLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def addresses(self, public_key: bytes) -> list[Address]:
        return []

    def prepare(
        self, tx: TronMessage, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        _charge(budget, tx.wire_size, self.kind)
        if tx.network not in tron_chain.NETWORKS:
            raise InvalidField(
                "tron_message.network", f"must be one of {', '.join(tron_chain.NETWORKS)}"
            )
        data = _message_bytes("tron_message.message", tx.message, self._limits)
        digest = tron_digest(data)
        address = tron_chain.key_address(key.public_key)
        intent = _message_intent(
            "tron", tx.network, key, address, Message("tron_message", len(data))
        )
        return PreparedTx(intent, (digest,), _Unsigned(digest, address, "eth", digest.hex()))

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        return _assemble(prepared, signatures)


class BitcoinMessageAdapter:
    """ "Bitcoin Signed Message" for the key's compressed P2PKH or its P2WPKH address."""

    kind = "bitcoin_message"

    def __init__(self, limits: ChainLimits = DEFAULT_LIMITS) -> None:
        self._limits = limits

    def addresses(self, public_key: bytes) -> list[Address]:
        return []

    def prepare(
        self, tx: BitcoinMessage, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        _charge(budget, tx.wire_size, self.kind)
        if tx.network not in BITCOIN_NETWORKS:
            raise InvalidField(
                "bitcoin_message.network", f"must be one of {', '.join(BITCOIN_NETWORKS)}"
            )
        if tx.address_type not in BIP137_HEADER:
            raise InvalidField("bitcoin_message.address_type", "must be p2pkh or p2wpkh")
        data = _message_bytes("bitcoin_message.message", tx.message, self._limits)
        digest = bitcoin_message_digest(data)
        public_key = compressed(key.public_key)
        make = p2pkh_address if tx.address_type == "p2pkh" else p2wpkh_address
        address = make(public_key, tx.network)
        intent = _message_intent(
            "bitcoin", tx.network, key, address, Message("bitcoin_message", len(data))
        )
        unsigned = _Unsigned(digest, address, tx.address_type, digest.hex())
        return PreparedTx(intent, (digest,), unsigned)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        return _assemble(prepared, signatures)
