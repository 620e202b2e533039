"""SignBatch request bytes, random and mutated, through the gRPC edge and the pipeline.

The bytes go where grpc would hand them: to the SignBatch handler wrapped by
EdgeInterceptor, which decodes them itself (garbage -> InvalidRequest), then
to SignerService and SigningPipeline.sign_batch with a real SqliteStore, the
dev policy, and keys registered through KeyManager. Only the HSM is replaced:
keys are LocalKey objects in memory.

Every outcome is a response (signed, replayed, or held for approval) or a
status from a CustosError with a message; never INTERNAL. A refused request
leaves nothing behind: its batch record is what it was before (usually none),
and no sign.authorized (or any record but sign.refused) was appended.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import event, given
from hypothesis import strategies as st

from custos.common.secp256k1 import RecoverableSignature
from custos.hsm.keystore import SignRequest
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.proto.custos.v1 import signer_pb2_grpc
from custos.signer.chains.registry import ADAPTERS
from custos.signer.edge.auth import Authorizer
from custos.signer.edge.config import IdentityConfig
from custos.signer.edge.errors import CustosError
from custos.signer.edge.events import EventBus
from custos.signer.edge.interceptors import EdgeInterceptor
from custos.signer.edge.services import SignerService
from custos.signer.store.base import KeyState
from custos.signer.store.sqlite import SqliteStore
from custos.signer.tools.devsetup import DEV_POLICY, DevCa, subject_string
from custos.signer.usecases.keys import KeyManager
from custos.signer.usecases.pipeline import REQUEST_ID, SigningPipeline
from custos.signer.usecases.policy_governor import PolicyGovernor
from tests import builders
from tests.fuzz import bitcoin_strategies as fb
from tests.fuzz import evm_strategies as fe
from tests.fuzz import message_strategies as fm
from tests.fuzz import psbt_strategies as fp
from tests.fuzz import strategies as fz
from tests.fuzz import tron_strategies as ft
from tests.fuzz import wire_mutation
from tests.fuzz.conftest import PARSED, REQUEST_FUZZ
from tests.fuzz.test_fuzz_chains import MAX_MESSAGE_BYTES
from tests.support import LocalKey, soft_integrity

pytestmark = pytest.mark.fuzz

CALLER = "payments"
METHOD = "/custos.v1.Signer/SignBatch"
DISABLED = LocalKey(hashlib.sha256(b"custos fuzz disabled key").digest(), key_id="fuzz-off")
NOT_GRANTED = LocalKey(hashlib.sha256(b"custos fuzz other key 2").digest(), key_id="other-key")
KEYS = {k.info.key_id: k for k in (fz.KEY, fz.OTHER, DISABLED, NOT_GRANTED)}
# Below the server's default of 1000, so that the limit is cheap to reach.
MAX_BATCH_ITEMS = 64


class LocalKeys:
    """The HSM's part, in memory: generates (returns) and signs with LocalKey objects."""

    def generate_secp256k1(self, key_id: str) -> bytes:
        return KEYS[key_id].info.public_key

    def public_key(self, key_id: str) -> bytes:
        return KEYS[key_id].info.public_key

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        signatures = []
        for request in requests:
            key = KEYS[request.key_id]
            assert request.public_key == key.info.public_key
            signatures.append(key.sign(request.digest))
        return signatures


class Aborted(Exception):
    """What context.abort raises in grpc; carries the status and the exception behind it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.cause = sys.exc_info()[1]  # abort is called while the handler's error is handled


class FakeContext:
    """The parts of grpc.ServicerContext the edge uses: the peer certificate and abort."""

    def __init__(self, certificate: bytes) -> None:
        self._auth = {"x509_pem_cert": [certificate]}

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)

    def abort_with_status(self, status: Any) -> None:
        raise Aborted(status.code, status.details)


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[tuple[str, str], ...] = ()


class _Registry:
    """Stands in for grpc.Server to catch the generated code's handler registration."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, _service: str, _handlers: Any) -> None:
        pass


