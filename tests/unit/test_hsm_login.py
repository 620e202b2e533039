"""Log-in rides out a token that another process is rewriting, and never retries a PIN."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11
import pytest

from custos.hsm import pkcs11_token
from custos.hsm.errors import HsmConfigError, TokenNotFound
from custos.hsm.pkcs11_token import Pkcs11Token

LIBRARY = "/no/such/libpkcs11-for-tests.so"


class _FakeSession:
    def close(self) -> None:
        pass


class _FakeToken:
    def __init__(self, outcomes: list[Exception | None]) -> None:
        self.outcomes = outcomes
        self.logins = 0

    def open(self, user_pin: str | None = None, rw: bool = False) -> object:
        self.logins += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is not None:
            raise outcome
        return _FakeSession()


class _FakeLib:
    def __init__(self, token: _FakeToken) -> None:
        self.token = token
        self.reinitialized = 0

    def get_token(self, token_label: str) -> _FakeToken:
        return self.token

    def reinitialize(self) -> None:
        self.reinitialized += 1


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[Exception | None]], _FakeLib]:
    monkeypatch.setattr(pkcs11_token, "LOGIN_BACKOFF", (0.0, 0.0, 0.0))
    monkeypatch.setattr(pkcs11_token, "_open_sessions", {})

    def make(outcomes: list[Exception | None]) -> _FakeLib:
        lib = _FakeLib(_FakeToken(outcomes))
        monkeypatch.setattr(pkcs11_token.pkcs11, "lib", lambda _so: lib)
        return lib

    return make


def test_transient_states_are_retried_with_a_fresh_library(
    fake: Callable[[list[Exception | None]], _FakeLib],
) -> None:
    lib = fake([pkcs11.UserPinNotInitialized(), pkcs11.TokenNotRecognised(), None])
    token = Pkcs11Token(LIBRARY, "custos-dev", "1234")
    assert lib.token.logins == 3
    assert lib.reinitialized == 2  # SoftHSM scans its token files at C_Initialize
    assert pkcs11_token._open_sessions[LIBRARY] == 1
    token.close()
    token.close()
    assert pkcs11_token._open_sessions[LIBRARY] == 0


def test_a_token_that_stays_unreadable_fails_clearly(
    fake: Callable[[list[Exception | None]], _FakeLib],
) -> None:
    lib = fake([pkcs11.UserPinNotInitialized()] * 10)
    with pytest.raises(TokenNotFound) as info:
        Pkcs11Token(LIBRARY, "custos-dev", "1234")
    assert lib.token.logins == 4  # the first attempt and one per backoff step
    message = str(info.value)
    assert "cannot log in to token 'custos-dev': UserPinNotInitialized" in message
    assert "still after 4 attempts" in message
    assert "1234" not in message


@pytest.mark.parametrize("error", [pkcs11.PinIncorrect(), pkcs11.PinLocked()])
def test_a_wrong_or_locked_pin_is_never_retried(
    fake: Callable[[list[Exception | None]], _FakeLib], error: Exception
) -> None:
    lib = fake([error, None])
    with pytest.raises(HsmConfigError) as info:
        Pkcs11Token(LIBRARY, "custos-dev", "1234")
    assert not isinstance(info.value, TokenNotFound)
    assert lib.token.logins == 1  # a real HSM locks the PIN after a few wrong tries


def test_no_reinitialization_while_this_process_has_a_session(
    fake: Callable[[list[Exception | None]], _FakeLib],
) -> None:
    lib = fake([None, pkcs11.UserPinNotInitialized(), None])
    first = Pkcs11Token(LIBRARY, "custos-dev", "1234")
    second = Pkcs11Token(LIBRARY, "custos-dev", "1234")
    # C_Finalize would end the first session: the retry goes without it.
    assert lib.reinitialized == 0
    second.close()
    first.close()
