"""SLIP-39 shares of the backup key (hsm.backup): M-of-N split and recovery, and the
refusals, whose messages name the share but never repeat its words."""

from __future__ import annotations

import itertools
import secrets

import pytest
from shamir_mnemonic import combine_mnemonics

from custos.hsm.backup import BackupError, recover_backup_key, split_backup_key


@pytest.fixture(scope="module")
def key_and_shares() -> tuple[bytes, list[str]]:
    key = secrets.token_bytes(32)
    return key, split_backup_key(key, 3, 5)


def test_any_three_of_five_recover_the_key(key_and_shares: tuple[bytes, list[str]]) -> None:
    key, shares = key_and_shares
    assert len(shares) == 5
    assert len(set(shares)) == 5
    for subset in itertools.combinations(shares, 3):
        assert recover_backup_key(list(subset)) == key
    # All five (more than M) recover too, and the reference implementation agrees.
    assert recover_backup_key(shares) == key
    assert combine_mnemonics(shares[1:4]) == key


def test_fewer_than_m_refused(key_and_shares: tuple[bytes, list[str]]) -> None:
    _, shares = key_and_shares
    with pytest.raises(BackupError, match="2 shares given, this backup key needs 3"):
        recover_backup_key(shares[:2])
    with pytest.raises(BackupError, match="no shares"):
        recover_backup_key([])


def test_share_of_another_backup_refused(key_and_shares: tuple[bytes, list[str]]) -> None:
    _, shares = key_and_shares
    other = split_backup_key(secrets.token_bytes(32), 3, 5)
    with pytest.raises(BackupError, match="share 3 belongs to another backup key") as info:
        recover_backup_key([shares[0], shares[1], other[2]])
    assert other[2].split()[0] not in str(info.value).split()


def test_damaged_share_refused_without_its_words(key_and_shares: tuple[bytes, list[str]]) -> None:
    _, shares = key_and_shares
    words = shares[1].split()
    words[10] = "academic" if words[10] != "academic" else "acid"
    with pytest.raises(BackupError, match="share 2: not a valid SLIP-39 share") as info:
        recover_backup_key([shares[0], " ".join(words), shares[2]])
    for word in words:
        assert word not in str(info.value).split()
    with pytest.raises(BackupError, match="share 1: not a valid"):
        recover_backup_key(["not a share at all", shares[1], shares[2]])


def test_duplicate_share_refused(key_and_shares: tuple[bytes, list[str]]) -> None:
    _, shares = key_and_shares
    with pytest.raises(BackupError, match="twice"):
        recover_backup_key([shares[0], shares[0], shares[1]])


def test_case_and_spacing_forgiven(key_and_shares: tuple[bytes, list[str]]) -> None:
    key, shares = key_and_shares
    typed = ["  " + s.upper().replace(" ", "  ") + "\n" for s in shares[:3]]
    assert recover_backup_key(typed) == key


@pytest.mark.parametrize(("m", "n"), [(0, 3), (4, 3), (1, 3), (2, 17)])
def test_bad_thresholds_refused(m: int, n: int) -> None:
    with pytest.raises(BackupError, match="threshold"):
        split_backup_key(bytes(32), m, n)


def test_one_of_one_and_wrong_key_size() -> None:
    key = secrets.token_bytes(32)
    assert recover_backup_key(split_backup_key(key, 1, 1)) == key
    with pytest.raises(BackupError, match="32 bytes"):
        split_backup_key(bytes(16), 2, 3)
