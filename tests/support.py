"""Helpers shared by tests: an in-memory signer for pure unit tests of chain adapters, and
TOTP enrollment the way identities do it (an officer's token, redeemed by the identity)."""

from __future__ import annotations

import functools
import hashlib
import hmac
import uuid
from collections.abc import Callable
from typing import Protocol

import grpc
import pytest
from coincurve import PrivateKey
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hsm.pool import SigningPool
from hsm.secp256k1 import RecoverableSignature, normalize
from proto.custos.v1 import policy_pb2, policy_pb2_grpc, signer_pb2_grpc
from proto.custos.v1 import signer_pb2 as pb
from signer.authenticity import StateAuthenticator
from signer.chains.base import KeyInfo
from signer.devsetup import subject_string


class LocalKey:
    """A private key held in memory (pure unit tests only; the service uses the HSM)."""

    def __init__(self, secret: bytes, key_id: str = "test-key") -> None:
        self._private = PrivateKey(secret)
        self.info = KeyInfo(key_id, self._private.public_key.format(compressed=False))

    def sign(self, digest: bytes) -> RecoverableSignature:
        # RFC 6979 deterministic nonce, so published vectors reproduce byte for byte.
        raw = self._private.sign_recoverable(digest, hasher=None)[:64]
        return normalize(raw, digest, self.info.public_key)


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
