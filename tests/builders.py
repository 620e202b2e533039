"""Valid SignItem messages for each chain, built from a key's addresses."""

from __future__ import annotations

import hashlib

from tronpy.keys import PrivateKey as TronPrivateKey

from custos.proto.custos.v1 import keys_pb2
from custos.proto.custos.v1 import signer_pb2 as pb
from tests.second_impl import bitcoin_funding_tx, bitcoin_prevout, bitcoin_prevout_script

# Destinations outside our keys. Sources: BIP-173 test vectors (bech32), the
# EIP-155 example (0x3535...), Tron's USDT contract, and an address derived by
# tronpy (a second implementation) from a fixed test key.
BTC_TESTNET_DEST = "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx"
BTC_MAINNET_DEST = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
EVM_DEST = "0x3535353535353535353535353535353535353535"
TRON_DEST = str(TronPrivateKey(bytes([7] * 32)).public_key.to_base58check_address())
TRON_USDT = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"


def address(key: keys_pb2.Key, chain: str, network: str, kind: str = "account") -> str:
    for a in key.addresses:
        if (a.chain, a.network, a.kind) == (chain, network, kind):
            return a.address
    raise KeyError((chain, network, kind))


def fake_txid(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


def bitcoin_script(key: keys_pb2.Key, script_type: str) -> bytes:
    """The key's own P2WPKH or P2PKH scriptPubKey, as python-bitcointx builds it."""
    return bitcoin_prevout_script(bytes.fromhex(key.public_key), script_type)


def bitcoin_input(
    key: keys_pb2.Key,
    value: int,
    script_type: str = "p2wpkh",
    seed: str = "btc",
    vout: int = 0,
    segwit: bool = False,
    **fields: object,
) -> pb.BitcoinInput:
    """An input spending output `vout` (worth `value`, locked to the key) of a made-up
    previous transaction that the input carries whole (python-bitcointx builds it)."""
    decoy = (1_000, bytes.fromhex("0014") + hashlib.sha256(seed.encode()).digest()[:20])
    outputs = [decoy] * vout + [(value, bitcoin_script(key, script_type))]
    prev_tx = bitcoin_funding_tx(outputs, seed, segwit)
    txid, _, _ = bitcoin_prevout(prev_tx, vout)
    return pb.BitcoinInput(txid=txid, vout=vout, prev_tx=prev_tx, **fields)  # type: ignore[arg-type]


def bitcoin_prevouts(tx: pb.BitcoinTransaction) -> list[tuple[int, bytes]]:
    """(value, scriptPubKey) of every input, read from its prev_tx by python-bitcointx."""
    result = []
    for txin in tx.inputs:
        txid, value, script = bitcoin_prevout(txin.prev_tx, txin.vout)
        assert txid == txin.txid
        result.append((value, script))
    return result


def bitcoin_item(
    key: keys_pb2.Key,
    seed: str = "btc",
    script_types: tuple[str, ...] = ("p2wpkh", "p2pkh"),
    network: str = "testnet",
) -> pb.SignItem:
    inputs = [
        bitcoin_input(key, 50_000, t, seed=f"{seed}-{i}", vout=i % 2, segwit=i % 3 == 1)
        for i, t in enumerate(script_types)
    ]
    total = 50_000 * len(inputs)
    return pb.SignItem(
        key_id=key.key_id,
        bitcoin=pb.BitcoinTransaction(
            network=network,
            inputs=inputs,
            outputs=[
                pb.BitcoinOutput(
                    address=BTC_MAINNET_DEST if network == "mainnet" else BTC_TESTNET_DEST,
                    value=30_000,
                ),
                pb.BitcoinOutput(
                    address=address(key, "bitcoin", network, "p2wpkh"), value=total - 31_000
                ),
            ],
        ),
    )


def evm_item(
    key: keys_pb2.Key,
    chain_id: int = 11155111,
    nonce: int = 0,
    tx_type: int = pb.EVM_TX_TYPE_EIP1559,
    data: str = "",
    to: str = EVM_DEST,
    value: str = "1000000000000000",
) -> pb.SignItem:
    tx = pb.EvmTransaction(
        chain_id=chain_id,
        type=tx_type,
        nonce=nonce,
        to=to,
        value=value,
        data=data,
        gas_limit=60_000,
    )
    if tx_type == pb.EVM_TX_TYPE_EIP1559:
        tx.max_fee_per_gas = "30000000000"
        tx.max_priority_fee_per_gas = "1000000000"
    else:
        tx.gas_price = "5000000000"
    return pb.SignItem(key_id=key.key_id, evm=tx)


def erc20_transfer_data(recipient: str, amount: int) -> str:
    return "0xa9059cbb" + recipient[2:].lower().rjust(64, "0") + f"{amount:064x}"


def tron_item(
    key: keys_pb2.Key, trc20: bool = False, amount: int = 1_000_000, network: str = "nile"
) -> pb.SignItem:
    tx = pb.TronTransaction(
        network=network,
        ref_block_bytes="1a2b",
        ref_block_hash="0011223344556677",
        timestamp=1_700_000_000_000,
        expiration=1_700_000_060_000,
    )
    if trc20:
        tx.trc20_transfer.CopyFrom(
            pb.TronTrc20Transfer(contract=TRON_USDT, to=TRON_DEST, amount=str(amount))
        )
        tx.fee_limit = 30_000_000
    else:
        tx.trx_transfer.CopyFrom(pb.TronTrxTransfer(to=TRON_DEST, amount=amount))
    return pb.SignItem(key_id=key.key_id, tron=tx)
