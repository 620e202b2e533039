"""gRPC servicers: thin adapters from proto messages to the domain objects.

A SignBatch request is decoded into frozen values here (signer/edge/requests.py),
once; nothing behind the servicers sees its protobuf form.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import grpc

from custos.common.secp256k1 import compressed
from custos.policies import ceremonies
from custos.proto.custos.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
    signer_pb2,
    signer_pb2_grpc,
)
from custos.signer.chains.networks import MAINNET, TESTNET, NetworkClass, network_class
from custos.signer.chains.registry import all_addresses
from custos.signer.edge import requests
from custos.signer.edge.auth import SERVICE
from custos.signer.edge.ceremony_kinds import KIND_OF_MESSAGE, MESSAGE_OF_KIND
from custos.signer.edge.errors import InvalidRequest, NotFound
from custos.signer.edge.interceptors import current_identity
from custos.signer.store.base import KeyRecord, KeyState, Store, StoredCheckpoint
from custos.signer.store.ceremony_tables import CeremonyRow
from custos.signer.store.wallet_tables import WalletRecord
from custos.signer.usecases.auditlog import AuditLog
from custos.signer.usecases.ceremonies import KeyCeremonies, ceremony_from_json
from custos.signer.usecases.key_import import (
    IMPORT_KEY_ALGORITHM,
    ImportKeyInfo,
    KeyImports,
    import_params,
    wrapped_from_params,
    wrapped_of_message,
)
from custos.signer.usecases.keys import GENERATED, IMPORTED, KeyManager, check_key_id
from custos.signer.usecases.pipeline import SigningPipeline
from custos.signer.usecases.second_factor import SecondFactor
from custos.signer.usecases.wallets import (
    WalletManager,
    account_path,
    check_wallet_id,
    imported_from_params,
)

_STATE = {
    KeyState.ENABLED: keys_pb2.KEY_STATE_ENABLED,
    KeyState.DISABLED: keys_pb2.KEY_STATE_DISABLED,
    KeyState.RETIRED: keys_pb2.KEY_STATE_RETIRED,
}

_CLASS: dict[str, keys_pb2.NetworkClass] = {
    MAINNET: keys_pb2.NETWORK_CLASS_MAINNET,
    TESTNET: keys_pb2.NETWORK_CLASS_TESTNET,
}
_ORIGIN = {
    GENERATED: keys_pb2.KEY_ORIGIN_GENERATED,
    IMPORTED: keys_pb2.KEY_ORIGIN_IMPORTED,
}
_CLASS_OF_MESSAGE: dict[int, NetworkClass] = {
    keys_pb2.NETWORK_CLASS_MAINNET: MAINNET,
    keys_pb2.NETWORK_CLASS_TESTNET: TESTNET,
}


def ceremony_message(row: CeremonyRow) -> keys_pb2.KeyCeremony:
    ceremony = ceremony_from_json(row.record)
    params = dict(ceremony.params)
    return keys_pb2.KeyCeremony(
        ceremony_id=ceremony.ceremony_id,
        kind=MESSAGE_OF_KIND.get(ceremony.kind, keys_pb2.CEREMONY_KIND_UNSPECIFIED),
        key_id=params.get("key_id", ""),
        network_class=_CLASS.get(
            params.get("network_class", ""), keys_pb2.NETWORK_CLASS_UNSPECIFIED
        ),
        state=row.state,
        digest=ceremony.digest,
        proposed_by=ceremony.proposer,
        approved_by=[a.officer for a in ceremony.approvals],
        approvals_required=ceremony.approvals_required,
        proposed_at_unix_ms=int(ceremony.proposed_at.timestamp() * 1000),
        expires_at_unix_ms=int(ceremony.expires_at.timestamp() * 1000),
        finished_at_unix=int(ceremony.finished_at.timestamp()) if ceremony.finished_at else 0,
        policy_version=ceremony.policy_version,
        outcome=ceremony.outcome,
        cancelled_by=ceremony.cancelled_by or "",
        imported_key=_imported_key_message(ceremony),
        params=dict(ceremony.params),
        delivered_to=list(ceremony.delivered_to),
        wallet_id=params.get("wallet_id", ""),
        label=params.get("label", ""),
        imported_wallet=_imported_wallet_message(ceremony),
    )


def _imported_wallet_message(ceremony: ceremonies.Ceremony) -> keys_pb2.ImportedWallet | None:
    if ceremony.kind != ceremonies.IMPORT_WALLET:
        return None
    imported = imported_from_params(dict(ceremony.params))
    return keys_pb2.ImportedWallet(
        wrapped_seed=imported.wrapped_seed,
        master_public_key=imported.master_public_key,
        import_key_fingerprint=imported.import_key_fingerprint,
    )


def _imported_key_message(ceremony: ceremonies.Ceremony) -> keys_pb2.ImportKeyRequest | None:
    if ceremony.kind != ceremonies.IMPORT_KEY:
        return None
    wrapped = wrapped_from_params(dict(ceremony.params))
    return keys_pb2.ImportKeyRequest(
        key_id=wrapped.key_id,
        network_class=_CLASS[wrapped.network_class],
        wrapped_key=wrapped.wrapped_key,
        public_key=wrapped.public_key,
        import_key_fingerprint=wrapped.import_key_fingerprint,
        source=wrapped.source,
        path=wrapped.path,
    )


def key_message(record: KeyRecord) -> keys_pb2.Key:
    return keys_pb2.Key(
        key_id=record.key_id,
        algorithm="secp256k1",
        public_key=compressed(record.public_key).hex(),
        state=_STATE[record.state],
        created_by=record.created_by,
        created_at_unix=record.created_at_ms // 1000,
        # Only the addresses the key can sign for: showing a testnet key's
        # mainnet address would invite mainnet deposits it can never move.
        addresses=[
            keys_pb2.Address(chain=a.chain, network=a.network, kind=a.kind, address=a.address)
            for a in all_addresses(record.public_key)
            if network_class(a.chain, a.network) == record.network_class
        ],
        network_class=_CLASS[record.network_class],
        origin=_ORIGIN[record.origin],
    )


def wallet_message(record: WalletRecord) -> keys_pb2.Wallet:
    return keys_pb2.Wallet(
        wallet_id=record.wallet_id,
        label=record.label,
        origin=_ORIGIN[record.origin],
        state=record.state,
        created_by=record.created_by,
        created_at_unix=record.created_at_ms // 1000,
    )


def _import_key_message(info: ImportKeyInfo) -> keys_pb2.ImportWrappingKey:
    return keys_pb2.ImportWrappingKey(
        public_key_der=info.public_key_der,
        fingerprint=info.fingerprint,
        algorithm=IMPORT_KEY_ALGORITHM,
    )


class SignerService(signer_pb2_grpc.SignerServicer):
    def __init__(self, pipeline: SigningPipeline) -> None:
        self._pipeline = pipeline

    def SignBatch(  # noqa: N802 - gRPC method names
        self, request: signer_pb2.SignBatchRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignBatchResponse:
        return self._pipeline.sign_batch(current_identity.get(), requests.sign_batch(request))

    def GetBatch(  # noqa: N802
        self, request: signer_pb2.GetBatchRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignBatchResponse:
        return self._pipeline.get_batch(current_identity.get(), request.request_id)

    def SignPsbt(  # noqa: N802
        self, request: signer_pb2.SignPsbtRequest, context: grpc.ServicerContext
    ) -> signer_pb2.SignPsbtResponse:
        # A one-item SignBatch, so that the PSBT goes through every step of the
        # pipeline (grants, policy, approvals, budgets, audit, idempotency) and
        # GetBatch and a retry with the same request_id answer for it as well.
        batch = self._pipeline.sign_batch(
            current_identity.get(),
            requests.sign_batch(
                signer_pb2.SignBatchRequest(
                    request_id=request.request_id,
                    items=[
                        signer_pb2.SignItem(
                            key_id=request.key_id,
                            bitcoin_psbt=signer_pb2.BitcoinPsbt(
                                network=request.network,
                                psbt=request.psbt,
                                finalize=request.finalize,
                            ),
                        )
                    ],
                )
            ),
        )
        signed = batch.status == signer_pb2.BATCH_STATUS_SIGNED and len(batch.items) == 1
        psbt = base64.b64decode(batch.items[0].raw_tx) if signed else b""
        return signer_pb2.SignPsbtResponse(batch=batch, psbt=psbt)


def _chosen_class(value: int) -> NetworkClass:
    """The network class a request names; checked before anything reaches the HSM."""
    chosen = _CLASS_OF_MESSAGE.get(value)
    if chosen is None:
        raise InvalidRequest(
            "network_class: required, NETWORK_CLASS_MAINNET or NETWORK_CLASS_TESTNET"
            " (fixed for the key's life)"
        )
    return chosen


class KeysService(keys_pb2_grpc.KeysServicer):
    def __init__(
        self,
        keys: KeyManager,
        key_ceremonies: KeyCeremonies,
        second_factor: SecondFactor,
        imports: KeyImports,
        wallets: WalletManager,
    ) -> None:
        self._wallets = wallets
        self._keys = keys
        self._ceremonies = key_ceremonies
        self._second_factor = second_factor
        self._imports = imports

    def CreateKey(  # noqa: N802
        self, request: keys_pb2.CreateKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        params = _create_params(request.key_id, request.network_class)
        return key_message(
            self._ceremonies.run_alone(
                current_identity.get().subject, ceremonies.CREATE_KEY, params
            )
        )

    def CreateImportKey(  # noqa: N802
        self, request: keys_pb2.CreateImportKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ImportWrappingKey:
        self._ceremonies.run_alone_keyless(
            current_identity.get().subject, ceremonies.IMPORT_KEY_INIT
        )
        return _import_key_message(self._imports.import_key())

    def GetImportKey(  # noqa: N802
        self, request: keys_pb2.GetImportKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ImportWrappingKey:
        return _import_key_message(self._imports.import_key())

    def ImportKey(  # noqa: N802
        self, request: keys_pb2.ImportKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        params = _import_params(request, request.key_id, request.network_class)
        return key_message(
            self._ceremonies.run_alone(
                current_identity.get().subject, ceremonies.IMPORT_KEY, params
            )
        )

    def GetKey(  # noqa: N802
        self, request: keys_pb2.GetKeyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        identity = current_identity.get()
        if identity.roles == {SERVICE} and not identity.may_use_key(request.key_id):
            # A service sees only its own keys: the same answer as for a missing key.
            raise NotFound(f"key {request.key_id!r} not found")
        return key_message(self._keys.get(request.key_id))

    def ListKeys(  # noqa: N802
        self, request: keys_pb2.ListKeysRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        identity = current_identity.get()
        records = self._keys.list()
        if identity.roles == {SERVICE}:
            records = [r for r in records if identity.may_use_key(r.key_id)]
        return keys_pb2.ListKeysResponse(keys=[key_message(r) for r in records])

    def DisableKey(  # noqa: N802
        self, request: keys_pb2.SetKeyStateRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        return self._set_state(ceremonies.DISABLE_KEY, request)

    def EnableKey(  # noqa: N802
        self, request: keys_pb2.SetKeyStateRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Key:
        return self._set_state(ceremonies.ENABLE_KEY, request)

    def _set_state(self, kind: str, request: keys_pb2.SetKeyStateRequest) -> keys_pb2.Key:
        """Disable or enable a key: a ceremony of one officer (or refused as one)."""
        check_key_id(request.key_id)
        subject = current_identity.get().subject
        return key_message(self._ceremonies.run_alone(subject, kind, {"key_id": request.key_id}))

    def ProposeKeyCeremony(  # noqa: N802
        self, request: keys_pb2.ProposeKeyCeremonyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.KeyCeremony:
        kind = KIND_OF_MESSAGE.get(request.kind)
        if kind is None:
            raise InvalidRequest(
                "kind: required, CEREMONY_KIND_CREATE_KEY, _IMPORT_KEY, _DISABLE_KEY, _ENABLE_KEY,"
                " _RETIRE_KEY, _BACKUP_KEY_INIT, _BACKUP, _EXPORT_KEY, _IMPORT_KEY_INIT,"
                " _CREATE_WALLET, _IMPORT_WALLET or _EXPORT_WALLET"
            )
        officer = current_identity.get().subject
        _only(kind, ceremonies.BACKUP_KEY_INIT, "threshold", bool(request.threshold))
        _only(kind, ceremonies.BACKUP_KEY_INIT, "holders", bool(request.holders))
        if kind != ceremonies.EXPORT_WALLET:
            _only(
                kind,
                ceremonies.EXPORT_KEY,
                "recipient_public_key",
                bool(request.recipient_public_key),
            )
        if kind == ceremonies.EXPORT_WALLET:
            return ceremony_message(
                self._ceremonies.propose(officer, kind, _export_wallet_params(request))
            )
        if kind in (ceremonies.CREATE_WALLET, ceremonies.IMPORT_WALLET):
            return ceremony_message(
                self._ceremonies.propose(officer, kind, _wallet_params(kind, request))
            )
        if request.wallet_id or request.label or request.HasField("imported_wallet"):
            raise InvalidRequest("wallet_id: only a create_wallet ceremony names a wallet")
        if kind != ceremonies.IMPORT_KEY and request.HasField("imported_key"):
            raise InvalidRequest("imported_key: only an import_key ceremony names one")
        if kind in (ceremonies.BACKUP, ceremonies.IMPORT_KEY_INIT, ceremonies.BACKUP_KEY_INIT):
            if request.key_id:
                raise InvalidRequest(f"key_id: a {kind} ceremony names no key")
            if request.network_class:
                raise InvalidRequest("network_class: only a create_key ceremony names one")
            params = {}
            if kind == ceremonies.BACKUP_KEY_INIT:
                if not request.holders:
                    raise InvalidRequest("holders: name the officers who each get one share")
                params = {
                    "threshold": str(request.threshold),
                    "holders": json.dumps(list(request.holders)),
                }
            return ceremony_message(self._ceremonies.propose(officer, kind, params))
        check_key_id(request.key_id)
        if kind == ceremonies.CREATE_KEY:
            params = _create_params(request.key_id, request.network_class)
        elif kind == ceremonies.IMPORT_KEY:
            params = _import_params(request.imported_key, request.key_id, request.network_class)
        elif request.network_class:
            raise InvalidRequest("network_class: only a create_key ceremony names one")
        elif kind == ceremonies.EXPORT_KEY:
            if not request.recipient_public_key:
                raise InvalidRequest("recipient_public_key: required (DER SubjectPublicKeyInfo)")
            params = {
                "key_id": request.key_id,
                "recipient_public_key": base64.b64encode(request.recipient_public_key).decode(),
            }
        else:
            params = {"key_id": request.key_id}
        row = self._ceremonies.propose(officer, kind, params)
        return ceremony_message(row)

    def ApproveKeyCeremony(  # noqa: N802
        self, request: keys_pb2.ApproveKeyCeremonyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.KeyCeremony:
        officer = current_identity.get().subject
        if not request.ceremony_id:
            raise InvalidRequest("ceremony_id: required")
        if not request.digest:
            raise InvalidRequest("digest: the digest you reviewed is required")
        if not request.totp_code:
            raise InvalidRequest("totp_code: every ceremony approval needs a fresh TOTP code")
        self._second_factor.check(officer, request.totp_code)
        row = self._ceremonies.approve(
            officer, request.ceremony_id, request.digest, totp_verified=True
        )
        return ceremony_message(row)

    def CancelKeyCeremony(  # noqa: N802
        self, request: keys_pb2.CancelKeyCeremonyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.KeyCeremony:
        officer = current_identity.get().subject
        if not request.ceremony_id:
            raise InvalidRequest("ceremony_id: required")
        if not request.totp_code:
            raise InvalidRequest("totp_code: cancelling a ceremony needs a fresh TOTP code")
        self._second_factor.check(officer, request.totp_code)
        row = self._ceremonies.cancel(officer, request.ceremony_id, totp_verified=True)
        return ceremony_message(row)

    def GetKeyCeremony(  # noqa: N802
        self, request: keys_pb2.GetKeyCeremonyRequest, context: grpc.ServicerContext
    ) -> keys_pb2.KeyCeremony:
        if not request.ceremony_id:
            raise InvalidRequest("ceremony_id: required")
        return ceremony_message(self._ceremonies.get(request.ceremony_id))

    def FetchKeyCeremonyResult(  # noqa: N802
        self, request: keys_pb2.FetchKeyCeremonyResultRequest, context: grpc.ServicerContext
    ) -> keys_pb2.KeyCeremonyResult:
        officer = current_identity.get().subject
        if not request.ceremony_id:
            raise InvalidRequest("ceremony_id: required")
        if not request.totp_code:
            raise InvalidRequest("totp_code: fetching a ceremony's result needs a fresh TOTP code")
        self._second_factor.check(officer, request.totp_code)
        row, output = self._ceremonies.fetch(officer, request.ceremony_id, totp_verified=True)
        return keys_pb2.KeyCeremonyResult(
            ceremony=ceremony_message(row),
            data=output.data,
            sha256=output.sha256,
            format=output.format,
        )

    def ListKeyCeremonies(  # noqa: N802
        self, request: keys_pb2.ListKeyCeremoniesRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListKeyCeremoniesResponse:
        return keys_pb2.ListKeyCeremoniesResponse(
            ceremonies=[ceremony_message(row) for row in self._ceremonies.list()]
        )

    # -- HD wallets -------------------------------------------------------------------

    def _visible_wallet(self, wallet_id: str) -> WalletRecord:
        check_wallet_id(wallet_id)
        identity = current_identity.get()
        if identity.roles == {SERVICE} and not identity.may_use_wallet(wallet_id):
            # A service sees only its own wallets: the same answer as for a missing one.
            raise NotFound(f"wallet {wallet_id!r} not found")
        return self._wallets.get(wallet_id)

    def GetWallet(  # noqa: N802
        self, request: keys_pb2.GetWalletRequest, context: grpc.ServicerContext
    ) -> keys_pb2.Wallet:
        return wallet_message(self._visible_wallet(request.wallet_id))

    def ListWallets(  # noqa: N802
        self, request: keys_pb2.ListWalletsRequest, context: grpc.ServicerContext
    ) -> keys_pb2.ListWalletsResponse:
        identity = current_identity.get()
        records = self._wallets.list()
        if identity.roles == {SERVICE}:
            records = [r for r in records if identity.may_use_wallet(r.wallet_id)]
        return keys_pb2.ListWalletsResponse(wallets=[wallet_message(r) for r in records])

    def DeriveAddresses(  # noqa: N802
        self, request: keys_pb2.DeriveAddressesRequest, context: grpc.ServicerContext
    ) -> keys_pb2.DeriveAddressesResponse:
        if not request.HasField("account"):
            raise InvalidRequest("account: required (wallet_id, chain, network, account)")
        where = request.account
        self._visible_wallet(where.wallet_id)
        path = account_path(where.chain, where.network, where.account, where.purpose)
        derived = self._wallets.derive(
            where.wallet_id,
            path,
            change=request.change,
            start=request.index,
            count=request.count or 1,
        )
        return keys_pb2.DeriveAddressesResponse(
            account_path=path.text,
            addresses=[
                keys_pb2.DerivedAddress(
                    path=d.path, public_key=d.public_key.hex(), address=d.address
                )
                for d in derived
            ],
        )

    def GetAccountKey(  # noqa: N802
        self, request: keys_pb2.WalletAccount, context: grpc.ServicerContext
    ) -> keys_pb2.AccountKey:
        self._visible_wallet(request.wallet_id)
        path = account_path(request.chain, request.network, request.account, request.purpose)
        return keys_pb2.AccountKey(
            account_path=path.text,
            extended_public_key=self._wallets.exported_key(request.wallet_id, path),
        )


def _export_wallet_params(request: keys_pb2.ProposeKeyCeremonyRequest) -> dict[str, str]:
    if request.key_id or request.network_class or request.HasField("imported_key"):
        raise InvalidRequest("key_id: an export_wallet ceremony names a wallet_id, not a key")
    if request.label or request.HasField("imported_wallet"):
        raise InvalidRequest("label: an export_wallet ceremony names only a wallet and recipient")
    check_wallet_id(request.wallet_id)
    if not request.recipient_public_key:
        raise InvalidRequest("recipient_public_key: required (DER SubjectPublicKeyInfo)")
    return {
        "wallet_id": request.wallet_id,
        "recipient_public_key": base64.b64encode(request.recipient_public_key).decode(),
    }


def _wallet_params(kind: str, request: keys_pb2.ProposeKeyCeremonyRequest) -> dict[str, str]:
    if request.key_id or request.network_class or request.HasField("imported_key"):
        raise InvalidRequest(f"key_id: a {kind} ceremony names a wallet_id, not a key")
    check_wallet_id(request.wallet_id)
    params = {"wallet_id": request.wallet_id, "label": request.label or request.wallet_id}
    if kind == ceremonies.CREATE_WALLET:
        if request.HasField("imported_wallet"):
            raise InvalidRequest("imported_wallet: only an import_wallet ceremony names one")
        return params
    if not request.HasField("imported_wallet"):
        raise InvalidRequest("imported_wallet: required (the seed encrypted to the import key)")
    imported = request.imported_wallet
    return {
        **params,
        "wrapped_seed": base64.b64encode(imported.wrapped_seed).decode(),
        "master_public_key": imported.master_public_key.hex(),
        "import_key_fingerprint": imported.import_key_fingerprint,
    }


def _create_params(key_id: str, network_class: int) -> dict[str, str]:
    check_key_id(key_id)
    return {"key_id": key_id, "network_class": _chosen_class(network_class)}


def _import_params(
    message: keys_pb2.ImportKeyRequest, key_id: str, network_class: int
) -> dict[str, str]:
    check_key_id(key_id)
    chosen = _chosen_class(network_class)
    return import_params(wrapped_of_message(message, key_id, chosen))


class AuditService(audit_pb2_grpc.AuditServicer):
    """Auditors read the log, its checkpoints and proofs; officers may force a checkpoint."""

    def __init__(self, log: AuditLog, store: Store) -> None:
        self._log = log
        self._store = store

    def StreamRecords(  # noqa: N802
        self, request: audit_pb2.StreamRecordsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.AuditRecord]:
        seq = request.from_seq
        while context.is_active():
            rows = self._store.audit_rows(seq, 500)
            for row_seq, data, leaf in rows:
                yield audit_pb2.AuditRecord(seq=row_seq, encoded=data, leaf_hash=leaf)
                seq = row_seq + 1
            if not rows:
                if not request.follow:
                    return
                self._store.wait_for_audit(seq, timeout=1.0)

    def GetLatestCheckpoint(  # noqa: N802
        self, request: audit_pb2.GetLatestCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.Checkpoint:
        return _checkpoint_message(self._log.latest())

    def ListCheckpoints(  # noqa: N802
        self, request: audit_pb2.ListCheckpointsRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.Checkpoint]:
        for stored in self._log.all_checkpoints(request.min_size):
            yield _checkpoint_message(stored)

    def CreateCheckpoint(  # noqa: N802
        self, request: audit_pb2.CreateCheckpointRequest, context: grpc.ServicerContext
    ) -> audit_pb2.Checkpoint:
        return _checkpoint_message(self._log.checkpoint())

    def GetInclusionProof(  # noqa: N802
        self, request: audit_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.InclusionProof:
        size, leaf, proof = self._log.inclusion(request.seq, request.tree_size)
        return audit_pb2.InclusionProof(
            seq=request.seq, tree_size=size, leaf_hash=leaf, hashes=proof
        )

    def GetConsistencyProof(  # noqa: N802
        self, request: audit_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> audit_pb2.ConsistencyProof:
        size, proof = self._log.consistency(request.from_size, request.to_size)
        return audit_pb2.ConsistencyProof(from_size=request.from_size, to_size=size, hashes=proof)

    def Export(  # noqa: N802
        self, request: audit_pb2.ExportRequest, context: grpc.ServicerContext
    ) -> Iterator[audit_pb2.ExportChunk]:
        for lines in self._log.export(request.from_seq, request.to_seq):
            yield audit_pb2.ExportChunk(lines=lines)

    def GetAuditKey(  # noqa: N802
        self, request: audit_pb2.GetAuditKeyRequest, context: grpc.ServicerContext
    ) -> audit_pb2.AuditKey:
        return audit_pb2.AuditKey(
            key_name=self._log.key_name,
            origin=self._log.origin,
            public_key_pem=self._log.public_key_pem,
        )


def _checkpoint_message(stored: StoredCheckpoint) -> audit_pb2.Checkpoint:
    return audit_pb2.Checkpoint(note=stored.note, size=stored.size, root=stored.root)


def _only(kind: str, owner: str, field: str, given: bool) -> None:
    """A proposal field that only one kind of ceremony names."""
    if given and kind != owner:
        raise InvalidRequest(f"{field}: only a {owner} ceremony names one")
