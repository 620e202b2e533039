"""The signing pipeline: from an authenticated SignBatch request to stored signatures.

Order matters (DESIGN.md invariant 1): validate every item, check grants and
key states, then commit the claim on the request id together with the audit
record of the authorization, and only then sign. The result is stored with its
audit record before it is returned, so a caller never holds a signature the
store does not know about; a retried request id replays the stored bytes.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from custos.audit.record import AuditEvent
from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.errors import HsmError
from custos.hsm.hd import HdSignRequest
from custos.hsm.keystore import Signer, SignRequest
from custos.policies.evaluate import RequireApproval, held_by_review
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import ChainFamily, InvalidField, KeyInfo, PreparedTx, SignedTx
from custos.signer.chains.evm import CHAINS as EVM_CHAINS
from custos.signer.chains.items import (
    EvmPersonalMessage,
    EvmTransaction,
    EvmTypedData,
    SignBatch,
    SignItem,
)
from custos.signer.chains.limits import DEFAULT_LIMITS, WorkBudget
from custos.signer.chains.networks import network_class
from custos.signer.chains.registry import Adapters
from custos.signer.edge import logs, metrics
from custos.signer.edge.auth import SERVICE, Identity
from custos.signer.edge.errors import (
    AlreadyExists,
    CustosError,
    FailedPrecondition,
    InProgress,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PolicyDenied,
    kind_of,
)
from custos.signer.edge.events import EventBus
from custos.signer.store.base import ClaimLost, ClaimOutcome, KeyRecord, KeyState, Store, StoreError
from custos.signer.usecases.admission import (
    Judgement,
    admission,
    budget_error,
    judge,
    pending_row,
    summarize,
)
from custos.signer.usecases.authenticity import StateAuthenticator
from custos.signer.usecases.clock import Clock, utcnow
from custos.signer.usecases.keys import KEY_ID, verify_keys
from custos.signer.usecases.policy_governor import PolicyGovernor
from custos.signer.usecases.review import REVIEW_FAILED, Batch, ItemFacts, Reviewer
from custos.signer.usecases.wallets import DerivedKey, WalletManager, check_wallet_id

log = logging.getLogger("custos.pipeline")

REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")


@dataclass(frozen=True, slots=True)
class _Item:
    index: int
    key: KeyRecord
    adapter: ChainFamily
    prepared: PreparedTx
    hd: DerivedKey | None = None  # a wallet's derived key: signed through HdSigner


@dataclass(frozen=True, slots=True)
class Rejudged:
    """A held batch judged again now: who asked (with their grants), its items, the verdict."""

    identity: Identity
    request_id: str
    items: tuple[_Item, ...]
    judgement: Judgement


@dataclass(frozen=True, slots=True)
class _Decided:
    """Which policy version and rules let a batch be signed (kept with its result)."""

    policy_version: str
    rules: tuple[str, ...]
    approval_id: str = ""


class HdSigner(Protocol):
    """Signs with HD wallets' derived keys (signer.usecases.auditlog.AuditGate over
    hsm.hd.HdKeys)."""

    def hd_sign(self, requests: Sequence[HdSignRequest]) -> list[RecoverableSignature]: ...


class SigningPipeline:
    """Validates, authorizes, records, signs and stores one batch at a time."""

    def __init__(
        self,
        store: Store,
        signer: Signer,
        adapters: Adapters,
        *,
        max_batch_items: int,
        max_batch_work_units: int = DEFAULT_LIMITS.max_batch_work_units,
        lease_ms: int,
        governor: PolicyGovernor,
        events: EventBus,
        integrity: StateAuthenticator,
        clock: Clock = utcnow,
        identities: Callable[[str], Identity | None] | None = None,
        reviewer: Reviewer | None = None,
        wallets: WalletManager | None = None,
        hd_signer: HdSigner | None = None,
    ) -> None:
        """`identities` looks up a configured identity by subject (Authorizer.identity_of):
        held batches are signed with the caller's own grants; without it none is signed.
        `reviewer` asks the endpoints of `review` rules; without it such rules fail closed."""
        self._reviewer = reviewer
        self._wallets = wallets
        self._hd_signer = hd_signer
        self._integrity = integrity
        self._store = store
        self._identities = identities
        self._signer = signer
        self._adapters = adapters
        self._max_items = max_batch_items
        self._max_work = max_batch_work_units
        self._lease_ms = lease_ms
        self._governor = governor
        self._events = events
        self._clock = clock

    def sign_batch(self, caller: Identity, request: SignBatch) -> pb.SignBatchResponse:
        logs.bind(request_id=request.request_id[:128])
        try:
            response = self._sign_batch(caller, request)
        except Exception as exc:
            outcome = kind_of(exc).outcome
            if isinstance(exc, CustosError):
                log.info("batch %s: %s", outcome, exc)
            if isinstance(exc, PolicyDenied):
                metrics.POLICY_DENIALS.labels(
                    exc.details.get("rule", exc.details.get("code", ""))
                ).inc()
            _count(outcome, [_chain_of(item) for item in request.items])
            raise
        outcome = "replayed" if response.replayed else _OUTCOME_OF_STATUS[response.status]
        _count(outcome, [_chain_of(item) for item in request.items])
        # Successes are counted by the metrics; a line each only when debugging.
        log.debug("batch %s: %d items", outcome, len(response.items))
        return response

    def _sign_batch(self, caller: Identity, request: SignBatch) -> pb.SignBatchResponse:
        try:
            self._check_envelope(request)
            digest = request.payload_digest
            stored = self._store.get_batch(caller.subject, request.request_id)
            if stored is not None and stored.payload_digest == digest:
                if stored.result is not None:
                    return _replay(stored.result)  # fast path: no key lookups, no write
                if stored.approval_id is not None:
                    return _pending(request.request_id, stored.approval_id)
            items = self._prepare(caller, request)
            judgement = judge(
                self._governor.active(),
                caller.subject,
                [item.prepared.intent for item in items],
                self._clock(),
            )
            if judgement.decision.reviews:
                judgement = self._review(caller, request.request_id, digest, items, judgement)
        except CustosError as exc:
            self._audit_refusal(caller, request.request_id, exc)
            raise
        held = None
        if isinstance(judgement.decision, RequireApproval):
            summaries = [summarize(i.prepared.intent, i.key.key_id) for i in items]
            held = pending_row(
                judgement,
                caller.subject,
                request.request_id,
                request.encoded,
                summaries,
            )
        events = [self._authorized_event(caller, request.request_id, digest, items, judgement)]
        if held is not None:
            events.append(
                AuditEvent(
                    "approval.requested",
                    caller.subject,
                    {
                        "request_id": request.request_id,
                        "approval_id": held.approval_id,
                        "rules": list(judgement.rules),
                    },
                )
            )
        with metrics.AUDIT_APPEND_SECONDS.time():
            claim = self._store.claim_batch(
                caller.subject,
                request.request_id,
                digest,
                self._lease_ms,
                events,
                admission=admission(judgement, held),
            )
        if claim.outcome is ClaimOutcome.DONE and claim.result is not None:
            return _replay(claim.result)
        if claim.outcome is ClaimOutcome.CONFLICT:
            raise AlreadyExists(
                f"request_id {request.request_id!r} was already used with different items"
            )
        if claim.outcome is ClaimOutcome.IN_PROGRESS:
            raise InProgress(f"request_id {request.request_id!r} is being processed; retry later")
        if claim.outcome is ClaimOutcome.PENDING and claim.approval_id is not None:
            return _pending(request.request_id, claim.approval_id)
        if claim.outcome is ClaimOutcome.OVER_LIMIT:
            error = budget_error(claim.breach)  # type: ignore[arg-type]
            self._audit_refusal(caller, request.request_id, error)
            raise error
        if claim.outcome is ClaimOutcome.HELD and held is not None:
            self._events.publish("pending", held.approval_id, request.request_id, caller.subject)
            response = _pending(request.request_id, held.approval_id)
            response.policy_version = judgement.policy.hash
            response.rules.extend(judgement.rules)
            return response
        assert claim.token is not None  # CLAIMED always carries one
        return self._sign_claimed(
            caller,
            request.request_id,
            items,
            _Decided(judgement.policy.hash, judgement.rules),
            claim.token,
        )

    def rejudge(self, caller: str, request: SignBatch) -> Rejudged:
        """Judge a held batch again, as if it arrived now: the caller's own grants, the
        keys' states and the active policy (DESIGN.md invariant 9). `request` is the
        held batch decoded from its stored bytes (signer.edge.requests.stored_batch).

        Raises PermissionDenied when the caller is no longer a service identity or
        lost a key grant, PolicyDenied when the active policy now refuses the batch,
        and the usual errors for disabled keys or a missing policy.
        """
        identity = self._identities(caller) if self._identities is not None else None
        if identity is None or SERVICE not in identity.roles:
            raise PermissionDenied(f"{caller!r} is not (or no longer) a service identity")
        self._check_envelope(request)
        items = self._prepare(identity, request)
        judgement = judge(
            self._governor.active(),
            caller,
            [item.prepared.intent for item in items],
            self._clock(),
        )
        # No endpoint is asked again: every review rule counts as held, so only
        # its approvals let the batch be signed (signer/usecases/review.py says why).
        judgement = dataclasses.replace(judgement, decision=held_by_review(judgement.decision))
        return Rejudged(identity, request.request_id, tuple(items), judgement)

    def _review(
        self,
        caller: Identity,
        request_id: str,
        digest: bytes,
        items: Sequence[_Item],
        judgement: Judgement,
    ) -> Judgement:
        """The judgement once the review rules' endpoints answered (outside any transaction)."""
        if self._reviewer is None:
            raise FailedPrecondition(
                "the policy asks for an external review, and this service has none configured;"
                " nothing was signed",
                {"code": REVIEW_FAILED, "policy_version": judgement.policy.hash},
            )
        batch = Batch(
            caller.subject,
            request_id,
            digest,
            tuple(
                ItemFacts(i.key.key_id, i.prepared.intent, tuple(i.prepared.digests)) for i in items
            ),
        )
        return self._reviewer.review(batch, judgement, self._clock())

    def sign_approved(
        self, held: Rejudged, approval_id: str
    ) -> tuple[pb.SignBatchResponse, AuditEvent]:
        """Sign a proven, approved batch; the caller stores the result (fenced) and tells.

        The response names the policy version and rules of the judgement that
        really decided: the one made just now, not the one that held the batch.
        """
        decided = _Decided(held.judgement.policy.hash, held.judgement.rules, approval_id)
        signed = self._sign_items(held.identity, held.request_id, held.items, decided)
        _count("signed", [item.prepared.intent.chain for item in held.items])
        return signed

    def get_batch(self, caller: Identity, request_id: str) -> pb.SignBatchResponse:
        if not REQUEST_ID.fullmatch(request_id):
            raise InvalidRequest("request_id: must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
        stored = self._store.get_batch(caller.subject, request_id)
        if stored is not None and stored.result is not None:
            return _replay(stored.result)
        if stored is not None and stored.approval_id is not None:
            return _pending(request_id, stored.approval_id)
        raise NotFound(f"no signed batch with request_id {request_id!r}")

    def _authorized_event(
        self,
        caller: Identity,
        request_id: str,
        digest: bytes,
        items: Sequence[_Item],
        judgement: Judgement,
    ) -> AuditEvent:
        return AuditEvent(
            "sign.authorized",
            caller.subject,
            {
                "request_id": request_id,
                "payload_digest": digest.hex(),
                "policy_version": judgement.policy.hash,
                "decision": "approval"
                if isinstance(judgement.decision, RequireApproval)
                else "allow",
                "rules": list(judgement.rules),
                **(
                    {
                        "reviews": [
                            {"endpoint": e, "answer": a, "reason": r}
                            for e, a, r in judgement.reviewed
                        ]
                    }
                    if judgement.reviewed
                    else {}
                ),
                "reserved": [[d.key, str(d.amount), d.count] for d in judgement.deltas],
                "items": [
                    {
                        "key_id": item.key.key_id,
                        "chain": item.prepared.intent.chain,
                        "network": item.prepared.intent.network,
                        "digests": [d.hex() for d in item.prepared.digests],
                    }
                    for item in items
                ],
            },
        )

    # -- steps ----------------------------------------------------------------

    def _check_envelope(self, request: SignBatch) -> None:
        if not REQUEST_ID.fullmatch(request.request_id):
            raise InvalidRequest("request_id: must match [A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
        if not request.items:
            raise InvalidRequest("items: a batch needs at least one item")
        if len(request.items) > self._max_items:
            raise InvalidRequest(
                f"items: {len(request.items)} items exceed the limit of {self._max_items}"
            )

    def _prepare(self, caller: Identity, request: SignBatch) -> list[_Item]:
        granted: set[str] = set()  # batches name few keys: each is checked once
        for index, item in enumerate(request.items):
            if item.hd is not None:
                _check_wallet_grant(caller, index, item)
                continue
            if item.key_id in granted:
                continue
            if not KEY_ID.fullmatch(item.key_id):
                raise InvalidRequest(f"items[{index}].key_id: not a valid key id")
            if not caller.may_use_key(item.key_id):
                raise PermissionDenied(f"items[{index}].key_id: key {item.key_id!r} not granted")
            granted.add(item.key_id)
        since = self._integrity.epoch()
        keys = self._store.get_keys([item.key_id for item in request.items if item.hd is None])
        # Only rows the HSM vouches for may lead to a signature (invariant 8);
        # verified rows are cached, so a hot key costs no HSM call here.
        verify_keys(self._integrity, list(keys.values()), since)
        # Every adapter charges its item's work here before doing it, so a large
        # batch of expensive items stops after a bounded amount of CPU.
        budget = WorkBudget(self._max_work)
        prepared = []
        infos: dict[str, KeyInfo] = {}
        for index, item in enumerate(request.items):
            if item.hd is not None:
                prepared.append(self._prepare_hd(index, item, budget))
                continue
            key = keys.get(item.key_id)
            if key is None:
                raise NotFound(f"items[{index}].key_id: key {item.key_id!r} not found")
            if key.state is not KeyState.ENABLED:
                raise FailedPrecondition(
                    f"items[{index}].key_id: key {item.key_id!r} is {key.state.value}"
                )
            if item.tx is None:
                kinds = ", ".join(self._adapters)
                raise InvalidRequest(f"items[{index}].tx: no transaction or message ({kinds})")
            info = infos.get(key.key_id)
            if info is None:
                info = infos[key.key_id] = KeyInfo(key.key_id, key.public_key)
            try:
                adapter, ready = self._adapters.prepare(item.tx, info, budget)
            except InvalidField as exc:
                raise InvalidRequest(f"items[{index}].{exc.field}: {exc.message}") from None
            kind = item.tx.kind
            _check_network_class(index, kind, key, ready.intent.chain, ready.intent.network)
            # The key's origin comes from its authenticated record, for key_origins rules
            # (copied only when it differs from what the adapter left: a copy per item costs).
            if ready.intent.key_origin != key.origin:
                ready = dataclasses.replace(
                    ready, intent=dataclasses.replace(ready.intent, key_origin=key.origin)
                )
            prepared.append(_Item(index, key, adapter, ready))
        return prepared

    def _prepare_hd(self, index: int, item: SignItem, budget: WorkBudget) -> _Item:
        """An item signed by a wallet's derived key: the key resolved from the wallet's
        HSM-tagged row and account key, never from anything the caller sent."""
        assert item.hd is not None
        ref = item.hd
        if self._wallets is None or self._hd_signer is None:
            raise FailedPrecondition(f"items[{index}].hd: this service holds no HD wallets")
        if item.tx is None:
            kinds = ", ".join(self._adapters)
            raise InvalidRequest(f"items[{index}].tx: no transaction or message ({kinds})")
        try:
            derived = self._wallets.key_for(ref, item.tx)
        except (InvalidRequest, NotFound, FailedPrecondition) as exc:
            raise type(exc)(f"items[{index}].{exc}") from None
        try:
            adapter, ready = self._adapters.prepare(
                item.tx, KeyInfo(derived.key_id, derived.public_key), budget
            )
        except InvalidField as exc:
            raise InvalidRequest(f"items[{index}].{exc.field}: {exc.message}") from None
        intent = dataclasses.replace(
            ready.intent,
            key_origin=derived.origin,
            wallet_id=derived.wallet_id,
            wallet_account=ref.account,
        )
        # A wallet has no network class of its own: the coin type separates Bitcoin's
        # mainnet keys from its test networks' (hsm.hd_paths); EVM and Tron addresses
        # are one per key on every network, as in any wallet software (README).
        key = KeyRecord(
            derived.key_id,
            derived.public_key,
            KeyState.ENABLED,
            "",
            0,
            network_class(intent.chain, intent.network),
            origin=derived.origin,
        )
        return _Item(index, key, adapter, dataclasses.replace(ready, intent=intent), derived)

    def _sign_claimed(
        self,
        caller: Identity,
        request_id: str,
        items: Sequence[_Item],
        decided: _Decided,
        token: bytes,
    ) -> pb.SignBatchResponse:
        try:
            return self._sign_and_store(caller, request_id, items, decided, token)
        except ClaimLost:
            # Our lease ran out; a retry took the id over or a sweep closed the claim
            # (a sign.failed record closed this attempt either way): what we signed
            # never leaves, and a stored result is the request id's one result.
            stored = self._store.get_batch(caller.subject, request_id)
            if stored is not None and stored.done and stored.result is not None:
                return _replay(stored.result)
            raise InProgress(
                f"request_id {request_id!r}: this attempt's lease ran out; retry"
            ) from None
        except BaseException as exc:
            # Give the request id back so that a retry can sign; nothing left the process.
            # Under our token only: a batch the store completed (a COMMIT whose outcome
            # we never heard) keeps its result and its budget.
            # The edge tells the caller (signer.edge.errors.ERROR_KINDS: an HsmError is
            # UNAVAILABLE, nothing was signed); the HSM's own words stay in our log.
            reason = "hsm unavailable" if isinstance(exc, HsmError) else type(exc).__name__
            self._release_quietly(caller, request_id, reason, token)
            if isinstance(exc, HsmError):
                log.warning("signing %s failed: %s", request_id, exc)
            raise

    def _sign_and_store(
        self,
        caller: Identity,
        request_id: str,
        items: Sequence[_Item],
        decided: _Decided,
        token: bytes,
    ) -> pb.SignBatchResponse:
        response, signed_event = self._sign_items(caller, request_id, items, decided)
        with metrics.AUDIT_APPEND_SECONDS.time():
            self._store.complete_batch(
                caller.subject,
                request_id,
                response.SerializeToString(deterministic=True),
                [signed_event],
                token=token,
            )
        return response

    def _sign_items(
        self,
        caller: Identity,
        request_id: str,
        items: Sequence[_Item],
        decided: _Decided,
    ) -> tuple[pb.SignBatchResponse, AuditEvent]:
        requests = [
            SignRequest(item.key.key_id, digest, item.key.public_key)
            for item in items
            if item.hd is None
            for digest in item.prepared.digests
        ]
        hd_requests = [
            item.hd.sign_request(digest)
            for item in items
            if item.hd is not None
            for digest in item.prepared.digests
        ]
        with metrics.HSM_SECONDS.time():
            plain = iter(self._signer.sign(requests) if requests else [])
            derived = iter(self._hd_sign(hd_requests) if hd_requests else [])
        # Back in item order: each item's signatures come from its own kind of key.
        signatures = [
            next(derived if item.hd is not None else plain)
            for item in items
            for _digest in item.prepared.digests
        ]
        response = pb.SignBatchResponse(
            request_id=request_id,
            status=pb.BATCH_STATUS_SIGNED,
            approval_id=decided.approval_id,
            policy_version=decided.policy_version,
            rules=decided.rules,
        )
        cursor = 0
        for item in items:
            count = len(item.prepared.digests)
            sigs = signatures[cursor : cursor + count]
            cursor += count
            signed = item.adapter.assemble(item.prepared, sigs)
            _add_signed_item(response, item, signed, sigs)
        signed_event = AuditEvent(
            "sign.signed",
            caller.subject,
            {
                "request_id": request_id,
                "items": [
                    {"key_id": i.key_id, "chain": i.chain, "tx_id": i.tx_id} for i in response.items
                ],
                # A held batch's id, so that its "signed" event names it (outbox).
                **({"approval_id": decided.approval_id} if decided.approval_id else {}),
            },
        )
        return response, signed_event

    def _hd_sign(self, requests: Sequence[HdSignRequest]) -> list[RecoverableSignature]:
        if self._hd_signer is None:  # pragma: no cover - _prepare_hd refused such items
            raise FailedPrecondition("this service holds no HD wallets")
        return self._hd_signer.hd_sign(requests)

    def _audit_refusal(self, caller: Identity, request_id: str, exc: CustosError) -> None:
        event = AuditEvent(
            "sign.refused",
            caller.subject,
            {
                "request_id": request_id[:128],
                "error": type(exc).__name__,
                "reason": str(exc)[:512],
                **exc.details,
            },
        )
        try:
            self._store.append_audit([event])
        except StoreError:
            log.warning("could not audit the refusal of request %r", request_id[:128])

    def _release_quietly(
        self, caller: Identity, request_id: str, reason: str, token: bytes
    ) -> None:
        event = AuditEvent(
            "sign.failed", caller.subject, {"request_id": request_id, "reason": reason}
        )
        try:
            self._store.release_batch(caller.subject, request_id, [event], token=token)
        except Exception:  # the store may be what failed; the lease expires on its own
            log.exception("could not release request id %s", request_id)


def _add_signed_item(
    response: pb.SignBatchResponse,
    item: _Item,
    signed: SignedTx,
    sigs: Sequence[RecoverableSignature],
) -> None:
    # Built in place (items.add): appending a finished message copies it.
    added = response.items.add(
        chain=signed.chain,
        network=signed.network,
        key_id=item.key.key_id,
        address=signed.address,
        tx_id=signed.tx_id,
        raw_tx=signed.raw_tx,
        fee=signed.fee,
        max_fee=str(signed.max_fee) if signed.max_fee else "",
    )
    for digest, sig in zip(item.prepared.digests, sigs, strict=True):
        added.signatures.add(digest=digest.hex(), signature=sig.rsv().hex())


_OUTCOME_OF_STATUS = {
    pb.BATCH_STATUS_SIGNED: "signed",
    pb.BATCH_STATUS_PENDING_APPROVAL: "pending",
    pb.BATCH_STATUS_REJECTED: "rejected",
    pb.BATCH_STATUS_EXPIRED: "expired",
}


def _chain_of(item: SignItem) -> str:
    """The chain an item is for, as a bounded metric label (never the oneof's `evm`)."""
    tx = item.tx
    if isinstance(tx, EvmTransaction | EvmPersonalMessage | EvmTypedData):
        return EVM_CHAINS.get(tx.chain_id, ("unknown", ""))[0]
    # Messages and PSBTs count on their chain: bitcoin_psbt, bitcoin_message -> bitcoin.
    return _FAMILY_OF_KIND.get(tx.kind if tx else "", "unknown")


_FAMILY_OF_KIND = {
    "bitcoin": "bitcoin",
    "bitcoin_psbt": "bitcoin",
    "bitcoin_message": "bitcoin",
    "tron": "tron",
    "tron_message": "tron",
}


def _count(outcome: str, chains: Sequence[str]) -> None:
    metrics.SIGN_REQUESTS.labels(outcome).inc()
    for chain in chains:
        metrics.SIGN_ITEMS.labels(chain, outcome).inc()


def _pending(request_id: str, approval_id: str) -> pb.SignBatchResponse:
    return pb.SignBatchResponse(
        request_id=request_id, status=pb.BATCH_STATUS_PENDING_APPROVAL, approval_id=approval_id
    )


def _check_wallet_grant(caller: Identity, index: int, item: SignItem) -> None:
    """An item naming a wallet's key: it names no key id too, and the caller holds the wallet."""
    assert item.hd is not None
    if item.key_id:
        raise InvalidRequest(f"items[{index}].hd: name a key_id or an hd key, not both")
    try:
        check_wallet_id(item.hd.wallet_id)
    except InvalidRequest as exc:
        raise InvalidRequest(f"items[{index}].hd.{exc}") from None
    if not caller.may_use_wallet(item.hd.wallet_id):
        raise PermissionDenied(
            f"items[{index}].hd.wallet_id: wallet {item.hd.wallet_id!r} not granted"
        )


def _check_network_class(index: int, kind: str, key: KeyRecord, chain: str, network: str) -> None:
    """Refuse an item for a network outside the key's class, before policy sees it.

    Judged on the network the adapter parsed and signs for (for EVM the chain id
    in the signed bytes), so no label can move an item across classes.
    """
    item_class = network_class(chain, network)
    if item_class != key.network_class:
        field = "evm.chain_id" if kind == "evm" else f"{kind}.network"
        raise InvalidRequest(
            f"items[{index}].{field}: {chain} {network} is a {item_class} network;"
            f" key {key.key_id!r} is a {key.network_class} key"
        )


def _replay(result: bytes) -> pb.SignBatchResponse:
    response = pb.SignBatchResponse.FromString(result)
    response.replayed = True
    return response
