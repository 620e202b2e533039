"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and proof verification.

Hashing (RFC 6962 §2.1): leaf hash = SHA-256(0x00 || data), interior node =
SHA-256(0x01 || left || right), the empty tree's root = SHA-256(""). The audit
log's records are the leaves (see audit.record: a record's hash is this leaf
hash), so the hash chain and the tree share one leaf hash.

The proof builders follow RFC 6962 §2.1.1 (PATH) and §2.1.2 (PROOF) and take
the leaf hashes the server holds. The verifiers are RFC 9162 §2.1.3.2 and
§2.1.4.2 step by step: they are what auditors run, so they reject malformed
input (negative or out-of-range sizes, hashes that are not 32 bytes) instead
of guessing.

A tree size is not committed inside a root: a proof checked against a root is
only as good as the binding of that root to its size, which the signed
checkpoint (audit.checkpoint) provides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
# Leaves are buffered and hashed one perfect subtree at a time: a list
# comprehension per level costs far less interpreter time per node than the
# textbook carry loop, which matters when an auditor replays a million records.
_CHUNK_BITS = 8
_CHUNK = 1 << _CHUNK_BITS


def leaf_hash(data: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(b"\x00" + data).digest()


def _perfect_root(level: list[bytes]) -> bytes:
    """Root of a perfect subtree (len(level) is a power of two, at least 1)."""
    sha = _sha256
    while len(level) > 1:
        level = [
            sha(b"\x01" + a + b).digest() for a, b in zip(level[::2], level[1::2], strict=True)
        ]
    return level[0]


def _decompose(hashes: list[bytes]) -> list[bytes]:
    """Roots of the perfect subtrees that make up `hashes`, largest (leftmost) first."""
    out = []
    start = 0
    n = len(hashes)
    while start < n:
        width = 1 << ((n - start).bit_length() - 1)
        out.append(_perfect_root(hashes[start : start + width]))
        start += width
    return out


def _fold(subtrees: list[bytes]) -> bytes:
    """Root from perfect-subtree roots, left to right: MTH folds them from the right."""
    if not subtrees:
        return EMPTY_ROOT
    acc = subtrees[-1]
    for left in reversed(subtrees[:-1]):
        acc = _sha256(b"\x01" + left + acc).digest()
    return acc


class TreeBuilder:
    """An append-only Merkle tree: O(1) amortized append, root at any size, O(log n) memory."""

    __slots__ = ("_buf", "_chunks", "_stack")

    def __init__(self) -> None:
        # _stack holds the roots of the perfect subtrees (each 2**_CHUNK_BITS
        # leaves or larger) covering the first _chunks * _CHUNK leaves: one per
        # set bit of _chunks, largest first. _buf holds the leaves after them.
        self._stack: list[bytes] = []
        self._chunks = 0
        self._buf: list[bytes] = []

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return (self._chunks << _CHUNK_BITS) + len(self._buf)

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash (32 bytes, already hashed with the 0x00 prefix)."""
        buf = self._buf
        buf.append(leaf)
        if len(buf) == _CHUNK:
            self._push_chunk()

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append leaf hashes in order."""
        buf = self._buf
        for leaf in leaves:
            buf.append(leaf)
            if len(buf) == _CHUNK:
                self._push_chunk()

    def _push_chunk(self) -> None:
        node = _perfect_root(self._buf)
        self._buf.clear()  # in place: extend() holds a reference to this list
        stack = self._stack
        n = self._chunks
        # Binary carry: equal-sized neighbours merge into their parent.
        while n & 1:
            node = _sha256(b"\x01" + stack.pop() + node).digest()
            n >>= 1
        stack.append(node)
        self._chunks += 1

    def root(self) -> bytes:
        """The RFC 6962 root of the leaves appended so far (SHA-256("") when empty)."""
        return _fold(self._stack + _decompose(self._buf))


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """RFC 6962 Merkle tree hash (MTH) over leaf hashes."""
    builder = TreeBuilder()
    builder.extend(leaf_hashes)
    return builder.root()


def _range_root(leaf_hashes: Sequence[bytes], lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi])."""
    return _fold(_decompose([leaf_hashes[i] for i in range(lo, hi)]))


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1): where RFC 6962 splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_leaves(leaf_hashes: Sequence[bytes], size: int) -> None:
    if size > len(leaf_hashes):
        raise ValueError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")
    for i in range(size):
        if len(leaf_hashes[i]) != HASH_SIZE:
            raise ValueError(f"leaf hash {i} is not {HASH_SIZE} bytes")


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, size: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(index, D[0:size]), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is not in a tree of size {size}")
    _check_leaves(leaf_hashes, size)
    proof: list[bytes] = []

    def path(m: int, lo: int, hi: int) -> None:
        n = hi - lo
        if n == 1:
            return
        k = _split(n)
        if m < k:
            path(m, lo, lo + k)
            proof.append(_range_root(leaf_hashes, lo + k, hi))
        else:
            path(m - k, lo + k, hi)
            proof.append(_range_root(leaf_hashes, lo, lo + k))

    path(index, 0, size)
    return proof


def consistency_proof(leaf_hashes: Sequence[bytes], size1: int, size2: int) -> list[bytes]:
    """RFC 6962 §2.1.2 PROOF(size1, D[0:size2]) (empty when size1 is 0 or equals size2)."""
    if not 0 <= size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    _check_leaves(leaf_hashes, size2)
    proof: list[bytes] = []
    if size1 in (0, size2):
        return proof

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                proof.append(_range_root(leaf_hashes, lo, hi))
            return
        k = _split(n)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            proof.append(_range_root(leaf_hashes, lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            proof.append(_range_root(leaf_hashes, lo, lo + k))

    subproof(size1, 0, size2, True)
    return proof


def _hashes_ok(*hashes: bytes) -> bool:
    return all(isinstance(h, bytes) and len(h) == HASH_SIZE for h in hashes)


def _is_size(value: object) -> bool:
    # bool is an int subclass; a True "size" is a caller bug, not a size.
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` show leaf `index` of the size-`size` tree with `root`?"""
    if not (_is_size(index) and _is_size(size)) or index >= size:
        return False  # step 1
    if not _hashes_ok(leaf_hash, root, *proof):
        return False
    fn, sn = index, size - 1  # step 2
    r = leaf_hash  # step 3
    for p in proof:  # step 4
        if sn == 0:
            return False  # 4a
        if fn & 1 or fn == sn:  # 4b
            r = _sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1  # 4c
        sn >>= 1
    return sn == 0 and r == root  # step 5


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the size-`size1` tree with `root1` a prefix of `root2`'s tree?

    RFC 9162 defines the algorithm for 0 < size1 < size2. At the edges: equal
    sizes need equal roots and an empty proof; size1 == 0 needs root1 to be the
    empty tree's root and an empty proof (every tree extends the empty tree).
    """
    if not (_is_size(size1) and _is_size(size2)) or size1 > size2:
        return False
    if not _hashes_ok(root1, root2, *proof):
        return False
    if size1 == size2:
        return not proof and root1 == root2
    if size1 == 0:
        return not proof and root1 == EMPTY_ROOT
    if not proof:
        return False  # step 1
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)  # step 2: size1 is a power of two
    fn, sn = size1 - 1, size2 - 1  # step 3
    while fn & 1:  # step 4
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]  # step 5
    for c in path[1:]:  # step 6
        if sn == 0:
            return False  # 6a
        if fn & 1 or fn == sn:  # 6b
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1  # 6c
        sn >>= 1
    return fr == root1 and sr == root2 and sn == 0  # step 7