@dataclass
class Edge:
    store: SqliteStore
    handler: Callable[[bytes, Any], pb.SignBatchResponse]
    context: FakeContext
    subject: str


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    directory = tmp_path_factory.mktemp("fuzz-edge")
    store = SqliteStore(directory / "custos.db")
    integrity = soft_integrity()
    keys = KeyManager(store, LocalKeys(), integrity=integrity)
    for key_id in KEYS:
        keys.create(key_id, "testnet", "officer")
    keys.set_state(DISABLED.info.key_id, KeyState.DISABLED, "officer")
    policy = directory / "policy.yaml"
    names = ("officer", "officer2", "approver", "approver2")
    policy.write_text(DEV_POLICY.format(**{name: subject_string(name) for name in names}))
    pipeline = SigningPipeline(
        store,
        LocalKeys(),
        ADAPTERS,
        max_batch_items=MAX_BATCH_ITEMS,
        lease_ms=60_000,
        governor=PolicyGovernor(store, Path(policy), integrity=integrity),
        events=EventBus(),
        integrity=integrity,
    )
    subject = subject_string(CALLER)
    certificate, _key = DevCa(directory / "pki").issue(CALLER, server=False)
    registry = _Registry()
    signer_pb2_grpc.add_SignerServicer_to_server(SignerService(pipeline), registry)
    [service] = registry.handlers
    interceptor = EdgeInterceptor(
        Authorizer([IdentityConfig(subject=subject, roles=["service"], keys=["fuzz-*"])])
    )
    handler = interceptor.intercept_service(service.service, _CallDetails(METHOD))
    assert handler.request_deserializer is None, "the edge decodes requests itself"
    yield Edge(store, handler.unary_unary, FakeContext(certificate.read_bytes()), subject)
    store.close()


def check_request(edge: Edge, data: bytes) -> str:
    """The property, for one request's bytes; returns what happened, for the statistics."""
    try:
        request: pb.SignBatchRequest | None = pb.SignBatchRequest.FromString(data)
    except DecodeError:
        request = None
    PARSED["SignBatch"] += 1
    request_id = request.request_id if request is not None else ""
    before_batch = edge.store.get_batch(edge.subject, request_id) if request else None
    audit_before = edge.store.audit_size()
    try:
        response = edge.handler(data, edge.context)
    except Aborted as aborted:
        failure = aborted
    else:
        assert request is not None
        assert response.request_id == request_id
        stored = edge.store.get_batch(edge.subject, request_id)
        assert stored is not None
        kinds = [r.event.kind for r in edge.store.audit_records(audit_before, limit=10)]
        if response.status == pb.BATCH_STATUS_SIGNED:
            assert len(response.items) == len(request.items)
            assert stored.done
            assert stored.result is not None
            if response.replayed:
                assert "sign.authorized" not in kinds, kinds
                return "replayed"
            # The authorization was recorded (with the claim) before the signatures.
            assert kinds == ["sign.authorized", "sign.signed"], kinds
            return "signed"
        assert response.status == pb.BATCH_STATUS_PENDING_APPROVAL, response
        assert response.approval_id
        assert stored.approval_id == response.approval_id
        return "held for approval"

    assert failure.code is not grpc.StatusCode.INTERNAL, failure.cause
    assert isinstance(failure.cause, CustosError), repr(failure.cause)
    assert failure.code is not grpc.StatusCode.UNAVAILABLE, failure.message
    assert failure.message.strip()
    assert len(failure.message.encode()) <= MAX_MESSAGE_BYTES, failure.message[:200]
    new_records = edge.store.audit_records(audit_before, limit=10)
    if request is None:
        assert failure.code is grpc.StatusCode.INVALID_ARGUMENT
        assert failure.message == "request is not a valid protobuf message"
        assert not new_records
        return "not protobuf"
    # Nothing half-written: no claim on the request id, no authorization in the log.
    assert edge.store.get_batch(edge.subject, request_id) == before_batch
    assert all(r.event.kind == "sign.refused" for r in new_records), new_records
    return f"refused {failure.code.name}"


# ---- generators ----------------------------------------------------------------------

_KEY_MESSAGES = {key_id: fz.key_message(key) for key_id, key in KEYS.items()}
_A = _KEY_MESSAGES["fuzz-a"]


def _missing_key() -> pb.SignItem:
    item = builders.evm_item(_A)
    item.key_id = "fuzz-missing"
    return item


