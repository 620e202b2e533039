"""BIP39 mnemonics (English) and their seeds.

The word list, checksum and PBKDF2 come from Trezor's `mnemonic` package (the
reference implementation the BIP links to). What this module adds is errors
that say what is wrong without repeating the mnemonic: a position and a
reason, never a word, so that an error can be logged or returned.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache
from typing import Final

from mnemonic import Mnemonic

WORD_COUNTS: Final = (12, 15, 18, 21, 24)
ENTROPY_SIZES: Final = (16, 20, 24, 28, 32)
PBKDF2_ROUNDS: Final = 2048
MAX_PASSPHRASE_LENGTH: Final = 1024  # bounds the work; real passphrases are far shorter


class MnemonicError(ValueError):
    """The mnemonic or passphrase is unusable; the message never contains either."""


@lru_cache(maxsize=1)
def _english() -> Mnemonic:
    return Mnemonic("english")


def normalize_mnemonic(text: str) -> str:
    """NFKD, lower case, single spaces; MnemonicError naming the defect (not the words)."""
    if len(text) > 24 * 12:  # 24 words of at most 8 letters and separators, with room
        raise MnemonicError("mnemonic: too long for a BIP39 mnemonic")
    words = unicodedata.normalize("NFKD", text).lower().split()
    if len(words) not in WORD_COUNTS:
        raise MnemonicError(f"mnemonic: has {len(words)} words, BIP39 uses 12, 15, 18, 21 or 24")
    wordlist = _english().wordlist
    positions = {w: i for i, w in enumerate(wordlist)}
    for number, word in enumerate(words, start=1):
        if word not in positions:
            raise MnemonicError(f"mnemonic: word {number} is not in the BIP39 English word list")
    bits = "".join(format(positions[w], "011b") for w in words)
    split = len(bits) * 32 // 33
    entropy = int(bits[:split], 2).to_bytes(split // 8, "big")
    checksum = format(hashlib.sha256(entropy).digest()[0], "08b")[: len(bits) - split]
    if bits[split:] != checksum:
        raise MnemonicError("mnemonic: bad checksum (a word is wrong or the order is)")
    return " ".join(words)


def entropy_to_mnemonic(entropy: bytes | bytearray) -> str:
    """The mnemonic of 16 to 32 bytes of entropy (from the HSM's random generator)."""
    if len(entropy) not in ENTROPY_SIZES:
        raise MnemonicError(f"entropy has {len(entropy)} bytes, BIP39 uses 16 to 32 in steps of 4")
    return str(_english().to_mnemonic(bytes(entropy)))


def mnemonic_to_seed(mnemonic: str, passphrase: str = "") -> bytes:
    """The 64-byte BIP39 seed; the mnemonic is validated (word list and checksum) first."""
    words = normalize_mnemonic(mnemonic)
    if len(passphrase) > MAX_PASSPHRASE_LENGTH:
        raise MnemonicError(f"passphrase: longer than {MAX_PASSPHRASE_LENGTH} characters")
    salt = "mnemonic" + unicodedata.normalize("NFKD", passphrase)
    return hashlib.pbkdf2_hmac("sha512", words.encode(), salt.encode(), PBKDF2_ROUNDS)
