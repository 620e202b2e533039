"""Helpers shared by tests: in-memory signers for pure unit tests (chain adapters, the
pipeline and the approval desk), and TOTP enrollment the way identities do it (an
officer's token, redeemed by the identity)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
import pytest
from coincurve import PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from custos.common.secp256k1 import RecoverableSignature, normalize
from custos.hsm.keystore import SignRequest
from custos.hsm.pool import SigningPool
from custos.proto.custos.v1 import policy_pb2, policy_pb2_grpc, signer_pb2_grpc
from custos.proto.custos.v1 import signer_pb2 as pb
from custos.signer.chains.base import KeyInfo
from custos.signer.tools.devsetup import subject_string
from custos.signer.usecases.authenticity import StateAuthenticator


class LocalKey:
    """A private key held in memory (pure unit tests only; the service uses the HSM)."""

    def __init__(self, secret: bytes, key_id: str = "test-key") -> None:
        self._private = PrivateKey(secret)
        self.info = KeyInfo(key_id, self._private.public_key.format(compressed=False))

    def sign(self, digest: bytes) -> RecoverableSignature:
        # RFC 6979 deterministic nonce, so published vectors reproduce byte for byte.
        raw = self._private.sign_recoverable(digest, hasher=None)[:64]
        return normalize(raw, digest, self.info.public_key)


class SoftwareHsm:
    """The HSM's parts, in process memory, for fast tests of the pipeline and approval desk.

    Keys are LocalKey objects derived from their ids; `signed` lists every digest
    signed, so a test sees a second signature. Sealing (the TOTP secrets) is
    AES-GCM under a fixed test key. The service itself only ever uses the HSM.
    """

    def __init__(self) -> None:
        self.keys: dict[str, LocalKey] = {}
        self.signed: list[bytes] = []
        self._aead = AESGCM(hashlib.sha256(b"custos test sealing key").digest())

    def generate_secp256k1(self, key_id: str) -> bytes:
        secret = hashlib.sha256(b"custos software hsm " + key_id.encode()).digest()
        self.keys[key_id] = LocalKey(secret, key_id)
        return self.keys[key_id].info.public_key

    def public_key(self, key_id: str) -> bytes:
        return self.keys[key_id].info.public_key

    def sign(self, requests: Sequence[SignRequest]) -> list[RecoverableSignature]:
        signatures = []
        for request in requests:
            key = self.keys[request.key_id]
            assert request.public_key == key.info.public_key
            signatures.append(key.sign(request.digest))
            self.signed.append(request.digest)
        return signatures

    def ensure_aes_key(self, key_id: str) -> None:
        pass

    def ensure_seal_key(self, key_id: str) -> None:
        pass

    def seal(self, key_id: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, key_id.encode() + aad)

    def unseal(self, key_id: str, sealed: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], key_id.encode() + aad)


def soft_integrity() -> StateAuthenticator:
    """State authentication with a key in process memory, for tests that run no HSM.

    Tests that run SoftHSM use hsm_integrity(pool): the real key of the dev token.
    """
    key = b"test state key, not an HSM key!!"
    return StateAuthenticator(
        lambda messages: [hmac.new(key, m, hashlib.sha256).digest() for m in messages]
    )


def hsm_integrity(pool: SigningPool, key_id: str = "_state") -> StateAuthenticator:
    """The authenticator a server builds: the token's state key (made by `custos init`)."""
    return StateAuthenticator(functools.partial(pool.hmac_many, key_id))


def enroll_totp(channel: Callable[[str], grpc.Channel], name: str) -> str:
    """`name` enrolls its own TOTP with a token an officer (not itself) issued; the URI."""
    issuer = "officer2" if name == "officer" else "officer"
    token = (
        policy_pb2_grpc.PoliciesStub(channel(issuer))
        .IssueTotpToken(policy_pb2.IssueTotpTokenRequest(subject=subject_string(name)))
        .enrollment_token
    )
    reply = policy_pb2_grpc.PoliciesStub(channel(name)).EnrollTotp(
        policy_pb2.EnrollTotpRequest(enrollment_token=token)
    )
    return str(reply.otpauth_uri)


class _Serves(Protocol):
    def signer(self, identity: str = "payments") -> signer_pb2_grpc.SignerStub: ...


def sign_batch(server: _Serves, *items: pb.SignItem, request_id: str = "") -> pb.SignBatchResponse:
    """SignBatch of `items` as the payments service, under a fresh request id by default."""
    request = pb.SignBatchRequest(request_id=request_id or f"t-{uuid.uuid4().hex}", items=items)
    return server.signer().SignBatch(request)


def error_info(error: grpc.RpcError) -> dict[str, str]:
    """The google.rpc.ErrorInfo metadata a refusal carries ({} when it carries none)."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None or not status.details:
        return {}
    detail = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(detail)
    return dict(detail.metadata)


def refused(
    server: _Serves, *items: pb.SignItem, request_id: str = ""
) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """A SignBatch that must fail: its status code, message and ErrorInfo metadata."""
    with pytest.raises(grpc.RpcError) as info:
        sign_batch(server, *items, request_id=request_id)
    return info.value.code(), str(info.value.details()), error_info(info.value)
