"""The service's errors and the one table of how each is told and counted.

A message is shown to the caller as is, so it names the problem (field path,
key id, request id) and never carries secrets or internal detail. Failures of
infrastructure (the HSM, the store) are told with a fixed message instead: their
own text stays in the server's log.

ERROR_KINDS is the closed set: every error a caller can meet has one row giving
its gRPC status (the edge turns the name into a grpc.StatusCode: this module does
not import grpc), its JSON-RPC code and its metric label. Anything else is
INTERNAL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from custos.hsm.errors import HsmError, KeyExists, KeyNotFound
from custos.signer.store.base import StoreUnavailable


class CustosError(Exception):
    """Base class: a request failed for a reason the caller may be told.

    `details` are machine-readable facts for the caller (rule, limit, what
    remains), sent as gRPC status details (google.rpc.ErrorInfo metadata).
    """

    def __init__(self, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class InvalidRequest(CustosError):
    """The request is malformed or out of range (INVALID_ARGUMENT)."""


class Unauthenticated(CustosError):
    """The peer's certificate names no configured identity (UNAUTHENTICATED)."""


class PermissionDenied(CustosError):
    """The identity lacks the role or the key grant (PERMISSION_DENIED)."""


class PolicyDenied(PermissionDenied):
    """The active policy refuses the batch: a rule denies it or no rule allows it."""


class BudgetExceeded(CustosError):
    """A velocity limit has too little budget left for the batch (RESOURCE_EXHAUSTED)."""


class NotFound(CustosError):
    """A named key or request does not exist (NOT_FOUND)."""


class AlreadyExists(CustosError):
    """A key id is taken, or a request id was used with another payload (ALREADY_EXISTS)."""


class FailedPrecondition(CustosError):
    """The request is valid but the system state refuses it, e.g. a disabled key."""


class InProgress(CustosError):
    """Another attempt with the same request id is being processed (ABORTED: retry later)."""


class Unavailable(CustosError):
    """The HSM or the store is down; nothing was signed (UNAVAILABLE: retry later)."""


class TamperedState(CustosError):
    """A stored row failed its HSM authenticator: the database was altered (DATA_LOSS).

    Nothing was signed. The message names the table and row (facts an operator
    needs, no secrets); signer.usecases.authenticity raises it and raises the alarm.
    """

    def __init__(self, table: str, key: tuple[object, ...], why: str) -> None:
        row = ", ".join(repr(v) for v in key)
        super().__init__(
            f"stored state failed its integrity check: {table} row {row} {why}; nothing was signed",
            {"code": "STATE_TAMPERED", "table": table},
        )
        self.table = table
        self.key = key


class ConfigError(Exception):
    """The configuration is invalid; raised at start-up with every problem listed."""


@dataclass(frozen=True)
class ErrorKind:
    """How one kind of error reaches a caller and the metrics."""

    status: str  # the gRPC status code's name
    jsonrpc_code: int  # the JSON-RPC signer's error code (signer.edge.jsonrpc)
    outcome: str  # the `outcome` label of custos_sign_requests_total and _items_total
    public_message: str | None = None  # said instead of the exception's own text


_HSM_DOWN = "the HSM is unavailable; nothing was signed, retry later"
_STORE_DOWN = "the store is unavailable; retry later"

# JSON-RPC: -32602 is the specification's "invalid params"; -32001 to -32013 are
# server-defined codes, one per outcome a caller acts on differently.
ERROR_KINDS: Mapping[type[BaseException], ErrorKind] = {
    InvalidRequest: ErrorKind("INVALID_ARGUMENT", -32602, "invalid"),
    Unauthenticated: ErrorKind("UNAUTHENTICATED", -32001, "unauthenticated"),
    PermissionDenied: ErrorKind("PERMISSION_DENIED", -32002, "forbidden"),
    PolicyDenied: ErrorKind("PERMISSION_DENIED", -32003, "denied"),
    BudgetExceeded: ErrorKind("RESOURCE_EXHAUSTED", -32005, "over_limit"),
    Unavailable: ErrorKind("UNAVAILABLE", -32006, "unavailable"),
    InProgress: ErrorKind("ABORTED", -32007, "in_progress"),
    AlreadyExists: ErrorKind("ALREADY_EXISTS", -32008, "conflict"),
    NotFound: ErrorKind("NOT_FOUND", -32009, "not_found"),
    FailedPrecondition: ErrorKind("FAILED_PRECONDITION", -32010, "refused"),
    # Stored state failed its HSM authenticator: unrecoverable corruption of data.
    TamperedState: ErrorKind("DATA_LOSS", -32013, "tampered"),
    # The key store's domain errors: their messages name the key, nothing secret.
    # A registered key whose private key is missing from the token is the
    # operator's problem to fix, not an outage to retry.
    KeyNotFound: ErrorKind("FAILED_PRECONDITION", -32010, "refused"),
    KeyExists: ErrorKind("ALREADY_EXISTS", -32008, "conflict"),
    # Infrastructure: retry later; the details are in the server's log only.
    HsmError: ErrorKind("UNAVAILABLE", -32006, "unavailable", _HSM_DOWN),
    StoreUnavailable: ErrorKind("UNAVAILABLE", -32006, "unavailable", _STORE_DOWN),
}
INTERNAL = ErrorKind("INTERNAL", -32603, "failed", "internal error")


def kind_of(exc: BaseException) -> ErrorKind:
    """The row for an error: its most specific class in the table decides."""
    for cls in type(exc).__mro__:
        kind = ERROR_KINDS.get(cls)
        if kind is not None:
            return kind
    return INTERNAL


def public_message(exc: BaseException) -> str:
    """What a caller is told about an error."""
    kind = kind_of(exc)
    return kind.public_message if kind.public_message is not None else str(exc)
