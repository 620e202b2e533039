"""Key import, the officer's side: read a secret key and encrypt it to the HSM's import key.

Runs in the CLI on the officer's machine; the secret never leaves it in the
clear. What it reads: a secp256k1 private key as hex or WIF, an Ethereum
keystore (version 3: scrypt or PBKDF2, AES-128-CTR, Keccak MAC), or a BIP39
mnemonic (with optional passphrase) and a standard derivation path (hsm.hd_paths).

The secret is encoded as PKCS#8 (what SoftHSM's C_UnwrapKey expects for an EC
private key) and encrypted with RSA-OAEP to the import key's public key.
SoftHSM 2.6.1 unwraps OAEP only with SHA-1 and MGF1-SHA-1 (measured: SHA-256
gives CKR_ARGUMENTS_BAD) and lacks CKM_RSA_AES_KEY_WRAP, so the padding is
OAEP-SHA-1: OAEP's security does not rest on collision resistance, and the
3072-bit key leaves room (342 bytes) for the 135-byte PKCS#8 key.

Error messages name what is wrong (a field, a word position), never a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Final

import base58
from coincurve import PrivateKey
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from eth_hash.auto import keccak

from custos.common.secp256k1 import N
from custos.hsm.bip32 import DerivationError, format_path, master_key, parse_path
from custos.hsm.bip39 import MnemonicError, mnemonic_to_seed
from custos.hsm.hd_paths import BITCOIN_NETWORKS, COIN_TYPES, allowed_path

# The path eth-account's Account.from_mnemonic uses: the first Ethereum account.
DEFAULT_PATH: Final = "m/44'/60'/0'/0/0"
# Bounds the work a keystore file can ask for (scrypt n=2^18 is MyEtherWallet's and geth's).
MAX_SCRYPT_N: Final = 2**20
MAX_PBKDF2_ROUNDS: Final = 10_000_000
MAX_KEYSTORE_BYTES: Final = 64 * 1024
OAEP: Final = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)  # noqa: S303 - see the module docstring
SOURCES: Final = ("hex", "wif", "keystore", "mnemonic")


class ImportMaterialError(ValueError):
    """The secret given cannot be imported; the message names why, never the secret."""


@dataclass(frozen=True, slots=True)
class SecretKey:
    """A secp256k1 private key read for import, and where it came from (audited, not secret)."""

    value: bytes = field(repr=False)
    source: str  # hex | wif | keystore | mnemonic
    path: str = ""  # the derivation path, for a mnemonic

    @property
    def public_key(self) -> bytes:
        """65-byte uncompressed SEC1."""
        return PrivateKey(self.value).public_key.format(compressed=False)


def _scalar(value: bytes, what: str) -> bytes:
    if len(value) != 32 or not 0 < int.from_bytes(value, "big") < N:
        raise ImportMaterialError(f"{what}: not a secp256k1 private key (32 bytes, 1..n-1)")
    return value


def from_hex(text: str) -> SecretKey:
    """64 hex digits, with or without 0x."""
    digits = text.strip().removeprefix("0x").removeprefix("0X")
    if len(digits) != 64:
        raise ImportMaterialError(f"hex key: {len(digits)} hex digits, a key has 64")
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        raise ImportMaterialError("hex key: not hexadecimal") from None
    return SecretKey(_scalar(value, "hex key"), "hex")


def from_wif(text: str) -> SecretKey:
    """Bitcoin wallet import format: version 0x80 (mainnet) or 0xef (test networks)."""
    try:
        payload = base58.b58decode_check(text.strip())
    except ValueError:
        raise ImportMaterialError("WIF key: bad base58 or checksum") from None
    if payload[:1] not in (b"\x80", b"\xef"):
        raise ImportMaterialError("WIF key: unknown version byte (0x80 or 0xef expected)")
    body = payload[1:]
    if len(body) == 33 and body[32] == 1:
        body = body[:32]  # the compressed-public-key flag: the key is the same
    elif len(body) != 32:
        raise ImportMaterialError("WIF key: wrong length")
    return SecretKey(_scalar(body, "WIF key"), "wif")


def _int_param(params: dict[str, Any], name: str) -> int:
    value = params.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ImportMaterialError(f"keystore: crypto.kdfparams.{name} is not a positive integer")
    return value


def _hex_field(node: dict[str, Any], name: str, where: str) -> bytes:
    try:
        return bytes.fromhex(str(node[name]))
    except (KeyError, ValueError):
        raise ImportMaterialError(f"keystore: {where}{name} is missing or not hex") from None


def from_keystore(data: bytes, password: str) -> SecretKey:
    """An Ethereum keystore v3 file; a wrong password is refused by its MAC."""
    if len(data) > MAX_KEYSTORE_BYTES:
        raise ImportMaterialError(f"keystore: larger than {MAX_KEYSTORE_BYTES} bytes")
    try:
        document = json.loads(data)
    except ValueError:
        raise ImportMaterialError("keystore: not JSON") from None
    if not isinstance(document, dict):
        raise ImportMaterialError("keystore: not a JSON object")
    crypto = document.get("crypto", document.get("Crypto"))
    if document.get("version") != 3 or not isinstance(crypto, dict):
        raise ImportMaterialError("keystore: not a version 3 keystore")
    kdf, params = crypto.get("kdf"), crypto.get("kdfparams")
    if not isinstance(params, dict):
        raise ImportMaterialError("keystore: crypto.kdfparams is missing")
    salt = _hex_field(params, "salt", "crypto.kdfparams.")
    dklen = _int_param(params, "dklen")
    if dklen < 32:
        raise ImportMaterialError("keystore: crypto.kdfparams.dklen is below 32")
    secret = password.encode()
    if kdf == "scrypt":
        n, r, p = (_int_param(params, name) for name in ("n", "r", "p"))
        if n > MAX_SCRYPT_N or n & (n - 1) or r * p > 64:
            raise ImportMaterialError("keystore: scrypt parameters out of bounds")
        derived = hashlib.scrypt(
            secret, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + 2**24
        )
    elif kdf == "pbkdf2":
        rounds = _int_param(params, "c")
        if params.get("prf") != "hmac-sha256" or rounds > MAX_PBKDF2_ROUNDS:
            raise ImportMaterialError("keystore: pbkdf2 needs prf hmac-sha256 and bounded c")
        derived = hashlib.pbkdf2_hmac("sha256", secret, salt, rounds, dklen)
    else:
        raise ImportMaterialError("keystore: crypto.kdf must be scrypt or pbkdf2")
    if crypto.get("cipher") != "aes-128-ctr":
        raise ImportMaterialError("keystore: crypto.cipher must be aes-128-ctr")
    ciphertext = _hex_field(crypto, "ciphertext", "crypto.")
    iv = _hex_field(crypto.get("cipherparams") or {}, "iv", "crypto.cipherparams.")
    mac = _hex_field(crypto, "mac", "crypto.")
    if not hmac.compare_digest(keccak(derived[16:32] + ciphertext), mac):
        raise ImportMaterialError("keystore: wrong password (or a damaged file): the MAC differs")
    decryptor = Cipher(algorithms.AES(derived[:16]), modes.CTR(iv)).decryptor()
    value = decryptor.update(ciphertext) + decryptor.finalize()
    return SecretKey(_scalar(value, "keystore"), "keystore")


def _standard_address_path(path: str) -> str:
    """The canonical text of `path` if it is a standard address path (hsm.hd_paths)."""
    try:
        canonical = format_path(parse_path(path))
    except DerivationError as exc:
        raise ImportMaterialError(f"path: {exc}") from None
    candidates = [(chain, "mainnet") for chain in COIN_TYPES]
    candidates += [("bitcoin", network) for network in BITCOIN_NETWORKS]
    for chain, network in candidates:
        try:
            if allowed_path(chain, network, canonical).change is not None:
                return canonical
        except DerivationError:
            continue
    raise ImportMaterialError(
        f"path: {canonical} is not a standard address path (BIP44/49/84 for Bitcoin,"
        " m/44'/60'/a'/0/i for Ethereum and BSC, m/44'/195'/a'/0/i for Tron)"
    )


def from_mnemonic(words: str, passphrase: str = "", path: str = DEFAULT_PATH) -> SecretKey:
    """The key at `path` below a BIP39 mnemonic's seed (BIP32)."""
    canonical = _standard_address_path(path)
    try:
        seed = mnemonic_to_seed(words, passphrase)
    except MnemonicError as exc:
        raise ImportMaterialError(str(exc)) from None
    try:
        child = master_key(seed).derive(canonical)
    except DerivationError as exc:
        raise ImportMaterialError(f"path: {exc}") from None
    return SecretKey(child.key, "mnemonic", canonical)