SEED_ITEMS: list[pb.SignItem] = [
    builders.bitcoin_item(_A),
    builders.evm_item(_A),
    builders.evm_item(_A, value=str(2 * 10**18)),  # sepolia, 2 ETH: held for approvers
    builders.evm_item(_A, chain_id=17000, value=str(10**17)),  # holesky: velocity limit
    builders.evm_item(_A, chain_id=97, tx_type=pb.EVM_TX_TYPE_LEGACY),
    builders.tron_item(_A),
    builders.tron_item(_A, trc20=True),
    builders.evm_item(_KEY_MESSAGES["fuzz-b"]),
    builders.tron_item(_KEY_MESSAGES["fuzz-off"]),  # disabled key
    builders.bitcoin_item(_KEY_MESSAGES["other-key"]),  # not granted
    _missing_key(),
    pb.SignItem(key_id=_A.key_id, bitcoin_psbt=fp.SEEDS["bitcoin_psbt"][0]),
]
_REQUEST_IDS = st.one_of(
    st.uuids().map(str),
    st.from_regex(REQUEST_ID, fullmatch=True),
    fz.fuzzed(st.uuids().map(str)),
)
_SEED_ITEM = st.sampled_from(SEED_ITEMS)
_KEY_IDS = fz.fuzzed(st.sampled_from(sorted(KEYS)))
_TX_FIELDS: dict[str, Any] = {
    "bitcoin": fb.bitcoin_tx(),
    "evm": fe.evm_tx(),
    "tron": ft.tron_tx(),
    **fm.STRUCTURED,
    **fp.STRUCTURED,
}
_KINDS = st.sampled_from(sorted(_TX_FIELDS))


@st.composite
def _item(draw: st.DrawFn) -> pb.SignItem:
    """A seed item, or one with a generated transaction; the key id now and then fuzzed."""
    if draw(st.booleans()):
        item = pb.SignItem()
        item.CopyFrom(draw(_SEED_ITEM))
    else:
        kind = draw(_KINDS)
        item = pb.SignItem(key_id="fuzz-a")
        getattr(item, kind).CopyFrom(draw(_TX_FIELDS[kind]))
    if draw(st.integers(0, 9)) == 0:
        item.key_id = draw(_KEY_IDS)
    if draw(st.integers(0, 19)) == 0:
        item.ClearField("tx")
    return item


@st.composite
def requests(draw: st.DrawFn) -> pb.SignBatchRequest:
    """A batch of zero to four items, or (rarely) around the item limit."""
    request = pb.SignBatchRequest(request_id=draw(_REQUEST_IDS))
    if draw(st.integers(0, 49)) == 0:
        count = draw(st.sampled_from((MAX_BATCH_ITEMS, MAX_BATCH_ITEMS + 1)))
        # The same tron item over and over: cheap to sign if it gets that far.
        request.items.extend([builders.tron_item(_A)] * count)
    else:
        request.items.extend(draw(st.lists(_item(), max_size=4)))
    return request


_SEED_REQUESTS = [
    pb.SignBatchRequest(request_id=f"seed-{i}", items=SEED_ITEMS[i : i + 2]).SerializeToString()
    for i in range(len(SEED_ITEMS))
]
_SERIALIZED = requests().map(lambda r: r.SerializeToString())
REQUEST_BYTES = st.one_of(
    st.binary(max_size=300),  # random bytes
    wire_mutation.mutations_of(_SEED_REQUESTS, requests()),  # mutated valid requests
    _SERIALIZED,  # well-framed requests with hostile fields
)


def test_garbage_and_a_valid_request(edge: Edge) -> None:
    """The harness itself: garbage is INVALID_ARGUMENT, a valid request signs, a retry replays."""
    assert check_request(edge, b"\xff\xff\xff") == "not protobuf"
    valid = pb.SignBatchRequest(request_id="fuzz-seed", items=SEED_ITEMS[:2]).SerializeToString()
    assert check_request(edge, valid) == "signed"
    assert check_request(edge, valid) == "replayed"


@REQUEST_FUZZ
@given(data=REQUEST_BYTES)
def test_request_bytes(edge: Edge, data: bytes) -> None:
    """Random, mutated and hostile SignBatch requests through the edge and the pipeline."""
    event(check_request(edge, data))
