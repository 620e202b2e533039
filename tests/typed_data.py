"""EIP-712 documents for tests: the specification's Mail example, permits, message items."""

from __future__ import annotations

import copy
import json
from typing import Any

from custos.proto.custos.v1 import signer_pb2 as pb

# EIP-712's example (eips.ethereum.org/EIPS/eip-712, assets/eip-712/Example.js):
# its test prints these three hashes for this document.
MAIL: dict[str, Any] = {
    "types": {
        "EIP712Domain": [
            {"name": "name", "type": "string"},
            {"name": "version", "type": "string"},
            {"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"},
        ],
        "Person": [
            {"name": "name", "type": "string"},
            {"name": "wallet", "type": "address"},
        ],
        "Mail": [
            {"name": "from", "type": "Person"},
            {"name": "to", "type": "Person"},
            {"name": "contents", "type": "string"},
        ],
    },
    "primaryType": "Mail",
    "domain": {
        "name": "Ether Mail",
        "version": "1",
        "chainId": 1,
        "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC",
    },
    "message": {
        "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
        "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
        "contents": "Hello, Bob!",
    },
}
MAIL_DOMAIN_SEPARATOR = "f2cee375fa42b42143804025fc449deafd50cc031ca257e0b194a650a912090f"
MAIL_HASH_STRUCT = "c52c0ee5d84264471806290a3f2c4cecfc5490626bf912d01f240d7a274b371e"
MAIL_DIGEST = "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"

PERMIT2 = "0x000000000022D473030F116dDEE9F6B43aC78BA3"  # Uniswap Permit2, same on every chain
_DOMAIN_NVCV = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_DOMAIN_NCV = [
    {"name": "name", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_DETAILS = [
    {"name": "token", "type": "address"},
    {"name": "amount", "type": "uint160"},
    {"name": "expiration", "type": "uint48"},
    {"name": "nonce", "type": "uint48"},
]


def mail(**domain: Any) -> dict[str, Any]:
    doc = copy.deepcopy(MAIL)
    doc["domain"].update(domain)
    return doc


def eip2612_permit(
    token: str, owner: str, spender: str, value: int, chain_id: int, name: str = "USD Coin"
) -> dict[str, Any]:
    """An EIP-2612 Permit as USDC's (FiatTokenV2) domain spells it."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN_NVCV,
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": {"name": name, "version": "2", "chainId": chain_id, "verifyingContract": token},
        "message": {
            "owner": owner,
            "spender": spender,
            "value": str(value),
            "nonce": 0,
            "deadline": 1_900_000_000,
        },
    }


def permit2_single(token: str, spender: str, amount: int, chain_id: int) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": _DOMAIN_NCV,
            "PermitDetails": _DETAILS,
            "PermitSingle": [
                {"name": "details", "type": "PermitDetails"},
                {"name": "spender", "type": "address"},
                {"name": "sigDeadline", "type": "uint256"},
            ],
        },
        "primaryType": "PermitSingle",
        "domain": {"name": "Permit2", "chainId": chain_id, "verifyingContract": PERMIT2},
        "message": {
            "details": {"token": token, "amount": amount, "expiration": 1_900_000_000, "nonce": 0},
            "spender": spender,
            "sigDeadline": 1_900_000_000,
        },
    }


def permit2_batch(grants: list[tuple[str, int]], spender: str, chain_id: int) -> dict[str, Any]:
    return {
        "types": {
            "EIP712Domain": _DOMAIN_NCV,
            "PermitDetails": _DETAILS,
            "PermitBatch": [
                {"name": "details", "type": "PermitDetails[]"},
                {"name": "spender", "type": "address"},
                {"name": "sigDeadline", "type": "uint256"},
            ],
        },
        "primaryType": "PermitBatch",
        "domain": {"name": "Permit2", "chainId": chain_id, "verifyingContract": PERMIT2},
        "message": {
            "details": [
                {"token": t, "amount": a, "expiration": 1_900_000_000, "nonce": i}
                for i, (t, a) in enumerate(grants)
            ],
            "spender": spender,
            "sigDeadline": 1_900_000_000,
        },
    }


def typed_item(key_id: str, doc: dict[str, Any] | str, chain_id: int) -> pb.SignItem:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return pb.SignItem(
        key_id=key_id, evm_typed_data=pb.EvmTypedData(chain_id=chain_id, typed_data=text)
    )


def personal_item(key_id: str, message: bytes, chain_id: int = 1) -> pb.SignItem:
    return pb.SignItem(
        key_id=key_id, evm_message=pb.EvmPersonalMessage(chain_id=chain_id, message=message)
    )


def tron_item(key_id: str, message: bytes, network: str = "mainnet") -> pb.SignItem:
    return pb.SignItem(key_id=key_id, tron_message=pb.TronMessage(network=network, message=message))


def bitcoin_item(
    key_id: str, message: bytes, address_type: str = "p2pkh", network: str = "testnet"
) -> pb.SignItem:
    return pb.SignItem(
        key_id=key_id,
        bitcoin_message=pb.BitcoinMessage(
            network=network, address_type=address_type, message=message
        ),
    )
