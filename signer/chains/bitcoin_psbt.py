"""PSBT adapter: the item's key adds its partial signatures to a BIP174 PSBT.

An input is signed when its previous output, proven by the full previous
transaction the PSBT carries (PSBT_IN_NON_WITNESS_UTXO, hashed against the
input's txid), is locked to the key: its P2WPKH, P2PKH or P2SH-P2WPKH script,
or a P2WSH or P2SH-P2WSH m-of-n OP_CHECKMULTISIG script (given in the PSBT's
witness and redeem script fields) that lists the key. Matching is by script:
BIP32 derivation entries are other wallets' hints and add nothing the script
does not already say. Any other input is left exactly as it came.

Policy judges the PSBT as the Bitcoin adapter's transactions: the same Intent
(every output as a transfer, the fee from proven values), the same lock-time
bounds, limits and work budget, and the same signature hashes
(signer/chains/bitcoin.py `signature_hashes`). Besides, the Intent names each
multisig the key cosigns (m, n, the other keys), and change is custody kept:
an output is change only when it returns to the custody every input the key
signs comes from, the key alone (its own scripts) or the same m-of-n key set
(P2WSH or P2SH-P2WSH, whose witness script the inputs or the PSBT's output
fields prove). Value moving from the key alone into a multisig, from one
multisig to another, or out of a multisig to the key alone leaves the custody
it was in: it is judged and charged like any payment.

Partial signatures already on an input the key signs (other cosigners') are
verified before anything is signed: a hostile coordinator must get neither a
finalized transaction with junk in it nor a miscount of a multisig's signatures.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from custos.common.secp256k1 import RecoverableSignature, compressed, verify_der
from custos.signer.chains.base import (
    Address,
    Intent,
    InvalidField,
    KeyInfo,
    Multisig,
    PreparedTx,
    SignedTx,
    Transfer,
)
from custos.signer.chains.bitcoin import (
    MAX_FEE_RATE_SAT_VB,
    MAX_STANDARD_WEIGHT,
    SIGHASH_ALL,
    UnsignedBitcoinTx,
    _check_locks,
    _Input,
    _Output,
    _parse_network,
    fee_of,
    sighash_bytes,
    signature_hashes,
)
from custos.signer.chains.bitcoin_address import (
    NETWORKS,
    b58check_encode,
    encode_segwit,
    hash160,
    p2pkh_script,
    p2wpkh_address,
    p2wpkh_script,
)
from custos.signer.chains.bitcoin_prevtx import MAX_MONEY, PrevoutProofs
from custos.signer.chains.items import BitcoinPsbt
from custos.signer.chains.limits import (
    BITCOIN_INPUT_UNITS,
    BITCOIN_OUTPUT_UNITS,
    DEFAULT_LIMITS,
    ITEM_UNITS,
    PARSE_WEIGHT,
    SIGNATURE_CHECK_UNITS,
    ChainLimits,
    WorkBudget,
)
from custos.signer.chains.psbt import (
    IN_FINAL_SCRIPTSIG,
    IN_FINAL_SCRIPTWITNESS,
    IN_NON_WITNESS_UTXO,
    IN_PARTIAL_SIG,
    IN_REDEEM_SCRIPT,
    IN_SIGHASH_TYPE,
    IN_WITNESS_SCRIPT,
    IN_WITNESS_UTXO,
    OUT_REDEEM_SCRIPT,
    OUT_WITNESS_SCRIPT,
    PROPRIETARY,
    Psbt,
    PsbtError,
    PsbtMap,
    parse_psbt,
    varint,
)

_FIELD: Final = "bitcoin_psbt"
_OP_CHECKMULTISIG: Final = 0xAE
# Longest low-S DER signature plus the sighash byte (as in bitcoin.py).
_MAX_SIG_LEN: Final = 72
# BIP174 Input Finalizer: what stays in a finalized input besides unknown types.
_KEPT_WHEN_FINAL: Final = frozenset(
    {IN_NON_WITNESS_UTXO, IN_WITNESS_UTXO, IN_FINAL_SCRIPTSIG, IN_FINAL_SCRIPTWITNESS, PROPRIETARY}
)
_DEFINED_INPUT_TYPES: Final = frozenset(range(0x00, 0x19))


@dataclass(frozen=True, slots=True)
class _Signing:
    """One input the key signs."""

    index: int
    kind: str  # p2wpkh | p2pkh | p2sh-p2wpkh | p2wsh | p2sh-p2wsh
    script_code: bytes
    redeem_script: bytes  # the P2SH redeem script when nested, else b""
    multisig: tuple[int, tuple[bytes, ...]] | None  # (m, keys) of a multisig witness script


@dataclass(frozen=True, slots=True)
class PreparedPsbt:
    """PreparedTx.unsigned of a PSBT item."""

    psbt: Psbt
    tx: UnsignedBitcoinTx
    signing: tuple[_Signing, ...]
    finalize: bool


class BitcoinPsbtAdapter:
    """ChainAdapter for BIP174 PSBTs on the Bitcoin networks."""

    kind: str = "bitcoin_psbt"

    def __init__(
        self, limits: ChainLimits = DEFAULT_LIMITS, clock: Callable[[], float] = time.time
    ) -> None:
        self._limits = limits
        self._clock = clock

    def addresses(self, public_key: bytes) -> list[Address]:
        return []  # the Bitcoin adapter lists the key's addresses

    def prepare(
        self, tx: BitcoinPsbt, key: KeyInfo, budget: WorkBudget | None = None
    ) -> PreparedTx:
        limits = self._limits
        raw = tx.psbt
        if not raw:
            raise InvalidField(f"{_FIELD}.psbt", "required: a binary BIP174 PSBT")
        if len(raw) > limits.bitcoin_max_psbt_bytes:
            raise InvalidField(
                f"{_FIELD}.psbt",
                f"{len(raw)} bytes exceed limits.bitcoin_max_psbt_bytes = "
                f"{limits.bitcoin_max_psbt_bytes}",
            )
        if budget is not None:
            budget.charge(ITEM_UNITS + PARSE_WEIGHT * len(raw), _FIELD)
        try:
            network = _parse_network(tx.network)
        except InvalidField as exc:
            raise InvalidField(f"{_FIELD}.network", exc.message) from None
        try:
            psbt = parse_psbt(raw, limits.bitcoin_max_inputs, limits.bitcoin_max_outputs)
        except PsbtError as exc:
            where = f"{_FIELD}.psbt" + (f".{exc.where}" if exc.where else "")
            raise InvalidField(where, exc.message) from None
        if budget is not None:
            budget.charge(
                BITCOIN_INPUT_UNITS * len(psbt.inputs) + BITCOIN_OUTPUT_UNITS * len(psbt.outputs),
                _FIELD,
            )
        if not psbt.inputs:
            raise InvalidField(f"{_FIELD}.psbt.inputs", "at least one input is required")
        if not psbt.outputs:
            raise InvalidField(f"{_FIELD}.psbt.outputs", "at least one output is required")
        if psbt.tx.version not in (1, 2):
            raise InvalidField(f"{_FIELD}.psbt.tx.version", "must be 1 or 2")
        public_key = compressed(key.public_key)
        inputs, signing = _inputs(psbt, public_key, limits)
        if not signing:
            raise InvalidField(
                f"{_FIELD}.psbt.inputs",
                f"no unfinalized input is locked to key {key.key_id!r} (its P2WPKH, P2PKH or "
                "P2SH-P2WPKH script, or a P2WSH / P2SH-P2WSH multisig listing it, with the "
                "witness script in the PSBT)",
            )
        outputs = _outputs(psbt, network)
        fee = fee_of(inputs, outputs, f"{_FIELD}.psbt")
        unsigned = UnsignedBitcoinTx(
            network=network,
            version=psbt.tx.version,
            lock_time=psbt.tx.lock_time,
            inputs=inputs,
            outputs=outputs,
            public_key=public_key,
            address=p2wpkh_address(public_key, network),
            fee=fee,
        )
        try:
            _check_locks(unsigned.version, unsigned.lock_time, inputs, limits, self._clock())
        except InvalidField as exc:
            field = exc.field.replace("bitcoin", f"{_FIELD}.psbt.tx", 1)
            raise InvalidField(field, exc.message) from None
        vsize = _checked_vsize(psbt, unsigned, signing)
        work = sighash_bytes(unsigned) + sum(len(s.script_code) for s in signing)
        if work > limits.bitcoin_max_sighash_bytes:
            raise InvalidField(
                f"{_FIELD}.psbt.inputs",
                f"signature hashes of {work} bytes exceed limits.bitcoin_max_sighash_bytes = "
                f"{limits.bitcoin_max_sighash_bytes}",
            )
        if budget is not None:
            budget.charge(work, f"{_FIELD}.psbt.inputs")
        change = _change(psbt, signing, public_key)
        intent = Intent(
            chain="bitcoin",
            network=network,
            key_id=key.key_id,
            from_address=unsigned.address,
            transfers=tuple(
                Transfer(o.address, "native", o.value, is_change=is_change)
                for o, is_change in zip(outputs, change, strict=True)
            ),
            fee=fee,
            fee_details=(("vsize", vsize), ("fee_rate_sat_vb_milli", fee * 1000 // vsize)),
            lock_time=unsigned.lock_time,
            sequences=tuple(i.sequence for i in inputs),
            multisig=_multisig_facts(signing, public_key),
        )
        digests = signature_hashes(
            unsigned, [(s.index, s.script_code, s.kind != "p2pkh") for s in signing]
        )
        _check_partial_sigs(psbt, signing, digests, public_key, budget)
        prepared = PreparedPsbt(psbt, unsigned, signing, bool(tx.finalize))
        return PreparedTx(intent=intent, digests=digests, unsigned=prepared)

    def assemble(
        self, prepared: PreparedTx, signatures: Sequence[RecoverableSignature]
    ) -> SignedTx:
        ready = prepared.unsigned
        if not isinstance(ready, PreparedPsbt):
            raise TypeError("not a PSBT prepared by BitcoinPsbtAdapter")
        if len(signatures) != len(ready.signing):
            raise ValueError(f"{len(ready.signing)} inputs need as many signatures")
        # A copy: the prepared PSBT stays as parsed if assemble runs again.
        psbt = Psbt(
            ready.psbt.tx,
            ready.psbt.globals,
            [PsbtMap(list(m.records)) for m in ready.psbt.inputs],
            ready.psbt.outputs,
        )
        public_key = ready.tx.public_key
        for signing, signature in zip(ready.signing, signatures, strict=True):
            input_map = psbt.inputs[signing.index]
            input_map.put(
                bytes([IN_PARTIAL_SIG]) + public_key, signature.der() + bytes([SIGHASH_ALL])
            )
            if signing.redeem_script and input_map.get(bytes([IN_REDEEM_SCRIPT])) is None:
                # The key's own P2SH-P2WPKH, sent without its redeem script: add it
                # (as an Updater would) so that any finalizer can complete the input.
                input_map.put(bytes([IN_REDEEM_SCRIPT]), signing.redeem_script)
            if ready.finalize:
                _finalize(input_map, signing, public_key)
        tx = ready.tx
        return SignedTx(
            chain="bitcoin",
            network=tx.network,
            address=tx.address,
            tx_id=psbt.tx.txid[::-1].hex(),
            raw_tx=base64.b64encode(psbt.serialize()).decode("ascii"),
            fee=tx.fee,
        )


# ---- inputs --------------------------------------------------------------


def _own_scripts(public_key: bytes) -> set[bytes]:
    pubkey_hash = hash160(public_key)
    nested = p2wpkh_script(pubkey_hash)
    return {nested, p2pkh_script(pubkey_hash), _p2sh_script(nested)}


def _p2sh_script(redeem_script: bytes) -> bytes:
    return b"\xa9\x14" + hash160(redeem_script) + b"\x87"


def _wsh_scripts(witness_script: bytes) -> tuple[bytes, bytes]:
    """The P2WSH and P2SH-P2WSH output scripts of a witness script."""
    p2wsh = b"\x00\x20" + hashlib.sha256(witness_script).digest()
    return p2wsh, _p2sh_script(p2wsh)


def _is_p2sh(script: bytes) -> bool:
    return len(script) == 23 and script[:2] == b"\xa9\x14" and script[22] == 0x87


def _is_witness_program(script: bytes) -> bool:
    if not 4 <= len(script) <= 42:
        return False
    return (script[0] == 0 or 0x51 <= script[0] <= 0x60) and script[1] == len(script) - 2


def _is_p2wsh(script: bytes) -> bool:
    return len(script) == 34 and script[:2] == b"\x00\x20"


def parse_multisig(script: bytes) -> tuple[int, tuple[bytes, ...]] | None:
    """(m, public keys) of `OP_m <key>... OP_n OP_CHECKMULTISIG` with compressed keys, else None."""
    if len(script) < 37 or script[-1] != _OP_CHECKMULTISIG:
        return None
    if not (0x51 <= script[0] <= 0x60 and 0x51 <= script[-2] <= 0x60):
        return None
    m, n = script[0] - 0x50, script[-2] - 0x50
    if m > n or len(script) != 3 + 34 * n:
        return None
    keys = []
    for i in range(n):
        chunk = script[1 + 34 * i : 35 + 34 * i]
        if chunk[0] != 33 or chunk[1] not in (2, 3):
            return None
        keys.append(chunk[1:])
    return m, tuple(keys)


def _inputs(
    psbt: Psbt, public_key: bytes, limits: ChainLimits
) -> tuple[tuple[_Input, ...], tuple[_Signing, ...]]:
    """Every input with its proven value, and the inputs the key signs."""
    own_nested = p2wpkh_script(hash160(public_key))
    own_nested_p2sh = _p2sh_script(own_nested)
    proofs = PrevoutProofs(limits)
    inputs: list[_Input] = []
    signing: list[_Signing] = []
    for index, (txin, input_map) in enumerate(zip(psbt.tx.inputs, psbt.inputs, strict=True)):
        where = f"{_FIELD}.psbt.inputs[{index}]"
        value, script = proofs.prove(
            index,
            txin.outpoint,
            input_map.get(bytes([IN_NON_WITNESS_UTXO])) or b"",
            input_field=where,
            prev_field=f"{where}.non_witness_utxo",
        )
        program, redeem = _check_scripts(input_map, script, value, where)
        if not redeem and program == own_nested_p2sh:
            # The key's own P2SH-P2WPKH output: its redeem script is known without the PSBT's.
            program = redeem = own_nested
        final = (
            input_map.get(bytes([IN_FINAL_SCRIPTSIG])) is not None
            or input_map.get(bytes([IN_FINAL_SCRIPTWITNESS])) is not None
        )
        found = None if final else _match(program, redeem, input_map, public_key)
        if found is not None:
            kind, script_code, multisig = found
            if multisig is not None and len(set(multisig[1])) != len(multisig[1]):
                # OP_CHECKMULTISIG would count one key's signature once per listing:
                # an "m-of-n" that one holder satisfies alone is not what it says.
                raise InvalidField(
                    f"{where}.witness_script", "lists a key more than once; Custos does not sign it"
                )
            sighash = input_map.get(bytes([IN_SIGHASH_TYPE]))
            sighash_type = SIGHASH_ALL if sighash is None else int.from_bytes(sighash, "little")
            if sighash_type != SIGHASH_ALL:
                raise InvalidField(
                    f"{where}.sighash_type",
                    f"Custos signs with SIGHASH_ALL (1) only, not {sighash_type}",
                )
            signing.append(_Signing(index, kind, script_code, redeem, multisig))
        inputs.append(
            _Input(
                outpoint=txin.outpoint,
                value=value,
                script_type="p2pkh" if found is not None and found[0] == "p2pkh" else "p2wpkh",
                sequence=txin.sequence,
            )
        )
    return tuple(inputs), tuple(signing)


def _check_scripts(
    input_map: PsbtMap, script: bytes, value: int, where: str
) -> tuple[bytes, bytes]:
    """(the script that decides the spend, the P2SH redeem script or b""), after BIP174's checks.

    The witness UTXO, redeem script and witness script a PSBT carries must
    agree with the proven previous output (BIP174's Signer checks).
    """
    witness_utxo = input_map.get(bytes([IN_WITNESS_UTXO]))
    if (
        witness_utxo is not None
        and witness_utxo != value.to_bytes(8, "little") + varint(len(script)) + script
    ):
        raise InvalidField(
            f"{where}.witness_utxo", "differs from the output of the previous transaction"
        )
    redeem = input_map.get(bytes([IN_REDEEM_SCRIPT]))
    program = script
    if redeem is not None:
        if not _is_p2sh(script):
            raise InvalidField(f"{where}.redeem_script", "the previous output is not P2SH")
        if _p2sh_script(redeem) != script:
            raise InvalidField(
                f"{where}.redeem_script", "does not hash to the previous output's P2SH script"
            )
        program = redeem
    if witness_utxo is not None and not _is_witness_program(program) and not _is_p2sh(program):
        raise InvalidField(f"{where}.witness_utxo", "given for an output that is not segwit")
    witness_script = input_map.get(bytes([IN_WITNESS_SCRIPT]))
    if witness_script is not None:
        if not _is_p2wsh(program):
            raise InvalidField(f"{where}.witness_script", "the spent script is not P2WSH")
        if hashlib.sha256(witness_script).digest() != program[2:]:
            raise InvalidField(
                f"{where}.witness_script", "does not hash to the spent P2WSH program"
            )
    return program, redeem or b""


def _match(
    program: bytes, redeem: bytes, input_map: PsbtMap, public_key: bytes
) -> tuple[str, bytes, tuple[int, tuple[bytes, ...]] | None] | None:
    """(kind, scriptCode, multisig) when the key can sign this input, else None."""
    pubkey_hash = hash160(public_key)
    if program == p2wpkh_script(pubkey_hash):
        # BIP143: a P2WPKH scriptCode is the key's P2PKH script.
        return ("p2sh-p2wpkh" if redeem else "p2wpkh"), p2pkh_script(pubkey_hash), None
    if program == p2pkh_script(pubkey_hash) and not redeem:
        return "p2pkh", program, None
    witness_script = input_map.get(bytes([IN_WITNESS_SCRIPT]))
    if witness_script is not None and _is_p2wsh(program):
        multisig = parse_multisig(witness_script)
        if multisig is not None and public_key in multisig[1]:
            return ("p2sh-p2wsh" if redeem else "p2wsh"), witness_script, multisig
    return None


def _check_partial_sigs(
    psbt: Psbt,
    signing: Sequence[_Signing],
    digests: Sequence[bytes],
    public_key: bytes,
    budget: WorkBudget | None,
) -> None:
    """Refuse a PSBT whose partial signatures on an input the key signs are not all valid.

    A coordinator's junk must not be finalized into a transaction nodes reject,
    nor counted towards a multisig's m: every signature already there must be
    by a key the input's script lists, SIGHASH_ALL, strict DER, low-S, and
    verify over the digest Custos computed for that input itself.
    """
    for s, digest in zip(signing, digests, strict=True):
        listed = s.multisig[1] if s.multisig is not None else (public_key,)
        field = f"{_FIELD}.psbt.inputs[{s.index}].partial_sig"
        sigs = psbt.inputs[s.index].of_type(IN_PARTIAL_SIG)
        if budget is not None:
            budget.charge(SIGNATURE_CHECK_UNITS * len(sigs), field)
        for key, value in sigs:
            if key not in listed:
                raise InvalidField(
                    field, f"by key {key.hex()}, which the input's script does not list"
                )
            if value[-1] != SIGHASH_ALL:
                raise InvalidField(
                    field, f"by key {key.hex()} has sighash type {value[-1]}, not SIGHASH_ALL (1)"
                )
            if not verify_der(value[:-1], digest, key):
                raise InvalidField(
                    field,
                    f"by key {key.hex()} is not a valid low-S DER signature of this input's "
                    "SIGHASH_ALL digest",
                )


# ---- custody and change ---------------------------------------------------

# Who can spend an output: (m, its keys sorted). The key alone is (1, (key,)),
# as a 1-of-1 of the key is: the same custody.
Custody = tuple[int, tuple[bytes, ...]]


def _custody(multisig: tuple[int, tuple[bytes, ...]]) -> Custody:
    m, keys = multisig
    return m, tuple(sorted(keys))


def _spent_custody(signing: Sequence[_Signing], public_key: bytes) -> Custody | None:
    """The one custody every input the key signs comes from; None when they differ."""
    spent = {
        _custody(s.multisig) if s.multisig is not None else (1, (public_key,)) for s in signing
    }
    return spent.pop() if len(spent) == 1 else None


def _change(psbt: Psbt, signing: Sequence[_Signing], public_key: bytes) -> list[bool]:
    """Per output, whether it returns to the custody the signed inputs come from."""
    spent = _spent_custody(signing, public_key)
    own = _own_scripts(public_key)
    known = {o: s.script_code for s in signing if s.multisig for o in _wsh_scripts(s.script_code)}
    return [
        spent is not None and _output_custody(psbt, index, public_key, own, known) == spent
        for index in range(len(psbt.outputs))
    ]


def _output_custody(
    psbt: Psbt, index: int, public_key: bytes, own: set[bytes], known: dict[bytes, bytes]
) -> Custody | None:
    """Who can spend output `index`, when its script proves it; None for anyone else.

    The key alone for its own scripts; for a P2WSH or P2SH-P2WSH output, the
    multisig whose witness script hashes to it: one the key signs an input of
    here (`known`: output script -> witness script), or one the PSBT's output
    fields give (a coordinator marks its change so). A field that does not
    hash to the output is refused: it is no proof.
    """
    script = psbt.tx.outputs[index][1]
    if script in own:
        return 1, (public_key,)
    where = f"{_FIELD}.psbt.outputs[{index}]"
    fields = psbt.outputs[index]
    redeem = fields.get(bytes([OUT_REDEEM_SCRIPT]))
    if redeem is not None and _p2sh_script(redeem) != script:
        raise InvalidField(f"{where}.redeem_script", "does not hash to the output's script")
    witness_script = fields.get(bytes([OUT_WITNESS_SCRIPT]))
    if witness_script is None:
        witness_script = known.get(script)
    elif script not in _wsh_scripts(witness_script):
        raise InvalidField(
            f"{where}.witness_script", "is not the script of the output's P2WSH or P2SH-P2WSH"
        )
    multisig = parse_multisig(witness_script) if witness_script is not None else None
    if multisig is None:
        return None
    return _custody(multisig)


def _multisig_facts(signing: Sequence[_Signing], public_key: bytes) -> tuple[Multisig, ...]:
    """Each distinct multisig the key cosigns, as policy sees it."""
    facts: dict[Custody, Multisig] = {}
    for s in signing:
        if s.multisig is not None and _custody(s.multisig) not in facts:
            m, keys = s.multisig
            cosigners = tuple(sorted({k.hex() for k in keys if k != public_key}))
            facts[_custody(s.multisig)] = Multisig(m, len(keys), cosigners)
    return tuple(facts.values())


# ---- outputs and fee -----------------------------------------------------


def address_for_script(script: bytes, network: str) -> str | None:
    """The address of a P2PKH, P2SH, P2WPKH, P2WSH or P2TR script on `network`, else None."""
    params = NETWORKS[network]
    if len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[23:] == b"\x88\xac":
        return b58check_encode(bytes([params.p2pkh_version]) + script[3:23])
    if _is_p2sh(script):
        return b58check_encode(bytes([params.p2sh_version]) + script[2:22])
    if script[:2] in (b"\x00\x14", b"\x00\x20", b"\x51\x20") and len(script) == 2 + script[1]:
        version = 0 if script[0] == 0 else 1
        return encode_segwit(params.hrp, version, script[2:])
    return None


def _outputs(psbt: Psbt, network: str) -> tuple[_Output, ...]:
    outputs = []
    for index, (value, script) in enumerate(psbt.tx.outputs):
        where = f"{_FIELD}.psbt.outputs[{index}]"
        address = address_for_script(script, network)
        if address is None:
            raise InvalidField(
                where,
                "pays a script with no address (only P2PKH, P2SH, P2WPKH, P2WSH and P2TR "
                "outputs are signed, so that policy can judge every destination)",
            )
        if not 0 < value <= MAX_MONEY:
            raise InvalidField(where, f"value {value} sat is not in 1..{MAX_MONEY}")
        outputs.append(_Output(address, script, value))
    return tuple(outputs)


def _witness_size(stack: Sequence[int]) -> int:
    return len(varint(len(stack))) + sum(len(varint(n)) + n for n in stack)


def _checked_vsize(psbt: Psbt, tx: UnsignedBitcoinTx, signing: Sequence[_Signing]) -> int:
    """Estimated vsize of the final transaction; refuses a non-standard weight or fee rate.

    Exact for finalized inputs, an upper bound for the inputs the key signs
    (72-byte signatures), and only the input's fixed 41 bytes for any other
    input, whose script Custos does not know: the fee rate reported to policy
    can only be overstated by them, never understated.
    """
    by_index = {s.index: s for s in signing}
    base = 4 + len(varint(len(tx.inputs))) + 4
    base += len(varint(len(tx.outputs))) + sum(len(o.serialize()) for o in tx.outputs)
    witness = 0
    any_witness = False
    for index, input_map in enumerate(psbt.inputs):
        script_sig = 0
        stack: list[int] | None = None
        final_sig = input_map.get(bytes([IN_FINAL_SCRIPTSIG]))
        final_wit = input_map.get(bytes([IN_FINAL_SCRIPTWITNESS]))
        s = by_index.get(index)
        if final_sig is not None or final_wit is not None:
            script_sig = len(final_sig or b"")
            witness += len(final_wit) if final_wit is not None else 1
            any_witness = any_witness or final_wit is not None
        elif s is not None:
            if s.redeem_script:
                script_sig = len(_push(s.redeem_script))
            if s.kind == "p2pkh":
                script_sig = 2 + _MAX_SIG_LEN + 33
            elif s.multisig is not None:
                stack = [0] + [_MAX_SIG_LEN] * s.multisig[0] + [len(s.script_code)]
            else:
                stack = [_MAX_SIG_LEN, 33]
        if stack is not None:
            witness += _witness_size(stack)
            any_witness = True
        elif final_sig is None and final_wit is None:
            witness += 1  # an empty witness stack, if the transaction has witnesses
        base += 36 + len(varint(script_sig)) + script_sig + 4
    weight = 4 * base + (2 + witness if any_witness else 0)
    if weight > MAX_STANDARD_WEIGHT:
        raise InvalidField(
            f"{_FIELD}.psbt",
            f"estimated weight {weight} WU exceeds the standard limit {MAX_STANDARD_WEIGHT}",
        )
    vsize = (weight + 3) // 4
    if tx.fee > MAX_FEE_RATE_SAT_VB * vsize:
        raise InvalidField(
            f"{_FIELD}.psbt.outputs",
            f"fee {tx.fee} sat for ~{vsize} vB is {tx.fee // vsize} sat/vB, above Bitcoin "
            f"Core's default broadcast limit of {MAX_FEE_RATE_SAT_VB} sat/vB",
        )
    return vsize


# ---- finalizing ----------------------------------------------------------


def _push(data: bytes) -> bytes:
    if len(data) < 0x4C:
        return bytes([len(data)]) + data
    return b"\x4c" + bytes([len(data)]) + data  # OP_PUSHDATA1: redeem scripts up to 255 bytes


def _witness(stack: Sequence[bytes]) -> bytes:
    return varint(len(stack)) + b"".join(varint(len(item)) + item for item in stack)


def _finalize(input_map: PsbtMap, signing: _Signing, public_key: bytes) -> None:
    """BIP174 Input Finalizer for one input the key signed, if its signatures now suffice."""
    sigs = dict(input_map.of_type(IN_PARTIAL_SIG))
    script_sig = _push(signing.redeem_script) if signing.redeem_script else b""
    stack: list[bytes] | None
    if signing.kind == "p2pkh":
        script_sig = _push(sigs[public_key]) + _push(public_key)
        stack = None
    elif signing.multisig is None:
        stack = [sigs[public_key], public_key]
    else:
        m, keys = signing.multisig
        # OP_CHECKMULTISIG takes the signatures in the keys' order; the extra
        # leading item is the one it pops by mistake (empty: BIP147 NULLDUMMY).
        present = [sigs[k] for k in keys if k in sigs]
        if len(present) < m:
            return  # other cosigners have yet to sign
        stack = [b"", *present[:m], signing.script_code]
    if script_sig:
        input_map.put(bytes([IN_FINAL_SCRIPTSIG]), script_sig)
    if stack is not None:
        input_map.put(bytes([IN_FINAL_SCRIPTWITNESS]), _witness(stack))
    input_map.keep(_KEPT_WHEN_FINAL | (frozenset(range(256)) - _DEFINED_INPUT_TYPES))
