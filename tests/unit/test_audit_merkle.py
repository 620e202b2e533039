"""RFC 6962 / RFC 9162 Merkle tree: published vectors, round trips, and rejection of every mutation.

Vectors: tests/vectors/merkle_rfc6962.json, from transparency-dev/merkle
(testonly/constants.go @ 582a6ad1, proof/verify_test.go @ 02194e9a): the eight
leaves "", "00", "10", ... first published in google/certificate-transparency.

The reference functions below restate RFC 6962 §2.1 recursively, independent of
audit.merkle's iterative code, so round trips compare two formulations.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custos.audit import merkle
from custos.audit.merkle import (
    EMPTY_ROOT,
    TreeBuilder,
    consistency_proof,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

VECTORS = json.loads((Path(__file__).parent.parent / "vectors" / "merkle_rfc6962.json").read_text())
MAX_SIZE = 40


def _leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH, recursively, over leaf hashes."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


@cache
def _inclusion_shape(index: int, size: int) -> tuple[str, ...] | None:
    """Sibling sides along RFC 6962 PATH(index, D[size]), leaf to root; None if invalid."""
    if not 0 <= index < size:
        return None
    if size == 1:
        return ()
    k = 1
    while k * 2 < size:
        k *= 2
    if index < k:
        sub = _inclusion_shape(index, k)
        assert sub is not None
        return (*sub, "R")
    sub = _inclusion_shape(index - k, size - k)
    assert sub is not None
    return (*sub, "L")


@cache
def _consistency_shape(size1: int, size2: int) -> tuple[str, ...] | None:
    """How RFC 6962 PROOF(size1, D[size2]) uses each node (None if no such proof)."""
    if not 0 < size1 < size2:
        return None  # the edges (empty tree, same tree) have no proof at all

    def sub(m: int, n: int, whole: bool) -> tuple[str, ...]:
        if m == n:
            return ("root1 seeds",) if whole else ("proof seeds",)
        k = 1
        while k * 2 < n:
            k *= 2
        if m <= k:
            return (*sub(m, k, whole), "right sibling")
        return (*sub(m - k, n - k, False), "left sibling")

    return sub(size1, size2, True)


LEAVES = [_leaf(b"custos leaf %d" % i) for i in range(MAX_SIZE + 1)]
ROOTS = [_mth(LEAVES[:n]) for n in range(MAX_SIZE + 1)]


def _flip(value: bytes, pos: int) -> bytes:
    out = bytearray(value)
    out[pos] ^= 1 << (pos % 8)
    return bytes(out)


# -- published vectors ---------------------------------------------------------


def test_vector_source_is_named() -> None:
    source = VECTORS["source"]
    assert source["repo"] == "https://github.com/transparency-dev/merkle"
    for part in source["files"].values():
        assert part["file"].endswith(".go")
        assert len(part["commit"]) == 40


def test_roots_and_node_hashes_match_the_published_vectors() -> None:
    leaves = [_leaf(bytes.fromhex(x)) for x in VECTORS["leaves"]]
    assert [h.hex() for h in leaves] == VECTORS["node_hashes"][0]
    for size, want in enumerate(VECTORS["roots"]):
        assert merkle.root(leaves[:size]).hex() == want
        builder = TreeBuilder()
        builder.extend(leaves[:size])
        assert builder.root().hex() == want
        assert _mth(leaves[:size]).hex() == want
    for level, hashes in enumerate(VECTORS["node_hashes"]):
        for i, want in enumerate(hashes):
            assert merkle.root(leaves[i << level : (i + 1) << level]).hex() == want
    assert EMPTY_ROOT.hex() == VECTORS["roots"][0]


def test_inclusion_proofs_match_the_published_vectors() -> None:
    leaves = [_leaf(bytes.fromhex(x)) for x in VECTORS["leaves"]]
    for case in VECTORS["inclusion"]:
        index, size = case["index"], case["size"]
        proof = inclusion_proof(leaves, index, size)
        assert [p.hex() for p in proof] == case["proof"]
        root = bytes.fromhex(VECTORS["roots"][size])
        assert verify_inclusion(leaves[index], index, size, proof, root)


def test_consistency_proofs_match_the_published_vectors() -> None:
    leaves = [_leaf(bytes.fromhex(x)) for x in VECTORS["leaves"]]
    for case in VECTORS["consistency"]:
        size1, size2 = case["size1"], case["size2"]
        proof = consistency_proof(leaves, size1, size2)
        assert [p.hex() for p in proof] == case["proof"]
        root1, root2 = (bytes.fromhex(VECTORS["roots"][s]) for s in (size1, size2))
        assert verify_consistency(size1, size2, root1, root2, proof)


# -- tree building -------------------------------------------------------------


def test_tree_builder_root_at_every_size_matches_the_recursive_definition() -> None:
    leaves = [_leaf(b"%d" % i) for i in range(1100)]  # crosses the 256-leaf chunks
    builder = TreeBuilder()
    assert builder.root() == EMPTY_ROOT
    checked = {*range(70), 255, 256, 257, 511, 512, 513, 767, 768, 1023, 1024, 1025, 1099}
    for i, leaf in enumerate(leaves):
        builder.append(leaf)
        assert builder.size == i + 1
        if i + 1 in checked:
            assert builder.root() == _mth(leaves[: i + 1]), i + 1
    other = TreeBuilder()
    other.extend(leaves[:300])
    other.extend(iter(leaves[300:]))
    assert other.root() == builder.root() == merkle.root(leaves)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=8), max_size=600), st.lists(st.integers(0, 600), max_size=4))
def test_tree_builder_matches_reference_however_leaves_are_fed(
    data: list[bytes], cuts: list[int]
) -> None:
    leaves = [_leaf(d) for d in data]
    builder = TreeBuilder()
    start = 0
    for cut in sorted(c for c in cuts if c <= len(leaves)):
        builder.extend(leaves[start:cut])
        assert builder.root() == _mth(leaves[:cut])
        start = cut
    for leaf in leaves[start:]:
        builder.append(leaf)
    assert builder.root() == _mth(leaves)


# -- round trips and mutations, all sizes up to MAX_SIZE -------------------------


def test_every_inclusion_proof_round_trips_and_every_mutation_is_rejected() -> None:
    for size in range(1, MAX_SIZE + 1):
        for index in range(size):
            leaf, root = LEAVES[index], ROOTS[size]
            proof = inclusion_proof(LEAVES, index, size)
            assert len(proof) == len(_inclusion_shape(index, size) or ())
            assert verify_inclusion(leaf, index, size, proof, root)
            for i, p in enumerate(proof):
                for pos in range(32):
                    bad = [*proof[:i], _flip(p, pos), *proof[i + 1 :]]
                    assert not verify_inclusion(leaf, index, size, bad, root)
            for pos in range(32):
                assert not verify_inclusion(_flip(leaf, pos), index, size, proof, root)
                assert not verify_inclusion(leaf, index, size, proof, _flip(root, pos))
            # A size is not committed in the root (the signed checkpoint binds
            # them), so a changed index or size is rejected exactly when it
            # changes the shape of the path RFC 6962 defines.
            for bit in range(7):
                for i2, s2 in ((index ^ (1 << bit), size), (index, size ^ (1 << bit))):
                    same = _inclusion_shape(i2, s2) == _inclusion_shape(index, size)
                    assert verify_inclusion(leaf, i2, s2, proof, root) == same, (
                        index,
                        size,
                        i2,
                        s2,
                    )
            for i2, s2 in (
                (index - 1, size),
                (index + 1, size),
                (index, size - 1),
                (index, size + 1),
            ):
                same = _inclusion_shape(i2, s2) == _inclusion_shape(index, size)
                assert verify_inclusion(leaf, i2, s2, proof, root) == same
            for bad in _structural_mutations(proof, root):
                assert not verify_inclusion(leaf, index, size, bad, root)


def _structural_mutations(proof: list[bytes], root: bytes) -> list[list[bytes]]:
    """Proofs with a node added, dropped, swapped or of the wrong length (transparency-dev's probes)."""
    out = [
        [*proof, root],
        [root, *proof],
        [*proof, b""],
        [b"", *proof],
        [*proof, EMPTY_ROOT],
        [*proof, b"\x00" * 32],
    ]
    if proof:
        out += [proof[:-1], proof[1:], [*proof, proof[-1]], [proof[0], *proof]]
        out += [[*proof[:-1], proof[-1] + b"\x00"], [*proof[:-1], proof[-1][:31]]]
    if len(proof) > 1:
        out += [
            [proof[1], proof[0], *proof[2:]],
            [proof[0], hashlib.sha256(b"x").digest(), *proof[1:]],
        ]
    return [p for p in out if p != proof]


def test_every_consistency_proof_round_trips_and_every_mutation_is_rejected() -> None:
    for size2 in range(0, MAX_SIZE + 1):
        for size1 in range(0, size2 + 1):
            root1, root2 = ROOTS[size1], ROOTS[size2]
            proof = consistency_proof(LEAVES, size1, size2)
            assert verify_consistency(size1, size2, root1, root2, proof)
            for i, p in enumerate(proof):
                for pos in range(32):
                    bad = [*proof[:i], _flip(p, pos), *proof[i + 1 :]]
                    assert not verify_consistency(size1, size2, root1, root2, bad)
            for pos in range(32):
                assert not verify_consistency(size1, size2, _flip(root1, pos), root2, proof)
                # Every tree extends the empty one: root2 is free only then.
                accepted = verify_consistency(size1, size2, root1, _flip(root2, pos), proof)
                assert accepted == (size1 == 0 and size2 > 0)
            if root1 != root2:
                assert not verify_consistency(size1, size2, root2, root1, proof)
            shape = _consistency_shape(size1, size2)
            mutated = {
                (size1 - 1, size2),
                (size1 + 1, size2),
                (size1, size2 - 1),
                (size1, size2 + 1),
            }
            for bit in range(7):
                mutated |= {(size1 ^ (1 << bit), size2), (size1, size2 ^ (1 << bit))}
            for s1, s2 in mutated:
                if not 0 <= s1 <= s2:
                    want = False
                elif s1 == s2:  # the same tree: nothing to prove, roots must agree
                    want = not proof and root1 == root2
                elif s1 == 0:  # every tree extends the empty one
                    want = not proof and root1 == EMPTY_ROOT
                else:
                    want = _consistency_shape(s1, s2) == shape
                got = verify_consistency(s1, s2, root1, root2, proof)
                assert got == want, (size1, size2, s1, s2)
            for bad in _structural_mutations(proof, root1) + _structural_mutations(proof, root2):
                assert not verify_consistency(size1, size2, root1, root2, bad)
            if proof:
                assert not verify_consistency(size1, size2, root1, root2, [])


# -- property tests ------------------------------------------------------------


@st.composite
def _tree_and_index(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    leaves = [
        _leaf(d)
        for d in draw(st.lists(st.binary(max_size=6), min_size=1, max_size=300, unique=True))
    ]
    size = draw(st.integers(1, len(leaves)))
    return leaves, draw(st.integers(0, size - 1)), size


@settings(max_examples=150, deadline=None)
@given(_tree_and_index(), st.integers(0, 1 << 16))
def test_inclusion_random_trees_and_random_bit_flips(
    case: tuple[list[bytes], int, int], flip: int
) -> None:
    leaves, index, size = case
    root = _mth(leaves[:size])
    proof = inclusion_proof(leaves, index, size)
    assert verify_inclusion(leaves[index], index, size, proof, root)
    blob = b"".join([leaves[index], root, *proof])
    bit = flip % (len(blob) * 8)
    bad = bytearray(blob)
    bad[bit // 8] ^= 1 << (bit % 8)
    parts = [bytes(bad[i : i + 32]) for i in range(0, len(bad), 32)]
    assert not verify_inclusion(parts[0], index, size, parts[2:], parts[1])
    # Another leaf of the same tree (a different leaf hash) is not included there.
    if size > 1:
        other = (index + 1) % size
        assert not verify_inclusion(leaves[other], index, size, proof, root)


@settings(max_examples=150, deadline=None)
@given(_tree_and_index(), st.integers(0, 300), st.integers(0, 1 << 16))
def test_consistency_random_trees_and_random_bit_flips(
    case: tuple[list[bytes], int, int], extra: int, flip: int
) -> None:
    leaves, _, size2 = case
    size1 = extra % (size2 + 1)
    root1, root2 = _mth(leaves[:size1]), _mth(leaves[:size2])
    proof = consistency_proof(leaves, size1, size2)
    assert verify_consistency(size1, size2, root1, root2, proof)
    if not proof:
        return
    blob = b"".join([root1, root2, *proof])
    bit = flip % (len(blob) * 8)
    bad = bytearray(blob)
    bad[bit // 8] ^= 1 << (bit % 8)
    parts = [bytes(bad[i : i + 32]) for i in range(0, len(bad), 32)]
    assert not verify_consistency(size1, size2, parts[0], parts[1], parts[2:])
    # A rewritten history (one old leaf changed) is not consistent with root2.
    forked = list(leaves[:size2])
    forked[size1 - 1] = _leaf(b"rewritten")
    assert not verify_consistency(size1, size2, _mth(forked[:size1]), root2, proof)


# -- malformed input -----------------------------------------------------------


def test_verifiers_reject_malformed_arguments() -> None:
    leaf, root = LEAVES[0], ROOTS[1]
    assert verify_inclusion(leaf, 0, 1, [], root)
    for index, size in ((-1, 1), (0, 0), (1, 1), (0, -1), (True, 2)):
        assert not verify_inclusion(leaf, index, size, [], root)
    assert not verify_inclusion(leaf[:31], 0, 1, [], root[:31])
    assert not verify_inclusion(leaf, 0, 1, [], root + b"\x00")
    assert not verify_consistency(2, 1, ROOTS[2], ROOTS[1], [])
    assert not verify_consistency(-1, 1, ROOTS[0], ROOTS[1], [])
    assert not verify_consistency(0, 0, b"", b"", [])
    assert verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    assert not verify_consistency(0, 5, ROOTS[1], ROOTS[5], [])  # not the empty tree's root
    assert not verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [ROOTS[5]])
    assert not verify_consistency(3, 3, ROOTS[3], ROOTS[3], [ROOTS[3]])
    assert not verify_consistency(3, 5, ROOTS[3], ROOTS[5], [])


def test_proof_builders_refuse_impossible_requests() -> None:
    with pytest.raises(ValueError, match="not in a tree"):
        inclusion_proof(LEAVES, 5, 5)
    with pytest.raises(ValueError, match="exceeds"):
        inclusion_proof(LEAVES[:3], 0, 4)
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_proof(LEAVES, 5, 4)
    with pytest.raises(ValueError, match="not 32 bytes"):
        consistency_proof([b"short", *LEAVES], 1, 3)
