"""Every chain parser, fed generated and mutated transactions: InvalidField or a signed tx.

`prepare` may refuse a transaction only with InvalidField naming a field of its
own chain and a message a caller can read; anything else (another exception, a
crash, a hang) would reach the gRPC edge as INTERNAL. What it accepts must
sign: the digests are 32 bytes and `assemble` builds a SignedTx from them.

Each parser gets two tests, one per generator, of half its examples each:
10,000 parsed transactions per parser in CI (see conftest.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from hypothesis import assume, event, given
from hypothesis import strategies as st

from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import ChainAdapter, InvalidField, SignedTx
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge import requests as edge
from tests import builders
from tests.fuzz import bitcoin_strategies as fb
from tests.fuzz import evm_strategies as fe
from tests.fuzz import message_strategies as fm
from tests.fuzz import psbt_strategies as fp
from tests.fuzz import strategies as fz
from tests.fuzz import tron_strategies as ft
from tests.fuzz import wire_mutation
from tests.fuzz.conftest import CHAIN_FUZZ, PARSED
from tests.support import LocalKey

pytestmark = pytest.mark.fuzz

# A gRPC status message travels in a trailer: a 20 KB one reached a grpcio 1.85
# client as RESOURCE_EXHAUSTED, not as the status sent. Refusals stay far below.
MAX_MESSAGE_BYTES = 2048

KEY_MESSAGE = fz.key_message(fz.KEY)
SEEDS: dict[str, list[Message]] = {
    "bitcoin": [
        builders.bitcoin_item(KEY_MESSAGE).bitcoin,
        builders.bitcoin_item(KEY_MESSAGE, script_types=("p2pkh",)).bitcoin,
        builders.bitcoin_item(KEY_MESSAGE, script_types=("p2wpkh",) * 3).bitcoin,
    ],
    "evm": [
        builders.evm_item(KEY_MESSAGE).evm,
        builders.evm_item(KEY_MESSAGE, chain_id=56, tx_type=pb.EVM_TX_TYPE_LEGACY).evm,
        builders.evm_item(KEY_MESSAGE, chain_id=1, tx_type=pb.EVM_TX_TYPE_EIP2930).evm,
        builders.evm_item(
            KEY_MESSAGE,
            value="",
            to=builders.EVM_DEST,
            data=builders.erc20_transfer_data(builders.EVM_DEST, 10**6),
        ).evm,
        pb.EvmTransaction(
            chain_id=17000,
            type=pb.EVM_TX_TYPE_EIP2930,
            to=builders.EVM_DEST,
            gas_limit=50_000,
            gas_price="1",
            access_list=[
                pb.EvmAccessListEntry(address=builders.EVM_DEST, storage_keys=["0x" + "11" * 32])
            ],
        ),
    ],
    "tron": [
        builders.tron_item(KEY_MESSAGE).tron,
        builders.tron_item(KEY_MESSAGE, trc20=True).tron,
        *ft.tron_staking_seeds(KEY_MESSAGE),
    ],
}
MESSAGE_TYPES: dict[str, type[Message]] = {
    "bitcoin": pb.BitcoinTransaction,
    "evm": pb.EvmTransaction,
    "tron": pb.TronTransaction,
}
STRUCTURED = {
    "bitcoin": st.one_of(fb.bitcoin_tx(), fb.bitcoin_random()),
    "evm": st.one_of(fe.evm_tx(), fe.evm_random()),
    "tron": st.one_of(ft.tron_tx(), ft.tron_random()),
}
VALID: dict[str, Any] = {
    "bitcoin": fb.bitcoin_valid(),
    "evm": fe.evm_valid(),
    "tron": ft.tron_valid(),
}
# The message item kinds (issue 12).
SEEDS.update(fm.SEEDS)
MESSAGE_TYPES.update(fm.MESSAGE_TYPES)
STRUCTURED.update(fm.STRUCTURED)
VALID.update(fm.VALID)
# The PSBT item kind (issue 12).
SEEDS.update(fp.SEEDS)
MESSAGE_TYPES.update(fp.MESSAGE_TYPES)
STRUCTURED.update(fp.STRUCTURED)
VALID.update(fp.VALID)
MUTATIONS = {
    kind: wire_mutation.mutations_of(
        [seed.SerializeToString() for seed in SEEDS[kind]], VALID[kind]
    )
    for kind in SEEDS
}
KINDS = sorted(ADAPTERS)
_keys = st.sampled_from(fz.LOCAL_KEYS)


def check_refusal(kind: str, refusal: InvalidField) -> None:
    """A refusal names a field of the chain, and says why in a message that fits a status."""
    field = refusal.field
    assert field == kind or field.startswith((f"{kind}.", f"{kind}[")), field
    assert refusal.message.strip(), f"{field}: empty message"
    size = len(str(refusal).encode())
    assert size <= MAX_MESSAGE_BYTES, f"{field}: a message of {size} bytes echoes its input"


def check_prepare(adapter: ChainAdapter, tx: Any, key: LocalKey) -> str:
    """The property: InvalidField of this chain with a short message, or a transaction that signs."""
    PARSED[adapter.kind] += 1
    try:
        prepared = adapter.prepare(edge.transaction(tx), key.info)
    except InvalidField as exc:
        refusal = exc
    else:
        assert prepared.digests, "nothing to sign"
        assert all(len(d) == 32 for d in prepared.digests)
        assert prepared.intent.key_id == key.info.key_id
        signed = adapter.assemble(prepared, [key.sign(d) for d in prepared.digests])
        assert isinstance(signed, SignedTx)
        assert signed.tx_id
        assert signed.raw_tx
        return "signed"
    check_refusal(adapter.kind, refusal)
    # The field without indexes, e.g. bitcoin.inputs.txid: enough to see what was reached.
    return "refused " + re.sub(r"\[\d+\]", "", refusal.field)


def test_seeds_sign() -> None:
    """The mutation seeds are valid, so mutations start from the signing path."""
    for kind, seeds in SEEDS.items():
        for seed in seeds:
            prepared = ADAPTERS[kind].prepare(edge.transaction(seed), fz.KEY.info)
            assert prepared.digests


@pytest.mark.parametrize("kind", KINDS)
@CHAIN_FUZZ
@given(data=st.data(), key=_keys)
def test_structured_fields(kind: str, data: st.DataObject, key: LocalKey) -> None:
    """Transactions with hostile values in their fields (structure-aware fuzzing)."""
    tx = data.draw(STRUCTURED[kind], label="tx")
    event(check_prepare(ADAPTERS[kind], tx, key))


@pytest.mark.parametrize("kind", KINDS)
@CHAIN_FUZZ
@given(data=st.data(), key=_keys)
def test_mutated_bytes(kind: str, data: st.DataObject, key: LocalKey) -> None:
    """Serialized valid transactions with random byte edits (mutation fuzzing)."""
    raw = data.draw(MUTATIONS[kind], label="bytes")
    try:
        tx = MESSAGE_TYPES[kind].FromString(raw)
    except DecodeError:
        assume(False)  # protobuf refuses it before any parser sees it
    event(check_prepare(ADAPTERS[kind], tx, key))


def _string_fields(message: Message, path: str = "") -> Iterator[tuple[str, Message, str]]:
    """(path, owner, name) of every string field in the message tree, set or not."""
    for field in message.DESCRIPTOR.fields:
        name = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            yield name, message, field.name
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            value = getattr(message, field.name)
            if field.is_repeated:
                for index, entry in enumerate(value):
                    yield from _string_fields(entry, f"{name}[{index}].")
            else:
                yield from _string_fields(value, f"{name}.")


# Huge strings of characters that the base58, hex and decimal parsers accept one by
# one, so a parser gets to work on them rather than stop at the first character.
HUGE_SIZE = 256 * 1024
HUGE_CHARS = ("1", "f", "z", "0")


@pytest.mark.parametrize("kind", KINDS)
def test_huge_strings_are_refused_quickly(kind: str) -> None:
    """Every string field of every seed, set to 256 KiB: answered in well under a second.

    A parser whose work grows faster than the input (base58 decoding is quadratic)
    would hang a worker on a request a few megabytes long; deadline=None above
    does not catch that, this does. It counts this process's CPU time, not the
    wall clock: on a loaded machine a linear parse can wait longer than a second
    for a core, while a quadratic one burns many seconds of CPU wherever it runs.
    """
    for seed in SEEDS[kind]:
        for path, _owner, _name in list(_string_fields(seed)):
            for char in HUGE_CHARS:
                tx = type(seed)()
                tx.CopyFrom(seed)
                # Find the same field again in the copy (the paths are the same).
                owner, name = next((o, n) for p, o, n in _string_fields(tx) if p == path)
                if owner.DESCRIPTOR.fields_by_name[name].is_repeated:
                    getattr(owner, name).append(char * HUGE_SIZE)
                else:
                    setattr(owner, name, char * HUGE_SIZE)
                started = time.process_time()
                outcome = check_prepare(ADAPTERS[kind], tx, fz.KEY)
                elapsed = time.process_time() - started
                assert elapsed < 1.0, (
                    f"{path} = {char!r} * {HUGE_SIZE}: {outcome} in {elapsed:.1f} s of CPU"
                )


@pytest.mark.parametrize(
    "text",
    [
        '"' + '\\"' * 32_000,  # one unterminated string of escaped quotes
        '["' + "a\\" * 32_000,
        '"' * 65_000,
        "[" * 65_000,
    ],
)
def test_typed_data_text_is_scanned_in_linear_time(text: str) -> None:
    """64 KB of hostile JSON text is refused quickly.

    The nesting-depth scan once used a string pattern that rescanned to the end
    from every quote: 64 KB of escaped quotes took 32 s.
    """
    tx = pb.EvmTypedData(chain_id=1, typed_data=text[:65_536])
    started = time.process_time()
    outcome = check_prepare(ADAPTERS["evm_typed_data"], tx, fz.KEY)
    elapsed = time.process_time() - started
    assert outcome.startswith("refused")
    assert elapsed < 1.0, f"{outcome} in {elapsed:.1f} s of CPU"
