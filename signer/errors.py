"""The service's domain errors. Each maps to one gRPC status in signer.interceptors.

A message is shown to the caller as is, so it names the problem (field path,
key id, request id) and never carries secrets or internal detail.
"""


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
    needs, no secrets); signer.authenticity raises it and raises the alarm.
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
