"""RFC 9162 Merkle tree math as pure functions: hashing, proof generation and verification.

Proof generation takes a `PerfectHash` callback, `perfect(level, index)`, returning the hash of the
perfect subtree over leaves `[index << level, (index + 1) << level)`. A store that keeps those
hashes as it appends builds any proof with O(log n) look-ups; `inclusion_proof` and
`consistency_proof` wrap the same code for an in-memory list of leaf hashes. Verification needs
nothing but the proof, so a third party can check it offline.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence

from ledger.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

PerfectHash = Callable[[int, int], bytes]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from ever passing as an interior node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2): where RFC 9162 splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(start: int, end: int, perfect: PerfectHash) -> bytes:
    """MTH(D[start:end]) for a range that occurs in RFC 9162's recursion (start aligned).

    Such a range is a run of perfect subtrees of decreasing size, folded from the right.
    """
    if end <= start:
        raise ValueError(f"empty range [{start}, {end})")
    parts: list[bytes] = []
    pos = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            parts.append(perfect(level, pos >> level))
            pos += 1 << level
    digest = parts.pop()
    while parts:
        digest = node_hash(parts.pop(), digest)
    return digest


def inclusion_proof_from(index: int, size: int, perfect: PerfectHash) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            proof.append(range_hash(start, start + k, perfect))
            start += k
    proof.reverse()
    return proof


def consistency_proof_from(size1: int, size2: int, perfect: PerfectHash) -> list[bytes]:
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1, deepest node first."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    proof: list[bytes] = []
    start, end, m, complete = 0, size2, size1, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            proof.append(range_hash(start + k, end, perfect))
            end = start + k
        else:
            proof.append(range_hash(start, start + k, perfect))
            start, m, complete = start + k, m - k, False
    if not complete:
        proof.append(range_hash(start, end, perfect))
    proof.reverse()
    return proof


class _Levels:
    """Every perfect subtree hash over an in-memory list of leaf hashes."""

    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        self.levels = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            below = self.levels[-1]
            self.levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def __call__(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH over the leaves whose hashes are given; EMPTY_ROOT for none."""
    return range_hash(0, len(hashes), _Levels(hashes)) if hashes else EMPTY_ROOT


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Inclusion proof of leaf `index` in the tree over `leaf_hashes`."""
    return inclusion_proof_from(index, len(leaf_hashes), _Levels(leaf_hashes))


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Consistency proof from the tree's first `size1` leaves to all of `leaf_hashes`."""
    return consistency_proof_from(size1, len(leaf_hashes), _Levels(leaf_hashes))


class Frontier:
    """The right edge of a growing tree: its perfect subtrees' hashes, largest first.

    Enough to append leaves and compute the root in O(log n) memory; `append` reports the
    perfect subtrees each new leaf completes, so a store can keep them for proofs.
    """

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a tree of size {size} has {size.bit_count()} edge subtrees, not {len(hashes)}")
        self.size = size
        self.hashes = list(hashes)

    @classmethod
    def at(cls, size: int, perfect: PerfectHash) -> Frontier:
        """The frontier of the first `size` leaves of a tree whose subtrees `perfect` returns."""
        hashes, pos = [], 0
        for level in range(size.bit_length() - 1, -1, -1):
            if size >> level & 1:
                hashes.append(perfect(level, pos >> level))
                pos += 1 << level
        return cls(size, hashes)

    def copy(self) -> Frontier:
        return Frontier(self.size, self.hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; returns the (level, index, hash) of every subtree it completes."""
        index, level, digest, completed = self.size, 0, leaf, []
        while index & 1:
            digest = node_hash(self.hashes.pop(), digest)
            level, index = level + 1, index >> 1
            completed.append((level, index, digest))
        self.hashes.append(digest)
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        digest = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            digest = node_hash(left, digest)
        return digest


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError(f"{what}[{i}] is not a {HASH_SIZE}-byte hash")


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """Check that `leaf` (a leaf hash) is leaf `index` of the tree of `size` with `root`.

    RFC 9162 §2.1.3.2; raises ProofError unless the proof has exactly the right length and
    recomputes the root.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hashes("leaf hash", [leaf])
    _check_hashes("proof", proof)
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if not _equal(r, root):
        raise ProofError("inclusion proof does not lead to the expected root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Check that the tree of `size1` with `root1` is a prefix of the one of `size2` with `root2`.

    RFC 9162 §2.1.4.2; a tree of size 0 has nothing to prove, so size1 = 0 is an error, and
    equal sizes need an empty proof and equal roots.
    """
    if size1 > size2:
        raise ProofError(f"first tree size {size1} exceeds second tree size {size2}")
    if size1 <= 0:
        raise ProofError("no consistency proof exists from an empty tree")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if not _equal(root1, root2):
            raise ProofError("trees of equal size have different roots")
        return
    if not proof:
        raise ProofError("consistency proof is empty")
    _check_hashes("proof", proof)
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the trees are deep")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than the trees are deep")
    if not _equal(fr, root1):
        raise ProofError("consistency proof does not lead to the first root")
    if not _equal(sr, root2):
        raise ProofError("consistency proof does not lead to the second root")
