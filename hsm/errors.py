"""Errors raised by the key store. They carry no PINs and no key material."""


class HsmError(Exception):
    """Base class of key store errors."""


class HsmConfigError(HsmError):
    """The HSM cannot be used as configured: library, token label or PIN (start-up)."""


class TokenNotFound(HsmConfigError):
    """No token with the label could be read; may be transient while another process writes it."""


class HsmUnavailable(HsmError):
    """The HSM failed during an operation; the request may be retried later."""


# Not HsmErrors: the HSM answered, and what it said is about the key, not an outage.
class KeyNotFound(LookupError):
    """No private key with this id exists in the token."""


class KeyExists(Exception):
    """A key with this id already exists in the token."""
