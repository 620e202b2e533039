"""Output descriptors of single-key Bitcoin wallets, for watch-only wallets (BIP380-382, 389).

Only what a cold or another custodian's single-key wallet exports is read:
`wpkh(KEY)`, `sh(wpkh(KEY))` and `pkh(KEY)`, KEY an extended public key with
an optional `[fingerprint/path]` origin and the ranged suffix `/0/*`, `/1/*`
or `/<0;1>/*` (receive, change, both), and an optional `#checksum`, which is
checked when present. Anything else (hardened steps, multisig, taproot,
private keys) is refused with a message saying what is not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_INPUT_CHARSET: Final = (
    "0123456789()[],'/*abcdefgh@:$%{}"
    "IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
    'ijklmnopqrstuvwxyzABCDEFGH`#"\\ '
)
_CHECKSUM_CHARSET: Final = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATORS: Final = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)
_SCRIPTS: Final = (
    ("wpkh(", ")", "p2wpkh"),
    ("sh(wpkh(", "))", "p2sh-p2wpkh"),
    ("pkh(", ")", "p2pkh"),
)
_ORIGIN: Final = re.compile(r"\[[0-9a-fA-F]{8}(/[0-9]{1,10}['hH]?){0,10}\]")
_BRANCHES: Final = {"/0/*": (0,), "/1/*": (1,), "/<0;1>/*": (0, 1)}


class DescriptorError(ValueError):
    """A descriptor that is not a supported single-key wallet; the message says why."""


@dataclass(frozen=True, slots=True)
class Descriptor:
    key: str  # the extended public key's text
    script: str  # p2wpkh | p2sh-p2wpkh | p2pkh
    branches: tuple[int, ...]


def _polymod(symbols: list[int]) -> int:
    chk = 1
    for value in symbols:
        top = chk >> 35
        chk = (chk & 0x7FFFFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATORS):
            if (top >> i) & 1:
                chk ^= generator
    return chk


def checksum(body: str) -> str:
    """BIP380's eight-character checksum of a descriptor without its `#...`."""
    symbols, groups = [], []
    for char in body:
        position = _INPUT_CHARSET.find(char)
        if position < 0:
            raise DescriptorError(f"descriptor: character {char!r} is not allowed")
        symbols.append(position & 31)
        groups.append(position >> 5)
        if len(groups) == 3:
            symbols.append(groups[0] * 9 + groups[1] * 3 + groups[2])
            groups = []
    if len(groups) == 1:
        symbols.append(groups[0])
    elif len(groups) == 2:
        symbols.append(groups[0] * 3 + groups[1])
    value = _polymod([*symbols, 0, 0, 0, 0, 0, 0, 0, 0]) ^ 1
    return "".join(_CHECKSUM_CHARSET[(value >> (5 * (7 - i))) & 31] for i in range(8))


def parse_descriptor(text: str) -> Descriptor:
    """The key, script and branches of a single-key ranged descriptor."""
    body, _, given = text.strip().partition("#")
    if given and checksum(body) != given:
        raise DescriptorError("descriptor: bad checksum")
    wrapped = [
        (body[len(head) : len(body) - len(tail)], script)
        for head, tail, script in _SCRIPTS
        if body.startswith(head) and body.endswith(tail)
    ]
    if not wrapped:
        raise DescriptorError("descriptor: only wpkh(), sh(wpkh()) and pkh() are supported")
    inner, script = wrapped[0]
    origin = _ORIGIN.match(inner)
    if origin:
        inner = inner[origin.end() :]
    ranged = [(inner[: -len(s)], b) for s, b in _BRANCHES.items() if inner.endswith(s)]
    if not ranged:
        raise DescriptorError("descriptor: the key must end in /0/*, /1/* or /<0;1>/*")
    key, branches = ranged[0]
    if "/" in key or "[" in key:
        raise DescriptorError("descriptor: the key has steps or an origin that are not supported")
    return Descriptor(key, script, branches)