@dataclass(frozen=True, slots=True)
class WalletSeed:
    """A whole wallet to import: its BIP39 seed and the master public key that names it."""

    seed: bytes = field(repr=False)
    master_public_key: bytes  # compressed, 33 bytes: public, what approvers compare


def wallet_from_mnemonic(words: str, passphrase: str = "") -> WalletSeed:
    """The BIP39 seed of a mnemonic (checksum checked) and its BIP32 master public key."""
    try:
        seed = mnemonic_to_seed(words, passphrase)
    except MnemonicError as exc:
        raise ImportMaterialError(str(exc)) from None
    return WalletSeed(seed, master_key(seed).public().key)


# ---- the import key and the wrapped secret -------------------------------------------


def import_key_fingerprint(public_key_der: bytes) -> str:
    """SHA-256 of the import key's SubjectPublicKeyInfo (DER), hex in groups of four."""
    digest = hashlib.sha256(public_key_der).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, len(digest), 4))


def load_import_key(public_key_der: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(public_key_der)
    except ValueError:
        raise ImportMaterialError("import key: not a DER public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 3072:
        raise ImportMaterialError("import key: not an RSA key of at least 3072 bits")
    return key


def wrap_for_import(secret: SecretKey, public_key_der: bytes) -> bytes:
    """The PKCS#8 private key, RSA-OAEP encrypted to the import key: only the HSM opens it."""
    key = ec.derive_private_key(int.from_bytes(secret.value, "big"), ec.SECP256K1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return load_import_key(public_key_der).encrypt(pkcs8, OAEP)


def wrap_seed_for_import(wallet: WalletSeed, public_key_der: bytes) -> bytes:
    """The seed, RSA-OAEP encrypted to the import key: only the HSM opens it."""
    return load_import_key(public_key_der).encrypt(wallet.seed, OAEP)
