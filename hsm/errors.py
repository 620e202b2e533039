"""Errors raised by the key store. They carry no PINs and no key material."""


class HsmError(Exception):
    """Base class of key store errors."""


class HsmConfigError(HsmError):
    """The HSM cannot be used as configured: library, token label or PIN (start-up)."""


class TokenNotFound(HsmConfigError):
    """No token with the label could be read; may be transient while another process writes it."""


class HsmUnavailable(HsmError):
    """The HSM failed during an operation; the request may be retried later."""


class KeyNotFound(HsmError):
    """No private key with this id exists in the token."""


class KeyExists(HsmError):
    """A key with this id already exists in the token."""
