"""What an approver reads about a held batch: every item decoded afresh from the stored bytes.

The summary written when the batch was held is not shown: it is a label in
the database, not what would be signed. ListPending and GetPending decode the
exact request bytes with the chain adapters and the keys' real public keys,
and send those bytes too, so that the CLI can recompute the request digest
the approver is about to confirm.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from custos.common.intent import Intent
from custos.proto.custos.v1 import policy_pb2
from custos.signer.chains.base import InvalidField, KeyInfo, PreparedTx
from custos.signer.chains.items import EvmTypedData, Message, SignItem, Transaction
from custos.signer.chains.registry import Adapters
from custos.signer.edge import requests
from custos.signer.edge.errors import CustosError, InvalidRequest
from custos.signer.store.base import KeyRecord, Store
from custos.signer.usecases.wallets import WalletManager

# (symbol, decimals) of each chain's native asset.
NATIVE: Mapping[str, tuple[str, int]] = {
    "bitcoin": ("BTC", 8),
    "ethereum": ("ETH", 18),
    "bsc": ("BNB", 18),
    "tron": ("TRX", 6),
}
# Tokens whose decimals are published by their issuers (mainnet contracts).
TOKENS: Mapping[tuple[str, str], tuple[str, int]] = {
    ("ethereum", "0xdac17f958d2ee523a2206206994597c13d831ec7"): ("USDT", 6),
    ("ethereum", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"): ("USDC", 6),
    ("bsc", "0x55d398326f99059ff775485246999027b3197955"): ("USDT", 18),
    ("bsc", "0x8ac76a51cc950d9822d68b83fe1ad97b32cd580d"): ("USDC", 18),
    ("tron", "tr7nhqjekqxgtci8q8zy4pl8otszgjlj6t"): ("USDT", 6),
}


def asset_units(chain: str, asset: str) -> tuple[str, int] | None:
    """(symbol, decimals) where known."""
    if asset == "native":
        return NATIVE.get(chain)
    return TOKENS.get((chain, asset.lower()))


def in_units(amount: int, decimals: int) -> str:
    """`amount` base units as a plain decimal number of whole units (no rounding)."""
    text = format(Decimal(amount).scaleb(-decimals), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _message(tx: Transaction, prepared: PreparedTx) -> policy_pb2.PendingMessage | None:
    """What a message item signs, shown whole: an approver reads the message itself."""
    message = prepared.intent.message
    if message is None or not isinstance(tx, Message):
        return None
    if isinstance(tx, EvmTypedData):
        text = tx.typed_data
    else:
        raw = tx.message
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = "0x" + raw.hex()
    return policy_pb2.PendingMessage(
        kind=message.kind,
        text=text,
        digest=prepared.digests[0].hex(),
        primary_type=message.primary_type or "",
        domain_name=message.domain_name or "",
        chain_id="" if message.chain_id is None else str(message.chain_id),
        verifying_contract=message.verifying_contract or "",
        grants=[
            f"spender={dict(g.args)['spender']} token={g.contract} amount={dict(g.args)['amount']}"
            for g in message.grants
        ],
    )


def _item(intent: Intent) -> policy_pb2.PendingItem:
    native = NATIVE.get(intent.chain)
    call = intent.contract_call
    transfers = []
    for t in intent.transfers:
        units = asset_units(intent.chain, t.asset)
        transfers.append(
            policy_pb2.PendingTransfer(
                to=t.to,
                asset=t.asset,
                symbol=units[0] if units else "",
                amount=str(t.amount),
                amount_units=in_units(t.amount, units[1]) if units else "",
                is_change=t.is_change,
            )
        )
    # When the signed transaction may be mined: Bitcoin nLockTime (a height below
    # 500,000,000, else a Unix time) or a Tron expiration; empty when neither is set.
    if intent.lock_time:
        kind = "height" if intent.lock_time < 500_000_000 else "unix time"
        lock_time = f"{kind} {intent.lock_time}"
    elif intent.expiration_ms:
        lock_time = f"expires at unix ms {intent.expiration_ms}"
    else:
        lock_time = ""
    return policy_pb2.PendingItem(
        chain=intent.chain,
        network=intent.network,
        key_id=intent.key_id,
        from_address=intent.from_address,
        destinations=[
            f"{t.to} {t.asset} {t.amount}{' (change)' if t.is_change else ''}"
            for t in intent.transfers
        ],
        fee=str(intent.fee),
        fee_units=f"{in_units(intent.fee, native[1])} {native[0]}" if native else "",
        contract_call=f"{call.method} on {call.contract}" if call else "",
        transfers=transfers,
        contract=call.contract if call else "",
        method=call.method if call else "",
        args=[f"{name}={value}" for name, value in call.args] if call else [],
        lock_time=lock_time,
        staking=intent.staking.summary() if intent.staking else "",
        multisigs=[
            policy_pb2.PendingMultisig(threshold=m.threshold, total=m.total, cosigners=m.cosigners)
            for m in intent.multisig
        ],
    )


def decode_items(
    store: Store, adapters: Adapters, request_bytes: bytes, wallets: WalletManager | None = None
) -> list[policy_pb2.PendingItem]:
    """Each item of the stored request as the signature would commit to it."""
    try:
        request = requests.stored_batch(request_bytes)
    except InvalidRequest:  # junk in the row: say so, show nothing as if valid
        return [policy_pb2.PendingItem(error="the stored request does not decode")]
    keys = store.get_keys([item.key_id for item in request.items if item.hd is None])
    out = []
    for index, item in enumerate(request.items):
        info = _key_info(keys, wallets, item)
        if isinstance(info, str) or item.tx is None:
            error = info if isinstance(info, str) else "cannot decode"
            out.append(policy_pb2.PendingItem(key_id=item.key_id, error=f"items[{index}]: {error}"))
            continue
        try:
            _, prepared = adapters.prepare(item.tx, info)
        except InvalidField as exc:
            out.append(
                policy_pb2.PendingItem(
                    key_id=item.key_id, error=f"items[{index}].{exc.field}: {exc.message}"
                )
            )
            continue
        pending = _item(prepared.intent)
        shown = _message(item.tx, prepared)
        if shown is not None:
            pending.message.CopyFrom(shown)
        out.append(pending)
    return out


def _key_info(
    keys: Mapping[str, KeyRecord], wallets: WalletManager | None, item: SignItem
) -> KeyInfo | str:
    """The key an item names, as the pipeline resolves it; else why it cannot be shown."""
    if item.hd is None:
        key = keys.get(item.key_id)
        return "cannot decode" if key is None else KeyInfo(key.key_id, key.public_key)
    if wallets is None or item.tx is None:
        return "cannot decode"
    try:
        derived = wallets.key_for(item.hd, item.tx)
    except CustosError as exc:  # a tampered wallet row too: shown, never as if valid
        return f"cannot decode ({exc})"
    return KeyInfo(derived.key_id, derived.public_key)
